//! Stream benchmarks (not timed tests), against a real `chatd serve` child
//! process so its memory and CPU are its own:
//!
//! - memory per idle WebSocket subscriber: RSS of the replica before and
//!   after 5,000 clients each open a stream on a chat of their own;
//! - fan-out: 1,000 clients stream one chat while it produces 2,000 parts;
//!   events delivered per second and replica CPU per delivered event.
//!
//! ```sh
//! cargo bench -p chatd-replica --bench streams
//! cargo bench -p chatd-replica --bench streams -- memory   # or: fanout
//! ```

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use chatd_shared::{
    api::SendMessage,
    auth_token,
    client::{Client, Transport},
    db::{tokens, users},
    ids::{ChatId, UserId},
    pg_server::free_port,
    status::{ChatStatus, UserRole},
    stream::{Cursor, StreamEvent},
    testing::{TestDb, eventually, wait_for},
};
use futures::StreamExt;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(120);

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(db: &TestDb, mock_settings: &str) -> Server {
    let port = free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("serve")
        .env("CHATD_DATABASE_URL", db.url())
        .env("CHATD_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CHATD_PROVIDER_KIND", "mock")
        .env(
            "CHATD_PROVIDER_BASE_URL",
            format!("mock://?{mock_settings}"),
        )
        .env("CHATD_LOG", "warn")
        .env("CHATD_MAX_RUNNING_CHATS", "64")
        .stdout(Stdio::null())
        .spawn()
        .expect("chatd serve starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the replica to be ready", WAIT, || {
        let request = http.get(format!("{url}/readyz"));
        async move { (request.send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    Server { child, url }
}

/// (resident bytes, CPU seconds) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|f| f.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0);
    (rss_kb * 1024, ticks / 100.0)
}

async fn admin(db: &TestDb) -> (UserId, String) {
    let client = db.pool().get().await.unwrap();
    let user = users::insert(&client, UserId::new_random(), "bench", UserRole::Admin)
        .await
        .unwrap();
    let secret = auth_token::generate();
    tokens::insert(
        &client,
        &tokens::NewApiToken {
            user_id: user.id,
            name: "bench",
            token_hash: &auth_token::hash(&secret),
            prefix: &auth_token::display_prefix(&secret),
            expires_at: None,
        },
    )
    .await
    .unwrap();
    (user.id, secret)
}

async fn memory(subscribers: usize) {
    let db = TestDb::new().await;
    let server = serve(&db, "tokens=8").await;
    let (owner, token) = admin(&db).await;
    let ids: Vec<ChatId> = db
        .pool()
        .get()
        .await
        .unwrap()
        .query(
            "INSERT INTO chats (id, owner_id, status) SELECT gen_random_uuid(), $1, 'waiting' FROM generate_series(1, $2::bigint) RETURNING id",
            &[&owner, &(subscribers as i64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let client = Client::new(&server.url, &token).unwrap();
    // Warm up allocator arenas and caches with a few streams first.
    let mut streams = Vec::new();
    for id in &ids[..50] {
        let mut stream = client
            .stream_chat(*id, Cursor::default(), Transport::WebSocket)
            .await
            .unwrap();
        while !matches!(stream.next().await, Some(Ok(StreamEvent::Queue { .. }))) {}
        streams.push(stream);
    }
    let (before, _) = usage(server.child.id());
    for id in &ids[50..] {
        let mut stream = client
            .stream_chat(*id, Cursor::default(), Transport::WebSocket)
            .await
            .unwrap();
        while !matches!(stream.next().await, Some(Ok(StreamEvent::Queue { .. }))) {}
        streams.push(stream);
    }
    let (after, _) = usage(server.child.id());
    let added = subscribers - 50;
    println!(
        "memory: {subscribers} idle WebSocket subscribers: replica RSS {:.1} MiB -> {:.1} MiB = {:.1} KiB per subscriber (budget <= 64 KiB)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / added as f64 / 1024.0
    );
    drop(streams);
}

async fn fanout(subscribers: usize, parts: usize, token_delay_ms: u64) {
    let db = TestDb::new().await;
    let server = serve(
        &db,
        &format!("tokens={parts}&token_delay_ms={token_delay_ms}"),
    )
    .await;
    let (_, token) = admin(&db).await;
    let client = Client::new(&server.url, &token).unwrap();
    let chat = client
        .create_chat(&Default::default(), None)
        .await
        .unwrap()
        .body
        .id;
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut stream = client
            .stream_chat(chat, Cursor::default(), Transport::WebSocket)
            .await
            .unwrap();
        while !matches!(stream.next().await, Some(Ok(StreamEvent::Queue { .. }))) {}
        readers.push(tokio::spawn(async move {
            // (events, finished): a reader that falls behind is cut off with
            // `reconnect`, which counts as not finished.
            let mut events = 0usize;
            while let Some(Ok(event)) = stream.next().await {
                events += 1;
                if matches!(
                    event,
                    StreamEvent::Status {
                        status: ChatStatus::Waiting,
                        ..
                    }
                ) {
                    return (events, true);
                }
            }
            (events, false)
        }));
    }
    let (_, cpu_before) = usage(server.child.id());
    let started = Instant::now();
    client
        .send_message(
            chat,
            &SendMessage {
                text: Some("go".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let mut delivered = 0usize;
    let mut cut_off = 0usize;
    for reader in readers {
        let (events, finished) = wait_for("every reader to see the turn end", WAIT, reader)
            .await
            .unwrap();
        delivered += events;
        cut_off += usize::from(!finished);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (_, cpu_after) = usage(server.child.id());
    let cpu = cpu_after - cpu_before;
    println!(
        "fan-out: {subscribers} subscribers x {parts} parts ({token_delay_ms} ms apart): {delivered} events delivered in {elapsed:.2} s = {:.0} events/s; replica CPU {cpu:.2} s = {:.2} us per delivered event; {cut_off} readers cut off as slow",
        delivered as f64 / elapsed,
        cpu * 1e6 / delivered as f64
    );
}

#[tokio::main]
async fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    if filter.is_empty() || "memory".contains(&filter) {
        memory(5000).await;
    }
    if filter.is_empty() || "fanout".contains(&filter) {
        fanout(1000, 200, 10).await;
        fanout(1000, 1000, 0).await;
    }
}
