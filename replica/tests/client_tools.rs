//! Client-executed tools (ARCHITECTURE.md §17): a chat declares tools its client
//! runs; a call to one persists the step and makes the chat
//! `requires_action` with the pending calls and a deadline as rows (no run,
//! no slot); `POST /chats/{id}/tool-results` answers them and the turn goes
//! on; past the deadline the calls get error results (invariant 16).

mod common;

use chatd_shared::{
    api::{CreateChat, SendMessage, ToolResultInput, ToolResults, UpdateChat},
    client::{Client, ClientError, MessagesQuery, Transport},
    ids::ChatId,
    parts::Part,
    status::{ChatStatus, MessageRole},
    stream::StreamEvent,
    testing::eventually,
    tools::ClientTool,
};
use common::{
    WAIT,
    app::{TestApp, idle_at, open_stream, read_until, say},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn tool(name: &str, timeout_s: Option<u32>) -> ClientTool {
    ClientTool {
        name: name.into(),
        description: format!("The client's {name}."),
        parameters: json!({"type": "object", "properties": {"hint": {"type": "string"}}}),
        timeout_s,
    }
}

/// A chat with `tools` that runs `script` at once.
async fn chat_with(client: &Client, tools: Vec<ClientTool>, script: Value) -> ChatId {
    create(client, tools, Some(say(script))).await
}

/// A chat with `tools`, and a first message when `text` is given.
async fn create(client: &Client, tools: Vec<ClientTool>, text: Option<String>) -> ChatId {
    let created = client
        .create_chat(
            &CreateChat {
                text,
                client_tools: Some(tools),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("create chat");
    created.body.id
}

/// Waits until the chat has `status`.
async fn wait_status(client: &Client, id: ChatId, status: ChatStatus) {
    eventually(&format!("chat {id} to be {status}"), WAIT, || async move {
        let chat = client.get_chat(id).await.expect("get chat");
        (chat.status == status).then_some(())
    })
    .await;
}

fn result(id: &str, value: Value) -> ToolResultInput {
    ToolResultInput {
        tool_call_id: id.into(),
        result: value,
        is_error: false,
    }
}

fn api_error(err: ClientError) -> (StatusCode, String) {
    match err {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The tool results among `messages`: (call id, result, is_error).
fn tool_results(messages: &[chatd_shared::api::Message]) -> Vec<(String, Value, bool)> {
    messages
        .iter()
        .filter(|m| m.role == MessageRole::Tool)
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            Part::ToolResult {
                tool_call_id,
                result,
                is_error,
                ..
            } => Some((tool_call_id.clone(), result.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

/// Step 0 calls the client's `pick_color`; step 1 hands its answer to
/// `test_fail` (so the stored history shows the model saw it); step 2 ends.
fn pick_then_echo() -> Value {
    json!({"steps": [
        {"text": "Let me ask.", "tool_calls": [{"name": "pick_color", "args": {"hint": "warm"}, "id": "call_pick"}]},
        {"tool_calls": [{"name": "test_fail", "args": {"message": "$ref:call_pick/color"}, "id": "call_echo"}]},
        {"text": "Done."}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tool_round_trip_over_websocket_and_sse() {
    let app = TestApp::start(2, |_| {}).await;
    let (_, token) = app.user("alice").await;
    for transport in [Transport::WebSocket, Transport::Sse] {
        let client = app.client(0, &token);
        let other = app.client(1, &token);
        let id = create(&client, vec![tool("pick_color", None)], None).await;
        // Watched from the replica that does not take the request.
        let mut stream = open_stream(&other, id, transport).await;
        client
            .send_message(
                id,
                &SendMessage {
                    text: Some(say(pick_then_echo())),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        let events = read_until(&mut stream, |e| {
            matches!(e, StreamEvent::RequiresAction { .. })
        })
        .await;
        let Some(StreamEvent::RequiresAction {
            tool_calls,
            deadline,
            ..
        }) = events.last()
        else {
            unreachable!()
        };
        assert_eq!(tool_calls.len(), 1, "{transport:?}");
        assert_eq!(
            (tool_calls[0].id.as_str(), tool_calls[0].name.as_str()),
            ("call_pick", "pick_color")
        );
        assert_eq!(tool_calls[0].args, json!({"hint": "warm"}));
        assert!(*deadline > chrono::Utc::now());
        assert!(
            events.iter().any(|e| matches!(
                e,
                StreamEvent::Status {
                    status: ChatStatus::RequiresAction,
                    ..
                }
            )),
            "the status comes first: {events:#?}"
        );
        // No replica holds the chat while it waits.
        app.wait_no_slot(id).await;

        let stored = other
            .post_tool_results(
                id,
                &ToolResults {
                    results: vec![result("call_pick", json!({"color": "red"}))],
                },
            )
            .await
            .expect("results accepted");
        assert_eq!(stored.messages.len(), 1);
        read_until(&mut stream, |e| idle_at(e, 2)).await;

        let messages = client
            .list_messages(id, &MessagesQuery::default())
            .await
            .unwrap()
            .messages;
        let results = tool_results(&messages);
        assert_eq!(
            results,
            [
                ("call_pick".into(), json!({"color": "red"}), false),
                ("call_echo".into(), json!({"error": "red"}), true),
            ],
            "the next step saw the client's result: {messages:#?}"
        );
        let last = messages.last().unwrap();
        assert_eq!(last.role, MessageRole::Assistant);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_must_answer_every_pending_call_once_by_known_ids() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, token) = app.user("bob").await;
    let client = app.client(0, &token);
    let id = chat_with(
        &client,
        vec![tool("pick_color", None), tool("pick_size", None)],
        json!({"steps": [
            {"tool_calls": [
                {"name": "pick_color", "id": "call_a"},
                {"name": "current_time", "id": "call_time"},
                {"name": "pick_size", "id": "call_b"}
            ]},
            {"text": "Thanks."}
        ]}),
    )
    .await;
    wait_status(&client, id, ChatStatus::RequiresAction).await;
    let post = |results: Vec<ToolResultInput>| {
        let client = client.clone();
        async move { client.post_tool_results(id, &ToolResults { results }).await }
    };

    let unknown = post(vec![
        result("call_a", json!(1)),
        result("call_b", json!(2)),
        result("call_nope", json!(3)),
    ])
    .await
    .unwrap_err();
    assert_eq!(
        api_error(unknown),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_tool_call".into())
    );
    let not_a_client_call = post(vec![result("call_time", json!(1))]).await.unwrap_err();
    assert_eq!(
        api_error(not_a_client_call).0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let missing = post(vec![result("call_a", json!(1))]).await.unwrap_err();
    assert_eq!(
        api_error(missing),
        (StatusCode::CONFLICT, "missing_tool_results".into())
    );
    let twice = post(vec![
        result("call_a", json!(1)),
        result("call_a", json!(1)),
        result("call_b", json!(2)),
    ])
    .await
    .unwrap_err();
    assert_eq!(
        api_error(twice),
        (StatusCode::CONFLICT, "duplicate_tool_results".into())
    );
    // Refusals change nothing: the chat still waits, with no result stored.
    assert_eq!(
        client.get_chat(id).await.unwrap().status,
        ChatStatus::RequiresAction
    );

    post(vec![
        result("call_b", json!("L")),
        result("call_a", json!("blue")),
    ])
    .await
    .expect("every pending call answered once");
    let again = post(vec![result("call_a", json!(1)), result("call_b", json!(2))])
        .await
        .unwrap_err();
    assert_eq!(
        api_error(again),
        (StatusCode::CONFLICT, "tool_call_answered".into())
    );
    wait_status(&client, id, ChatStatus::Waiting).await;
    let messages = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    let ids: Vec<String> = tool_results(&messages).into_iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        ["call_time", "call_a", "call_b"],
        "results in call order"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_calls_get_error_results_and_a_late_result_is_refused() {
    let app = TestApp::start(2, |_| {}).await;
    let (_, token) = app.user("carol").await;
    let client = app.client(0, &token);
    let id = chat_with(
        &client,
        vec![tool("pick_color", Some(1))],
        json!({"steps": [
            {"tool_calls": [{"name": "pick_color", "id": "call_late"}]},
            {"text": "Nobody answered."}
        ]}),
    )
    .await;
    wait_status(&client, id, ChatStatus::RequiresAction).await;
    // The heartbeat finds the deadline passed; the turn goes on without it.
    wait_status(&client, id, ChatStatus::Waiting).await;
    let late = client
        .post_tool_results(
            id,
            &ToolResults {
                results: vec![result("call_late", json!("too late"))],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(late).0, StatusCode::CONFLICT);
    let messages = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(
        tool_results(&messages),
        [(
            "call_late".into(),
            json!({"error": "the client sent no result before the deadline"}),
            true
        )]
    );
    assert_eq!(messages.last().unwrap().role, MessageRole::Assistant);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requires_action_wait_survives_every_replica_being_restarted() {
    let mut app = TestApp::start(2, |_| {}).await;
    let (_, token) = app.user("dave").await;
    let id = chat_with(
        &app.client(0, &token),
        vec![tool("pick_color", None)],
        pick_then_echo(),
    )
    .await;
    wait_status(&app.client(0, &token), id, ChatStatus::RequiresAction).await;
    // Every replica goes: one crashes, the other stops.
    app.replicas.remove(0).kill();
    app.replicas.remove(0).shutdown().await;
    app.add(|_| {}).await;
    app.add(|_| {}).await;
    let client = app.client(1, &token);
    let mut stream = client
        .stream_chat(id, Default::default(), Transport::Sse)
        .await
        .unwrap();
    // A client that comes back learns what to run from the snapshot.
    let events = read_until(&mut stream, |e| {
        matches!(e, StreamEvent::RequiresAction { .. })
    })
    .await;
    assert!(
        matches!(events.last(), Some(StreamEvent::RequiresAction { tool_calls, .. }) if tool_calls[0].id == "call_pick")
    );
    client
        .post_tool_results(
            id,
            &ToolResults {
                results: vec![result("call_pick", json!({"color": "green"}))],
            },
        )
        .await
        .expect("results accepted");
    wait_status(&client, id, ChatStatus::Waiting).await;
    let messages = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(
        tool_results(&messages)[1],
        ("call_echo".into(), json!({"error": "green"}), true)
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_requires_action_follows_the_busy_behaviour() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, token) = app.user("erin").await;
    let client = app.client(0, &token);
    let id = chat_with(
        &client,
        vec![tool("pick_color", None)],
        json!({"steps": [
            {"tool_calls": [{"name": "pick_color", "id": "call_wait"}]},
            {"text": "never"}
        ]}),
    )
    .await;
    wait_status(&client, id, ChatStatus::RequiresAction).await;
    let send = |behavior: &str| {
        let client = client.clone();
        let body = SendMessage {
            text: Some(say(json!({"text": "Next question answered."}))),
            busy_behavior: Some(serde_json::from_value(json!(behavior)).unwrap()),
            ..Default::default()
        };
        async move { client.send_message(id, &body, None).await }
    };
    let rejected = send("reject").await.unwrap_err();
    assert_eq!(
        api_error(rejected),
        (StatusCode::CONFLICT, "chat_busy".into())
    );
    let queued = send("queue").await.unwrap();
    assert_eq!(
        queued.status,
        StatusCode::ACCEPTED,
        "queued behind the wait"
    );
    assert_eq!(
        client.get_chat(id).await.unwrap().status,
        ChatStatus::RequiresAction
    );
    // An interrupt gives the pending call a synthetic result; the queued
    // message runs next.
    let interrupting = send("interrupt").await.unwrap();
    assert_eq!(interrupting.status, StatusCode::ACCEPTED);
    eventually("both queued messages answered", WAIT, || async {
        let messages = client
            .list_messages(id, &MessagesQuery::default())
            .await
            .unwrap()
            .messages;
        let replies = messages
            .iter()
            .filter(|m| m.role == MessageRole::Assistant)
            .count();
        let chat = client.get_chat(id).await.unwrap();
        (chat.status == ChatStatus::Waiting && replies == 3).then_some(messages)
    })
    .await;
    let messages = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    let results = tool_results(&messages);
    assert_eq!(results.len(), 1);
    assert_eq!(
        (results[0].0.as_str(), results[0].2),
        ("call_wait", true),
        "{messages:#?}"
    );
    let after_call = messages
        .iter()
        .position(|m| m.role == MessageRole::Tool)
        .unwrap();
    assert_eq!(
        messages[after_call + 1].role,
        MessageRole::User,
        "the synthetic result comes before the queued message"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tools_are_declared_on_create_patch_and_send_and_checked() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, token) = app.user("frank").await;
    let client = app.client(0, &token);
    let id = create(&client, vec![tool("a", None)], None).await;
    assert_eq!(client.get_chat(id).await.unwrap().client_tools[0].name, "a");
    let patched = client
        .update_chat(
            id,
            &UpdateChat {
                client_tools: Some(vec![tool("b", Some(5))]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.client_tools[0].name, "b");
    client
        .send_message(
            id,
            &SendMessage {
                text: Some(say(json!({"text": "hi"}))),
                client_tools: Some(vec![tool("c", None)]),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(client.get_chat(id).await.unwrap().client_tools[0].name, "c");
    for bad in [
        tool("current_time", None),
        tool("spawn_agent", None),
        tool("x__y", None),
    ] {
        let refused = client
            .update_chat(
                id,
                &UpdateChat {
                    client_tools: Some(vec![bad]),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            api_error(refused),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_client_tools".into()
            )
        );
    }
    let unknown_server = client
        .update_chat(
            id,
            &UpdateChat {
                mcp_servers: Some(vec!["nope".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        api_error(unknown_server),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_mcp_server".into()
        )
    );
    app.shutdown().await;
}
