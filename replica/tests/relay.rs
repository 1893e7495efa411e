//! The relay as clients see it (ARCHITECTURE.md §7): a client on one replica streams
//! a chat that runs on another and sees every token, in order, exactly once,
//! through lost links, a dead worker, slow peers and departing subscribers.

mod common;

use std::net::SocketAddr;

use chatd_relay::protocol::{FromWorker, ToWorker};
use chatd_replica::server::ReplicaConfig;
use chatd_shared::{
    client::Transport,
    ids::Generation,
    parts::Part,
    status::{ChatStatus, MessageRole},
    stream::{Cursor, StreamEvent},
    testing::{eventually, metric_sum, wait_for},
};
use common::{
    WAIT,
    app::{
        RELAY_SECRET, TestApp, idle_at, idle_chat, message_texts, open_stream, read_until, say,
        send_text,
    },
    proxy::Proxy,
};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

/// Replica 0 ("A") runs nothing, so every chat runs elsewhere. Leases are
/// long: on a loaded test machine a 1 s lease can lapse, and a recovered
/// chat is not what these tests are about.
fn follower_only(index: usize, config: &mut ReplicaConfig) {
    if index == 0 {
        config.runtime.max_running_chats = 0;
    }
    config.runtime.lease_ttl = std::time::Duration::from_secs(10);
    config.runtime.heartbeat_interval = std::time::Duration::from_secs(1);
}

