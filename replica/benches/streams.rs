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

mod support;

use chatd_shared::{
    api::SendMessage,
    client::{Client, Transport},
    ids::ChatId,
    status::ChatStatus,
    stream::{Cursor, StreamEvent},
    testing::{TestDb, wait_for},
};
use futures::StreamExt;
use support::{WAIT, admin, serve, usage};
use tokio::time::Instant;

async fn memory(subscribers: usize) {
    let db = TestDb::new().await;
    let server = serve(&db, "tokens=8", &[]).await;
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
        &[],
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
