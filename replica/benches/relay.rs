//! Relay benchmarks (not timed tests) against two `chatd serve` processes on
//! one database: A runs nothing, B runs every chat, so every part a client on
//! A sees crossed the relay.
//!
//! - latency: each chat is streamed by one client on B (same replica) and one
//!   on A (cross-replica); for every part, the added latency is its arrival
//!   on A's stream minus its arrival on B's. Reported over all parts, and
//!   over parts after the fifth of each turn (once A follows the run; the
//!   first parts wait for A to learn, through Postgres, where the chat runs).
//! - throughput: clients on A only; parts per second through A's one
//!   connection to B (A's `chatd_relay_parts_total`), and CPU per part.
//!
//! ```sh
//! cargo bench -p chatd-replica --bench relay
//! cargo bench -p chatd-replica --bench relay -- latency   # or: throughput
//! ```

mod support;

use std::collections::HashMap;

use chatd_shared::{
    api::SendMessage,
    client::{Client, Transport},
    ids::ChatId,
    pg_server::free_port,
    status::ChatStatus,
    stream::{Cursor, StreamEvent},
    testing::{TestDb, metric_sum, wait_for},
};
use futures::StreamExt;
use support::{Server, WAIT, admin, serve, usage};
use tokio::time::Instant;

const SECRET: &str = "bench-relay-secret-0123456789";

/// A (runs nothing) and B (runs everything), relayed.
async fn pair(db: &TestDb, mock_settings: &str) -> (Server, Server) {
    let relay = |running: &str| {
        vec![
            (
                "CHATD_RELAY_ADDR",
                format!("127.0.0.1:{}", free_port().unwrap()),
            ),
            ("CHATD_RELAY_SECRET", SECRET.to_owned()),
            ("CHATD_MAX_RUNNING_CHATS", running.to_owned()),
        ]
    };
    let a = serve(db, mock_settings, &relay("0")).await;
    let b = serve(db, mock_settings, &relay("1000")).await;
    (a, b)
}

async fn create_chats(client: &Client, count: usize) -> Vec<ChatId> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let chat = client.create_chat(&Default::default(), None).await.unwrap();
        ids.push(chat.body.id);
    }
    ids
}

async fn send(client: &Client, id: ChatId) {
    let message = SendMessage {
        text: Some("go".into()),
        ..Default::default()
    };
    client.send_message(id, &message, None).await.unwrap();
}