fn words(count: usize) -> String {
    (0..count)
        .map(|n| format!("w{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(generation, seq, text)` of every text part, in arrival order.
fn text_parts(events: &[StreamEvent]) -> Vec<(i64, u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Part {
                generation,
                seq,
                part: Part::TextDelta { text },
                ..
            } => Some((generation.0, *seq, text.clone())),
            _ => None,
        })
        .collect()
}

/// An event in a few words, for failure messages.
fn summary(event: &StreamEvent) -> String {
    match event {
        StreamEvent::Part {
            generation, seq, ..
        } => format!("part {}.{seq}", generation.0),
        StreamEvent::Message { message, .. } => {
            format!("message {} {:?}", message.id.0, message.role)
        }
        StreamEvent::Status {
            status, generation, ..
        } => format!("status {status:?} {}", generation.0),
        other => other.kind().to_owned(),
    }
}

/// Checks one turn's events as a client must see them, whichever replica
/// ran it and however often it was recovered: no part of a run after the
/// `running` of a newer one; the last run's parts with seqs 0, 1, 2, … (no
/// gap, no repeat) spelling `reply`, then the assistant message with that
/// text. Returns the last run's generation.
fn assert_whole_turn(events: &[StreamEvent], reply: &str) -> i64 {
    let chat = events.iter().find_map(|e| match e {
        StreamEvent::Status { chat_id, .. } => Some(*chat_id),
        _ => None,
    });
    let summaries = || events.iter().map(summary).collect::<Vec<_>>();
    let mut newest = 0;
    let mut last_run = None;
    for (index, event) in events.iter().enumerate() {
        match event {
            StreamEvent::Status {
                status: ChatStatus::Running,
                generation,
                ..
            } => {
                newest = newest.max(generation.0);
                last_run = Some(index);
            }
            StreamEvent::Part { generation, .. } => assert!(
                generation.0 >= newest,
                "a part of run {} after the start of run {newest} in {chat:?}: {:?}",
                generation.0,
                summaries()
            ),
            _ => {}
        }
    }
    let start = last_run.unwrap_or_else(|| panic!("no run started in {chat:?}: {:?}", summaries()));
    let parts: Vec<_> = text_parts(&events[start..])
        .into_iter()
        .filter(|(g, _, _)| *g == newest)
        .collect();
    let seqs: Vec<u64> = parts.iter().map(|(_, seq, _)| *seq).collect();
    let in_order = seqs.iter().enumerate().all(|(i, seq)| *seq == i as u64);
    assert!(in_order, "every part once, in order, in {chat:?}: {seqs:?}");
    let text: String = parts.iter().map(|(_, _, t)| t.as_str()).collect();
    assert!(
        text == reply,
        "the parts spell the reply: got {} of {} characters in {chat:?}: {:?}",
        text.len(),
        reply.len(),
        summaries()
    );
    let last_part = events
        .iter()
        .rposition(|e| matches!(e, StreamEvent::Part { generation: g, .. } if g.0 == newest))
        .unwrap();
    let message = events
        .iter()
        .rposition(|e| matches!(e, StreamEvent::Message { message, .. } if message.role == MessageRole::Assistant))
        .expect("the reply's message");
    assert!(last_part < message, "the message follows the parts");
    let last = message_texts(events)
        .into_iter()
        .rfind(|(role, _)| *role == MessageRole::Assistant);
    assert_eq!(last.map(|(_, text)| text).as_deref(), Some(reply));
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_another_replica_streams_every_part_once_in_order() {
    let app = TestApp::start_each(2, follower_only).await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut stream = open_stream(&client, id, Transport::WebSocket).await;
    let reply = words(40);
    send_text(
        &client,
        id,
        say(json!({"text": reply, "token_delay_ms": 20})),
    )
    .await;
    let events = read_until(&mut stream, |e| idle_at(e, 1)).await;
    assert_whole_turn(&events, &reply);
    let a = app.metrics(0).await;
    assert!(metric_sum(&a, "chatd_relay_parts_total") >= 40.0, "{a}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_chats_stream_through_one_connection_to_the_worker() {
    let app = TestApp::start_each(2, follower_only).await;
    let client = app.admin(0);
    let mut chats = Vec::new();
    for _ in 0..200 {
        let id = idle_chat(&client).await;
        let stream = open_stream(&client, id, Transport::WebSocket).await;
        chats.push((id, stream));
    }
    // A model's pace (50 tokens/s), 10,000 parts/s in all.
    let reply = words(20);
    for (id, _) in &chats {
        send_text(
            &client,
            *id,
            say(json!({"text": reply, "token_delay_ms": 20})),
        )
        .await;
    }
    let turns = chats.into_iter().map(|(_, mut stream)| {
        let reply = reply.clone();
        tokio::spawn(async move {
            let events = read_until(&mut stream, |e| idle_at(e, 1)).await;
            assert_whole_turn(&events, &reply);
        })
    });
    for turn in futures::future::join_all(turns).await {
        turn.unwrap();
    }
    let (a, b) = (app.metrics(0).await, app.metrics(1).await);
    assert_eq!(metric_sum(&a, "chatd_relay_peers_connected"), 1.0, "{a}");
    assert_eq!(metric_sum(&b, "chatd_relay_connections_served"), 1.0, "{b}");
    assert_eq!(metric_sum(&a, "chatd_relay_reconnects_total"), 0.0);
    assert!(metric_sum(&a, "chatd_relay_parts_total") >= 200.0 * 20.0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_link_cut_mid_stream_resumes_without_gap_or_repeat() {
    // B's relay is reached through a proxy the test can cut.
    let proxy = Proxy::listen().await;
    let proxy_url = proxy.ws_url();
    let app = TestApp::start_each(2, |index, config| {
        follower_only(index, config);
        if index == 1 {
            config.relay.as_mut().unwrap().advertise_url = Some(proxy_url.clone());
        }
    })
    .await;
    proxy.route_to(app.replicas[1].relay_addr().unwrap());
    let on_a = app.admin(0);
    let on_b = app.admin(1);
    let id = idle_chat(&on_a).await;
    let mut stream = open_stream(&on_a, id, Transport::WebSocket).await;
    // A client on B tells how far the reply got while the link is down.
    let mut local = open_stream(&on_b, id, Transport::WebSocket).await;
    let reply = words(60);
    send_text(&on_a, id, say(json!({"text": reply, "token_delay_ms": 30}))).await;

    let mut events = read_until(
        &mut stream,
        |e| matches!(e, StreamEvent::Part { seq, .. } if *seq >= 10),
    )
    .await;
    proxy.cut();
    eventually("A to notice the lost link", WAIT, || async {
        (metric_sum(&app.metrics(0).await, "chatd_relay_peers_connected") == 0.0).then_some(())
    })
    .await;
    read_until(
        &mut local,
        |e| matches!(e, StreamEvent::Part { seq, .. } if *seq >= 25),
    )
    .await;
    proxy.restore();
    events.extend(read_until(&mut stream, |e| idle_at(e, 1)).await);
    assert_whole_turn(&events, &reply);
    let a = app.metrics(0).await;
    assert!(metric_sum(&a, "chatd_relay_reconnects_total") >= 1.0, "{a}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_recovered_on_another_worker_streams_the_new_run_only() {
    // Short leases: B's chat is recovered within about two seconds.
    let short_lease = |config: &mut ReplicaConfig| {
        config.runtime.lease_ttl = std::time::Duration::from_secs(2);
        config.runtime.heartbeat_interval = std::time::Duration::from_millis(300);
    };
    let mut app = TestApp::start_each(2, |index, config| {
        follower_only(index, config);
        short_lease(config);
    })
    .await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut stream = open_stream(&client, id, Transport::Sse).await;
    let reply = words(50);
    send_text(
        &client,
        id,
        say(json!({"text": reply, "token_delay_ms": 40})),
    )
    .await;
    let mut events = read_until(
        &mut stream,
        |e| matches!(e, StreamEvent::Part { seq, .. } if *seq >= 5),
    )
    .await;

    // C joins, then B dies mid-turn: C recovers the chat and runs it again.
    app.add(short_lease).await;
    app.replicas.remove(1).kill();
    events.extend(read_until(&mut stream, |e| idle_at(e, 2)).await);

    let generation = assert_whole_turn(&events, &reply);
    assert!(generation > 1, "the reply came from a new run");
    assert!(
        text_parts(&events).iter().any(|(g, _, _)| *g == 1),
        "the client saw the first run's parts before B died"
    );
    app.shutdown().await;
}

fn relay_request(
    url: &str,
    authorization: Option<&str>,
) -> tungstenite::handshake::client::Request {
    let mut request = format!("{url}/relay/v1").into_client_request().unwrap();
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

fn status_of(result: Result<impl Sized, tungstenite::Error>) -> Option<u16> {
    match result {
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_a_missing_or_wrong_secret() {
    let app = TestApp::start(1, |_| {}).await;
    let url = app.replicas[0].relay_url().unwrap().to_owned();
    let missing = tokio_tungstenite::connect_async(relay_request(&url, None)).await;
    assert_eq!(status_of(missing), Some(401));
    let wrong = tokio_tungstenite::connect_async(relay_request(
        &url,
        Some("Bearer not-the-secret-0123456789"),
    ))
    .await;
    assert_eq!(status_of(wrong), Some(401));
    let bare = tokio_tungstenite::connect_async(relay_request(&url, Some(RELAY_SECRET))).await;
    assert_eq!(
        status_of(bare),
        Some(401),
        "the secret must be a bearer token"
    );
    let right = tokio_tungstenite::connect_async(relay_request(
        &url,
        Some(&format!("Bearer {RELAY_SECRET}")),
    ))
    .await;
    assert_eq!(status_of(right), None, "the right secret is let in");
    let text = app.metrics(0).await;
    assert_eq!(
        metric_sum(&text, "chatd_relay_rejected_total"),
        3.0,
        "{text}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_slows_neither_the_worker_nor_other_chats() {
    let app = TestApp::start_each(2, follower_only).await;
    let client = app.admin(0);
    let flood = idle_chat(&client).await;
    let other = idle_chat(&client).await;

    // A peer subscribes to the flood chat on B and never reads again.
    let url = app.replicas[1].relay_url().unwrap().to_owned();
    let (mut stuck, _) = tokio_tungstenite::connect_async(relay_request(
        &url,
        Some(&format!("Bearer {RELAY_SECRET}")),
    ))
    .await
    .unwrap();
    let sub = ToWorker::Sub {
        chat_id: flood,
        generation: Generation(1),
        after_seq: None,
    };
    stuck
        .send(Message::Text(serde_json::to_string(&sub).unwrap().into()))
        .await
        .unwrap();

    let mut watched = open_stream(&client, other, Transport::WebSocket).await;
    send_text(&client, flood, say(json!({"tokens": 200000}))).await;
    let reply = words(40);
    send_text(
        &client,
        other,
        say(json!({"text": reply, "token_delay_ms": 10})),
    )
    .await;

    // The other chat streams whole through A's own connection to B.
    let events = read_until(&mut watched, |e| idle_at(e, 1)).await;
    assert_whole_turn(&events, &reply);
    // The worker finishes the flood without waiting for the stuck peer.
    eventually("the flood's turn to end", WAIT, || async {
        (client.get_chat(flood).await.ok()?.status == ChatStatus::Waiting).then_some(())
    })
    .await;

    // The stuck peer, reading at last, is told its share overflowed.
    let mut last_seq = None;
    let overflowed = async {
        while let Some(Ok(message)) = stuck.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            match serde_json::from_str(&text).unwrap() {
                FromWorker::Parts { parts, .. } => last_seq = parts.last().map(|p| p.seq),
                FromWorker::Overflow { chat_id } => return chat_id,
                _ => {}
            }
        }
        panic!("the relay closed without an overflow");
    };
    assert_eq!(wait_for("an overflow frame", WAIT, overflowed).await, flood);
    // Subscribing again from there: the run is over, and the worker says so.
    let again = ToWorker::Sub {
        chat_id: flood,
        generation: Generation(1),
        after_seq: last_seq,
    };
    stuck
        .send(Message::Text(serde_json::to_string(&again).unwrap().into()))
        .await
        .unwrap();
    // The chat's status is stored before the worker's hub hears of the
    // commit and lets go of the run: a sub in between still finds the run
    // and first hears its buffered parts and what it committed, then its
    // end.
    let answer = async {
        loop {
            match stuck.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text).unwrap() {
                    FromWorker::Committed { chat_id, .. } | FromWorker::Parts { chat_id, .. }
                        if chat_id == flood =>
                    {
                        continue;
                    }
                    answer => return answer,
                },
                Some(Ok(_)) => continue,
                other => panic!("the relay closed: {other:?}"),
            }
        }
    };
    let answer = wait_for("the answer to a new sub", WAIT, answer).await;
    assert!(
        matches!(
            answer,
            FromWorker::End {
                chat_id,
                reason: chatd_relay::protocol::EndReason::Released,
                ..
            } if chat_id == flood
        ),
        "{answer:?}"
    );
    let b = app.metrics(1).await;
    assert!(metric_sum(&b, "chatd_relay_overflows_total") >= 1.0, "{b}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_subscriber_leaving_unsubscribes_from_the_worker() {
    let app = TestApp::start_each(2, follower_only).await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut stream = client
        .stream_chat(id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();
    let mut second = client
        .stream_chat(id, Cursor::default(), Transport::Sse)
        .await
        .unwrap();
    read_until(&mut stream, |e| matches!(e, StreamEvent::Queue { .. })).await;
    read_until(&mut second, |e| matches!(e, StreamEvent::Queue { .. })).await;
    send_text(
        &client,
        id,
        say(json!({"text": words(200), "token_delay_ms": 30})),
    )
    .await;
    read_until(&mut stream, |e| matches!(e, StreamEvent::Part { .. })).await;
    read_until(&mut second, |e| matches!(e, StreamEvent::Part { .. })).await;
    let worker = app.replicas[1].hub().clone();
    assert_eq!(worker.subscriber_count(id), 1, "A watches the run on B");

    // One of two leaving changes nothing; the last one ends the subscription.
    drop(second);
    read_until(
        &mut stream,
        |e| matches!(e, StreamEvent::Part { seq, .. } if *seq >= 10),
    )
    .await;
    assert_eq!(worker.subscriber_count(id), 1);
    drop(stream);
    eventually("B to stop serving the chat to A", WAIT, || {
        let count = worker.subscriber_count(id);
        async move { (count == 0).then_some(()) }
    })
    .await;
    assert_eq!(
        metric_sum(&app.metrics(0).await, "chatd_relay_subscriptions"),
        0.0
    );
    assert_eq!(
        client.get_chat(id).await.unwrap().status,
        ChatStatus::Running,
        "the run goes on"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_a_secret_may_only_listen_on_loopback() {
    let db = chatd_shared::testing::TestDb::new().await;
    let mut config = common::app::replica_config(&db);
    let relay = config.relay.as_mut().unwrap();
    relay.server.secret = None;
    relay.addr = SocketAddr::from(([0, 0, 0, 0], 0));
    let refused = chatd_replica::server::Replica::start(config.clone()).await;
    let message = format!("{:#}", refused.err().expect("refused"));
    assert!(message.contains("CHATD_RELAY_SECRET"), "{message}");
    config.relay.as_mut().unwrap().insecure = true;
    let allowed = chatd_replica::server::Replica::start(config).await.unwrap();
    allowed.shutdown().await;
}
