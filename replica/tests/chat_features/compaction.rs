//! Context compaction: at the threshold the next call first asks for a
//! summary, stored hidden; the prompt starts from it; clients get a
//! `compaction` event and still read every message; a recovered or
//! interrupted turn never summarizes the same range twice.

use chatd_mockllm::RecordedRequest;
use chatd_shared::{client::Transport, status::MessageRole, stream::StreamEvent};
use serde_json::{Value, json};

use super::{
    common::{
        Wire,
        app::{open_stream, read_until, say},
    },
    fixture::{ModelSpec, Setup, create, described, send, wait_idle, wait_metric},
};

/// A model whose threshold is 700 input tokens.
fn small_context() -> ModelSpec {
    ModelSpec {
        context_limit: 1000,
        ..ModelSpec::default()
    }
}

/// The first turn: the provider reports 900 input tokens, past 70 % of 1000.
fn near_the_limit() -> String {
    say(json!({"text": "first answer", "input_tokens": 900}))
}

fn system_text(request: &RecordedRequest) -> String {
    let body = request.body.as_ref().expect("JSON");
    match &body["system"] {
        Value::String(system) => system.clone(),
        _ => body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// How many summary requests the mock received.
fn summary_requests(setup: &Setup) -> usize {
    setup
        .mock
        .requests()
        .iter()
        .filter(|request| system_text(request).starts_with("Summarize the conversation"))
        .count()
}

/// Hidden summary messages stored for chat `id` (the history API never
/// shows them).
async fn stored_summaries(setup: &Setup, id: chatd_shared::ids::ChatId) -> i64 {
    let db = setup.app.db.pool().get().await.unwrap();
    db.query_one(
        "SELECT count(*) FROM chat_messages WHERE chat_id = $1 AND role = 'system' AND visibility = 'model'",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

async fn compaction_at_the_threshold(wire: Wire) {
    let setup = Setup::start(1, wire, small_context(), |_, _| {}).await;
    let client = setup.app.admin(0);
    let chat = create(&client, &near_the_limit(), None).await;
    wait_idle(&client, chat, 2).await;
    assert_eq!(
        summary_requests(&setup),
        0,
        "the first call is under no threshold"
    );

    let mut stream = open_stream(&client, chat, Transport::WebSocket).await;
    send(&client, chat, &say(json!({"describe": true}))).await;
    let events = read_until(&mut stream, |e| {
        matches!(e, StreamEvent::Message { message, .. } if message.role == MessageRole::Assistant)
    })
    .await;
    let compaction = events
        .iter()
        .position(|e| matches!(e, StreamEvent::Compaction { .. }))
        .expect("a compaction event");
    let reply = events.len() - 1;
    assert!(compaction < reply, "{events:#?}");
    let seen = described(&client, chat).await;
    assert_eq!(seen["summary"], true, "{seen}");
    assert_eq!(
        seen["messages"], 1,
        "only the last user message follows the summary: {seen}"
    );
    assert_eq!(summary_requests(&setup), 1);
    assert_eq!(stored_summaries(&setup, chat).await, 1);

    // The history is intact: every message, none of them the summary.
    let page = client
        .list_messages(chat, &Default::default())
        .await
        .unwrap();
    let roles: Vec<MessageRole> = page.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::User,
            MessageRole::Assistant
        ]
    );

    // The next turn reads from the summary on, and compacts nothing more.
    send(&client, chat, &say(json!({"describe": true}))).await;
    wait_idle(&client, chat, 6).await;
    let seen = described(&client, chat).await;
    assert_eq!(seen["summary"], true);
    assert!(
        seen["messages"].as_u64().unwrap() >= 3,
        "the summary, then the turns since: {seen}"
    );
    assert_eq!(summary_requests(&setup), 1);
    wait_metric(&setup.app, 0, "chatd_compactions_total", 1.0).await;
    setup.shutdown().await;
}

#[tokio::test]
async fn compaction_happens_at_the_threshold_and_the_prompt_starts_from_the_summary_over_openai() {
    compaction_at_the_threshold(Wire::OpenAi).await;
}

#[tokio::test]
async fn compaction_happens_at_the_threshold_and_the_prompt_starts_from_the_summary_over_anthropic()
{
    compaction_at_the_threshold(Wire::Anthropic).await;
}

#[tokio::test]
async fn a_recovered_turn_never_compacts_the_same_range_twice() {
    // Replica 0 serves the API only; 1 and 2 run turns.
    let mut setup = Setup::start(3, Wire::OpenAi, small_context(), |index, config| {
        if index == 0 {
            config.runtime.max_running_chats = 0;
        }
    })
    .await;
    let client = setup.app.admin(0);
    let chat = create(&client, &near_the_limit(), None).await;
    wait_idle(&client, chat, 2).await;
    let mut stream = open_stream(&client, chat, Transport::WebSocket).await;
    // The reply after the compaction takes 3 s: long enough to kill its worker.
    send(
        &client,
        chat,
        &say(json!({"describe": true, "ttft_ms": 3000})),
    )
    .await;
    read_until(&mut stream, |e| matches!(e, StreamEvent::Compaction { .. })).await;
    let worker = (1..3)
        .find(|&index| {
            setup.app.replicas[index]
                .running()
                .iter()
                .any(|(id, _)| *id == chat)
        })
        .expect("a replica runs the chat");
    setup.app.replicas.remove(worker).kill();

    wait_idle(&client, chat, 4).await;
    let seen = described(&client, chat).await;
    assert_eq!(seen["summary"], true, "{seen}");
    assert_eq!(seen["messages"], 1, "{seen}");
    assert_eq!(summary_requests(&setup), 1, "summarized once");
    assert_eq!(stored_summaries(&setup, chat).await, 1);
    setup.shutdown().await;
}

#[tokio::test]
async fn an_interrupted_turn_never_compacts_the_same_range_twice() {
    let setup = Setup::start(1, Wire::Anthropic, small_context(), |_, _| {}).await;
    let client = setup.app.admin(0);
    let chat = create(&client, &near_the_limit(), None).await;
    wait_idle(&client, chat, 2).await;
    let mut stream = open_stream(&client, chat, Transport::Sse).await;
    send(
        &client,
        chat,
        &say(json!({"describe": true, "ttft_ms": 10000})),
    )
    .await;
    read_until(&mut stream, |e| matches!(e, StreamEvent::Compaction { .. })).await;
    client.interrupt_chat(chat).await.unwrap();
    wait_idle(&client, chat, 3).await;

    send(&client, chat, &say(json!({"describe": true}))).await;
    wait_idle(&client, chat, 4).await;
    let seen = described(&client, chat).await;
    assert_eq!(seen["summary"], true, "{seen}");
    assert_eq!(summary_requests(&setup), 1, "summarized once");
    assert_eq!(stored_summaries(&setup, chat).await, 1);
    setup.shutdown().await;
}