/// Opens a stream and reads its snapshot.
async fn open(client: &Client, id: ChatId) -> chatd_shared::client::ChatStream {
    let mut stream = client
        .stream_chat(id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();
    while !matches!(stream.next().await, Some(Ok(StreamEvent::Queue { .. }))) {}
    stream
}

/// Reads until the turn ends: when each part arrived, and whether the
/// stream lasted (a client that falls behind is cut off).
async fn arrivals(mut stream: chatd_shared::client::ChatStream) -> (HashMap<u64, Instant>, bool) {
    let mut seen = HashMap::new();
    while let Some(Ok(event)) = stream.next().await {
        match event {
            StreamEvent::Part { seq, .. } => {
                seen.entry(seq).or_insert_with(Instant::now);
            }
            StreamEvent::Status {
                status: ChatStatus::Waiting,
                ..
            } => return (seen, true),
            _ => {}
        }
    }
    (seen, false)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latency(chats: usize, tokens: usize, token_delay_ms: u64) {
    let db = TestDb::new().await;
    let (a, b) = pair(
        &db,
        &format!("tokens={tokens}&token_delay_ms={token_delay_ms}"),
    )
    .await;
    let (_, token) = admin(&db).await;
    let (on_a, on_b) = (
        Client::new(&a.url, &token).unwrap(),
        Client::new(&b.url, &token).unwrap(),
    );
    let ids = create_chats(&on_b, chats).await;
    let mut readers = Vec::new();
    for id in &ids {
        let same = open(&on_b, *id).await;
        let cross = open(&on_a, *id).await;
        readers.push((tokio::spawn(arrivals(same)), tokio::spawn(arrivals(cross))));
    }
    for id in &ids {
        send(&on_b, *id).await;
    }
    let mut all = Vec::new();
    let mut steady = Vec::new();
    let mut missing = 0;
    let mut cut_off = 0;
    for (same, cross) in readers {
        let ((same, same_whole), (cross, cross_whole)) = wait_for("the turns", WAIT, async {
            (same.await.unwrap(), cross.await.unwrap())
        })
        .await;
        cut_off += usize::from(!same_whole) + usize::from(!cross_whole);
        for (seq, at_b) in same {
            let Some(at_a) = cross.get(&seq) else {
                missing += 1;
                continue;
            };
            let added = at_a.saturating_duration_since(at_b).as_secs_f64() * 1e3
                - at_b.saturating_duration_since(*at_a).as_secs_f64() * 1e3;
            all.push(added);
            if seq >= 5 {
                steady.push(added);
            }
        }
    }
    for samples in [&mut all, &mut steady] {
        samples.sort_by(f64::total_cmp);
    }
    println!(
        "latency: {chats} chats x {tokens} parts every {token_delay_ms} ms ({} parts/s), each streamed on B and on A",
        chats as u64 * 1000 / token_delay_ms.max(1)
    );
    for (name, samples) in [("all parts", &all), ("parts >= 5 of a turn", &steady)] {
        println!(
            "  added on A over B, {name}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} parts)",
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            percentile(samples, 0.99),
            percentile(samples, 1.0),
            samples.len()
        );
    }
    println!("  parts seen on B but not on A: {missing}; streams cut off: {cut_off}");
    let relay_latency = relay_latency_mean(&a).await;
    println!(
        "  A's chatd_relay_latency_seconds (frame sent on B -> received on A): mean {relay_latency:.3} ms"
    );
}

/// The mean of A's relay latency histogram, in ms.
async fn relay_latency_mean(replica: &Server) -> f64 {
    let text = metrics(replica).await;
    let sum = metric_sum(&text, "chatd_relay_latency_seconds_sum");
    let count = metric_sum(&text, "chatd_relay_latency_seconds_count");
    sum / count * 1e3
}

async fn metrics(replica: &Server) -> String {
    reqwest::get(format!("{}/metrics", replica.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn throughput(chats: usize, tokens: usize, token_delay_ms: u64) {
    let db = TestDb::new().await;
    let (a, b) = pair(
        &db,
        &format!("tokens={tokens}&token_delay_ms={token_delay_ms}"),
    )
    .await;
    let (_, token) = admin(&db).await;
    let on_a = Client::new(&a.url, &token).unwrap();
    let ids = create_chats(&on_a, chats).await;
    let mut readers = Vec::new();
    for id in &ids {
        readers.push(tokio::spawn(arrivals(open(&on_a, *id).await)));
    }
    let received = |text: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("chatd_relay_parts_total") && l.contains("direction=\"received\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let parts_before = received(&metrics(&a).await);
    let (cpu_a, cpu_b) = (usage(a.child.id()).1, usage(b.child.id()).1);
    let started = Instant::now();
    for id in &ids {
        send(&on_a, *id).await;
    }
    let mut cut_off = 0;
    for reader in readers {
        let (_, whole) = wait_for("the turns", WAIT, reader).await.unwrap();
        cut_off += usize::from(!whole);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let parts = received(&metrics(&a).await) - parts_before;
    let (cpu_a, cpu_b) = (usage(a.child.id()).1 - cpu_a, usage(b.child.id()).1 - cpu_b);
    println!(
        "throughput: {chats} chats x {tokens} parts every {token_delay_ms} ms, clients on A only"
    );
    println!(
        "  {parts:.0} parts over A's one connection to B in {elapsed:.2} s = {:.0} parts/s; CPU per part: A {:.2} us, B {:.2} us (B also runs the turns); streams cut off: {cut_off}",
        parts / elapsed,
        cpu_a / parts * 1e6,
        cpu_b / parts * 1e6,
    );
}

#[tokio::main]
async fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    if filter.is_empty() || "latency".contains(&filter) {
        latency(1, 200, 10).await;
        latency(50, 200, 10).await;
    }
    if filter.is_empty() || "throughput".contains(&filter) {
        throughput(100, 2000, 1).await;
        throughput(20, 5000, 0).await;
    }
}
