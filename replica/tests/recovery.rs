//! A killed worker's unfinished turn is resumed elsewhere from its last
//! persisted step (ARCHITECTURE.md §16, invariant 8): the steps it saved are neither
//! run nor stored again, and the model picks up after them.

mod common;

use std::time::Duration;

use chatd_replica::server::ReplicaConfig;
use chatd_shared::{
    client::MessagesQuery, client::Transport, parts::Part, status::MessageRole, stream::StreamEvent,
};
use common::app::{TestApp, idle_at, idle_chat, open_stream, read_until, say, send_text};
use serde_json::json;

/// Leases that lapse within about two seconds.
fn short_lease(config: &mut ReplicaConfig) {
    config.runtime.lease_ttl = Duration::from_secs(2);
    config.runtime.heartbeat_interval = Duration::from_millis(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_turn_resumes_from_its_last_persisted_step() {
    // Replica 0 only serves the API; replica 1 runs the chat.
    let mut app = TestApp::start_each(2, |index, config| {
        short_lease(config);
        if index == 0 {
            config.runtime.max_running_chats = 0;
        }
    })
    .await;
    let client = app.admin(0);
    let id = idle_chat(&client).await;
    let mut stream = open_stream(&client, id, Transport::WebSocket).await;
    // Step 0 calls a tool; step 1 replies slowly enough to die in.
    send_text(
        &client,
        id,
        say(json!({"steps": [
            {"tool_calls": [{"name": "current_time", "id": "call_once"}]},
            {"tokens": 100, "token_delay_ms": 40},
        ]})),
    )
    .await;
    // Step 1 streams: step 0 (the call and its result) is persisted.
    read_until(&mut stream, |e| {
        matches!(e, StreamEvent::Part { step: 1, .. })
    })
    .await;

    app.add(short_lease).await;
    app.replicas.remove(1).kill();
    read_until(&mut stream, |e| idle_at(e, 2)).await;

    let messages = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    let roles: Vec<_> = messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Assistant
        ],
        "the tool step is stored once and the reply follows it: {messages:#?}"
    );
    let calls = messages[1]
        .content
        .iter()
        .filter(|p| matches!(p, Part::ToolCall { .. }))
        .count();
    assert_eq!(calls, 1, "{:#?}", messages[1]);
    assert_eq!(messages[1].generation.map(|g| g.0), Some(1));
    let reply = &messages[3];
    assert!(
        reply.generation.is_some_and(|g| g.0 >= 2),
        "the reply came from the recovering run: {reply:#?}"
    );
    assert!(
        reply
            .content
            .iter()
            .any(|p| matches!(p, Part::Text { text } if !text.is_empty())),
        "{reply:#?}"
    );
    app.shutdown().await;
}
