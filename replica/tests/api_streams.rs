//! Chat streams through the public API: resuming with cursors, durable
//! events on a replica that does not run the chat, slow consumers, the
//! chat-list stream.

mod common;

use std::collections::HashSet;

use chatd_shared::{
    api::{CreateChat, UpdateChat, WatchEvent, WatchKind},
    client::{Client, Transport},
    ids::{ChatId, MessageId},
    parts::Part,
    pubsub::ChatEvent,
    status::{ChatStatus, MessageRole},
    stream::{Cursor, StreamEvent},
    testing::{eventually, wait_for},
};
use common::{
    WAIT,
    app::{TestApp, idle_at, idle_chat, is_running, open_stream, read_until, say, send_text},
};
use futures::StreamExt;
use serde_json::json;

fn parts(events: &[StreamEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Part {
                seq,
                part: Part::TextDelta { text },
                ..
            } => Some((*seq, text.clone())),
            _ => None,
        })
        .collect()
}

fn message_ids(events: &[StreamEvent]) -> Vec<MessageId> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Message { message, .. } => Some(message.id),
            _ => None,
        })
        .collect()
}

async fn resume_without_gap_or_repeat(transport: Transport) {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let words: Vec<String> = (0..40).map(|n| format!("w{n}")).collect();
    let reply = words.join(" ");
    let mut first = open_stream(&client, id, transport).await;
    // A second watcher tells us how far the reply got while the first is away.
    let mut watcher = client
        .stream_chat(id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();
    send_text(
        &client,
        id,
        say(json!({"text": reply, "token_delay_ms": 40})),
    )
    .await;

    let mut seen = read_until(
        &mut first,
        |e| matches!(e, StreamEvent::Part { seq, .. } if *seq >= 5),
    )
    .await;
    let cursor = first.cursor();
    drop(first);
    read_until(
        &mut watcher,
        |e| matches!(e, StreamEvent::Part { seq, .. } if *seq >= 15),
    )
    .await;

    let mut second = client.stream_chat(id, cursor, transport).await.unwrap();
    seen.extend(read_until(&mut second, |e| idle_at(e, 1)).await);

    let parts = parts(&seen);
    let seqs: Vec<u64> = parts.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs.len(),
        seqs.iter().collect::<HashSet<_>>().len(),
        "no part twice: {seqs:?}"
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let text: String = parts.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(text, reply, "no part missing");
    let ids = message_ids(&seen);
    assert_eq!(
        ids.len(),
        2,
        "user and assistant message, once each: {ids:?}"
    );
    assert!(ids[0] < ids[1]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_resumed_with_its_cursor_misses_and_repeats_nothing() {
    resume_without_gap_or_repeat(Transport::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_resumed_with_last_event_id_misses_and_repeats_nothing() {
    resume_without_gap_or_repeat(Transport::Sse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_after_the_turn_gets_the_message_not_stale_parts() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut first = open_stream(&client, id, Transport::Sse).await;
    send_text(
        &client,
        id,
        say(json!({"text": "a b c d e f g h", "token_delay_ms": 30})),
    )
    .await;
    read_until(&mut first, |e| matches!(e, StreamEvent::Part { .. })).await;
    let cursor = first.cursor();
    drop(first);
    eventually("the turn to end", WAIT, || async {
        (client.get_chat(id).await.ok()?.status == ChatStatus::Waiting).then_some(())
    })
    .await;
    let mut second = client
        .stream_chat(id, cursor, Transport::Sse)
        .await
        .unwrap();
    let events = read_until(&mut second, |e| matches!(e, StreamEvent::Queue { .. })).await;
    assert!(
        parts(&events).is_empty(),
        "the committed message superseded the parts: {events:#?}"
    );
    let messages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Message { message, .. } => Some(message.role),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [MessageRole::Assistant],
        "only what the cursor had not seen"
    );
    assert!(matches!(
        events[0],
        StreamEvent::Status {
            status: ChatStatus::Waiting,
            ..
        }
    ));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_reaches_a_local_subscriber_before_any_part_without_notifications() {
    // ARCHITECTURE.md §16, invariant 1, for the subscriber on the worker: with no
    // notification published, `running` can only come from the hub, ahead
    // of the run's parts.
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut stream = open_stream(&client, id, Transport::WebSocket).await;
    app.replicas[0].pubsub().set_publishing(false);
    // The chat is claimed by the poll, since the wake is not published.
    send_text(&client, id, say(json!({"tokens": 20}))).await;
    let events = read_until(&mut stream, |e| matches!(e, StreamEvent::Part { .. })).await;
    let running = events.iter().position(is_running);
    assert!(
        running.is_some_and(|at| at + 1 < events.len()),
        "running before the first part: {events:#?}"
    );
    app.replicas[0].pubsub().set_publishing(true);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_notices_arriving_out_of_order_still_deliver_every_message_in_id_order() {
    // ARCHITECTURE.md §16, invariant 3: two writers commit messages 1 and 2, and
    // their notices arrive the wrong way round.
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut stream = open_stream(&client, id, Transport::WebSocket).await;
    let db = app.db.pool().get().await.unwrap();
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let content = json!([{"type": "text", "text": text}]);
        let row = db
            .query_one(
                "INSERT INTO chat_messages (chat_id, role, content) VALUES ($1, 'user', $2) RETURNING id",
                &[&id, &content],
            )
            .await
            .unwrap();
        ids.push(row.get::<_, MessageId>(0));
    }
    let (first, second) = (ids[0], ids[1]);
    let pubsub = app.replicas[0].pubsub();
    pubsub
        .publish_chat(
            id,
            ChatEvent::Message {
                after_id: first,
                last_id: second,
            },
        )
        .unwrap();
    pubsub
        .publish_chat(
            id,
            ChatEvent::Message {
                after_id: MessageId(first.0 - 1),
                last_id: first,
            },
        )
        .unwrap();
    let events = read_until(
        &mut stream,
        |e| matches!(e, StreamEvent::Message { message, .. } if message.id == second),
    )
    .await;
    assert_eq!(message_ids(&events), ids, "{events:#?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_run_the_chat_streams_every_durable_event_in_order() {
    // Replica 1 never runs anything: the chat runs on replica 0.
    let app = TestApp::start(2, |_| {}).await;
    let app = {
        let mut app = app;
        let db = &app.db;
        let mut config = common::app::replica_config(db);
        config.runtime.max_running_chats = 0;
        let idle = chatd_replica::server::Replica::start(config).await.unwrap();
        let busy = app.replicas.remove(1);
        busy.shutdown().await;
        app.replicas.push(idle);
        app
    };
    let runner = app.admin(0);
    let watcher = app.admin(1);
    let id = idle_chat(&runner).await;
    let mut stream = open_stream(&watcher, id, Transport::WebSocket).await;
    for turn in 1..=2 {
        send_text(
            &runner,
            id,
            say(json!({"steps": [
                {"tool_calls": [{"name": "current_time", "args": {}}]},
                {"text": format!("answer {turn}")}
            ]})),
        )
        .await;
        let events = read_until(&mut stream, |e| idle_at(e, turn)).await;
        let statuses: Vec<ChatStatus> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Status { status, .. } => Some(*status),
                _ => None,
            })
            .collect();
        assert_eq!(statuses.last(), Some(&ChatStatus::Waiting));
        assert!(statuses.contains(&ChatStatus::Running), "{statuses:?}");
        let roles: Vec<MessageRole> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Message { message, .. } => Some(message.role),
                _ => None,
            })
            .collect();
        use MessageRole::{Assistant, Tool, User};
        assert_eq!(
            roles,
            [User, Assistant, Tool, Assistant],
            "every message once, in id order"
        );
        let ids = message_ids(&events);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let running = events.iter().position(is_running).unwrap();
        let waiting = events
            .iter()
            .rposition(|e| {
                matches!(
                    e,
                    StreamEvent::Status {
                        status: ChatStatus::Waiting,
                        ..
                    }
                )
            })
            .unwrap();
        assert!(running < waiting);
    }
    app.shutdown().await;
}

/// Reads a stream to its end (or a reconnect), then resumes from its cursor,
/// until `done`; returns every event and how many reconnects were asked for.
async fn read_resuming(
    client: &Client,
    id: ChatId,
    transport: Transport,
    mut done: impl FnMut(&StreamEvent) -> bool,
) -> (Vec<StreamEvent>, usize) {
    let mut events = Vec::new();
    let mut reconnects = 0;
    let mut cursor = Cursor::default();
    let read = async {
        loop {
            let mut stream = client.stream_chat(id, cursor, transport).await.unwrap();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { break };
                if matches!(event, StreamEvent::Reconnect { .. }) {
                    reconnects += 1;
                }
                let stop = done(&event);
                events.push(event);
                if stop {
                    return;
                }
            }
            cursor = stream.cursor();
        }
    };
    wait_for("the stream to get there", WAIT, read).await;
    (events, reconnects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_told_to_reconnect_and_loses_nothing() {
    let app = TestApp::start(1, |config| config.api.subscriber_queue = 64).await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut slow = open_stream(&client, id, Transport::WebSocket).await;

    // A burst far larger than the socket buffers, with no pause between parts.
    send_text(&client, id, say(json!({"tokens": 200000}))).await;
    // The worker is not held back by a client that does not read.
    eventually("the turn to end", WAIT, || async {
        (client.get_chat(id).await.ok()?.status == ChatStatus::Waiting).then_some(())
    })
    .await;

    // The slow client was cut off, and says why as its last word.
    let mut events = Vec::new();
    let ended = async {
        while let Some(event) = slow.next().await {
            let Ok(event) = event else { break };
            events.push(event);
        }
    };
    wait_for("the slow stream to end", WAIT, ended).await;
    assert!(
        matches!(events.last(), Some(StreamEvent::Reconnect { reason, .. }) if reason == "slow_consumer"),
        "the last event tells it why: {:?}",
        events.last()
    );
    // Resuming from its cursor gets the rest: the committed reply, once.
    let mut resumed = client
        .stream_chat(id, slow.cursor(), Transport::WebSocket)
        .await
        .unwrap();
    let rest = read_until(&mut resumed, |e| matches!(e, StreamEvent::Queue { .. })).await;
    let all: Vec<MessageId> = message_ids(&events)
        .into_iter()
        .chain(message_ids(&rest))
        .collect();
    assert_eq!(all.len(), 2, "user message and reply, once each: {all:?}");
    assert!(all[0] < all[1]);

    // Another client reading the same chat now gets it whole.
    let (fresh, reconnects) = read_resuming(&client, id, Transport::Sse, |e| {
        matches!(e, StreamEvent::Queue { .. })
    })
    .await;
    assert_eq!((message_ids(&fresh), reconnects), (all, 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_stream_shows_the_callers_chats_only() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, alice_token) = app.user("alice").await;
    let (_, bob_token) = app.user("bob").await;
    let alice = app.client(0, &alice_token);
    let bob = app.client(0, &bob_token);
    let mut watch = alice.watch(Transport::WebSocket).await.unwrap();
    let mut bobs = bob.watch(Transport::Sse).await.unwrap();

    // Titled, so no generated title event comes between the ones below.
    let id = alice
        .create_chat(
            &CreateChat {
                text: Some(say(json!({"text": "hi"}))),
                title: Some("Hello".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap()
        .body
        .id;
    bob.create_chat(&CreateChat::default(), None).await.unwrap();
    let mut seen = Vec::new();
    let collect = async {
        while let Some(Ok(event)) = watch.next().await {
            let done = matches!(&event, WatchEvent::Chat { kind: WatchKind::Status, chat } if chat.status == ChatStatus::Waiting);
            seen.push(event);
            if done {
                return;
            }
        }
    };
    wait_for("alice's chat to finish", WAIT, collect).await;
    assert!(
        matches!(&seen[0], WatchEvent::Chat { kind: WatchKind::Created, chat } if chat.id == id)
    );
    assert!(
        seen.iter()
            .all(|e| matches!(e, WatchEvent::Chat { chat, .. } if chat.id == id)),
        "only alice's chat: {seen:?}"
    );

    alice
        .update_chat(
            id,
            &UpdateChat {
                title: Some("Renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let event = next_besides_status(&mut watch).await;
    assert!(
        matches!(&event, WatchEvent::Chat { kind: WatchKind::Title, chat } if chat.title == "Renamed"),
        "{event:?}"
    );
    alice
        .update_chat(
            id,
            &UpdateChat {
                archived: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let event = next_besides_status(&mut watch).await;
    assert!(
        matches!(&event, WatchEvent::Chat { kind: WatchKind::Archived, chat } if chat.archived),
        "{event:?}"
    );
    alice.delete_chat(id).await.unwrap();
    let event = next_besides_status(&mut watch).await;
    assert!(
        matches!(&event, WatchEvent::Deleted { chat_id } if *chat_id == id),
        "{event:?}"
    );
    // Bob saw his own chat only.
    let first = wait_for("bob's event", WAIT, bobs.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchEvent::Chat { kind: WatchKind::Created, chat } if chat.id != id));
    app.shutdown().await;
}

/// The next watch event that is not a status change.
async fn next_besides_status(watch: &mut chatd_shared::client::WatchStream) -> WatchEvent {
    loop {
        let event = wait_for("a watch event", WAIT, watch.next())
            .await
            .unwrap()
            .unwrap();
        if !matches!(
            event,
            WatchEvent::Chat {
                kind: WatchKind::Status,
                ..
            }
        ) {
            return event;
        }
    }
}
