//! The turn loop end to end: a replica runs chats against the mock LLM over
//! real HTTP, in both wire formats, with a real PostgreSQL.

mod common;

use std::{sync::Arc, time::Duration};

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::{
    tools::{Tool, ToolError, ToolRegistry},
    turn::TurnConfig,
};
use chatd_shared::{
    db::{messages::Message, queued_messages},
    ids::{ChatId, ModelConfigId, UserId},
    parts::Part,
    pubsub::ChatEvent,
    status::{ChatStatus, MessageRole},
    stream::StreamEvent,
    testing::{TestDb, eventually},
};
use common::*;
use serde_json::{Value, json};

struct Setup {
    db: TestDb,
    mock: MockLlm,
    replica: TestReplica,
    owner: UserId,
    model: ModelConfigId,
    wire: Wire,
}

fn fast_turns() -> TurnConfig {
    let mut config = TurnConfig::default();
    config.retry.base = Duration::from_millis(10);
    config.max_steps = 5;
    config.timeouts.first_chunk = Duration::from_secs(10);
    config.timeouts.idle = Duration::from_secs(10);
    config
}

async fn setup_with(wire: Wire, tools: ToolRegistry, config: TurnConfig, key: &str) -> Setup {
    let db = TestDb::new().await;
    let behaviour = Behaviour {
        require_api_key: Some("right-key".into()),
        ..Behaviour::default()
    };
    let mock = MockLlm::start(behaviour).await.unwrap();
    let model = mock_model(&db, &mock, wire, key).await;
    let runner = turn_runner(db.pool(), tools, config);
    let replica = TestReplica::start(&db, runner, |_| {}).await;
    let owner = user(&db).await;
    Setup {
        db,
        mock,
        replica,
        owner,
        model,
        wire,
    }
}

async fn setup(wire: Wire) -> Setup {
    setup_with(wire, ToolRegistry::builtin(true), fast_turns(), "right-key").await
}

fn directive(script: Value) -> String {
    format!("Please. @mock {script}")
}

impl Setup {
    async fn chat(&self, script: Value) -> (ChatId, chatd_replica::streams::HubReceiver) {
        // Subscribe before the chat can run, so every event is seen.
        let id = ChatId::new_v7();
        let receiver = self.replica.hub.subscribe(id).receiver;
        let client = self.db.pool().get().await.unwrap();
        chatd_shared::db::transitions::insert(
            &client,
            &chatd_shared::db::chats::NewChat {
                id,
                owner_id: self.owner,
                parent_chat_id: None,
                root_chat_id: None,
                title: "",
                status: ChatStatus::Waiting,
                model_config_id: Some(self.model),
                system_prompt: Some("You are a test."),
                labels: &json!({}),
                tools: Default::default(),
            },
        )
        .await
        .unwrap();
        send(
            &self.db,
            &self.replica.pubsub,
            id,
            self.owner,
            &directive(script),
        )
        .await;
        (id, receiver)
    }

    async fn shutdown(self) {
        self.replica.shutdown().await;
    }
}

fn text_of(message: &Message) -> String {
    message
        .content
        .iter()
        .filter_map(|part| match part {
            Part::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn deltas(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::Part {
                part: Part::TextDelta { text },
                ..
            } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn roles(history: &[Message]) -> Vec<MessageRole> {
    history.iter().map(|m| m.role).collect()
}

macro_rules! both_wires {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn openai() {
                    super::$scenario(super::Wire::OpenAi).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn anthropic() {
                    super::$scenario(super::Wire::Anthropic).await
                }
            }
        )*
    };
}

both_wires!(
    text_streams_into_the_hub_and_is_stored_with_usage,
    tools_run_over_steps_and_the_model_sees_the_whole_history,
    parallel_tool_calls_run_at_once_and_results_come_in_call_order,
    reasoning_is_streamed_and_stored,
    rate_limit_then_success_retries_and_discards_the_draft,
    server_error_then_success_retries,
    a_cut_stream_is_retried_and_its_draft_discarded,
    a_wrong_key_ends_the_turn_in_error_without_retrying,
    malformed_provider_output_ends_the_turn_in_a_readable_error,
    an_interrupt_while_streaming_saves_the_partial_reply_before_the_queued_message,
    an_interrupt_while_a_tool_runs_saves_error_results,
    a_run_that_lost_ownership_persists_nothing,
    unknown_and_crashing_tools_become_error_results_and_the_turn_goes_on,
    the_step_limit_ends_the_turn_in_error,
    a_second_turn_sends_the_whole_history,
);

async fn a_second_turn_sends_the_whole_history(wire: Wire) {
    let s = setup(wire).await;
    let (id, _receiver) = s.chat(json!({"text": "first answer"})).await;
    wait_idle(&s.db, id).await;
    send(
        &s.db,
        &s.replica.pubsub,
        id,
        s.owner,
        &directive(json!({"text": "second answer"})),
    )
    .await;
    eventually("the second answer", WAIT, || async {
        let history = messages(&s.db, id).await;
        (history.len() == 4 && chat(&s.db, id).await.status == ChatStatus::Waiting)
            .then_some(history)
    })
    .await;
    let requests = s.mock.requests();
    let sent = serde_json::to_string(&requests.last().unwrap().body.as_ref().unwrap()["messages"])
        .unwrap();
    let first_question = sent
        .find("first answer")
        .expect("the first question was sent");
    let first_reply = sent[first_question + 1..]
        .find("first answer")
        .expect("the first reply was sent");
    let second_question = sent
        .find("second answer")
        .expect("the second question was sent");
    assert!(
        first_question < first_question + 1 + first_reply
            && first_question + 1 + first_reply < second_question,
        "{sent}"
    );
    assert_eq!(text_of(&messages(&s.db, id).await[3]), "second answer");
    s.shutdown().await;
}

async fn text_streams_into_the_hub_and_is_stored_with_usage(wire: Wire) {
    let s = setup(wire).await;
    let (id, receiver) = s.chat(json!({"text": "Hello there, world"})).await;
    let row = wait_idle(&s.db, id).await;
    assert_eq!(row.status, ChatStatus::Waiting);
    let events = drain(&receiver);
    assert!(
        matches!(events[0], StreamEvent::Status { status: ChatStatus::Running, generation, .. } if generation == row.generation),
        "running comes first: {:?}",
        events[0]
    );
    assert_eq!(deltas(&events), "Hello there, world");
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Part { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == 0,
        "{seqs:?}"
    );
    let Some(StreamEvent::Message { message, .. }) = events.last() else {
        panic!("the committed message ends the run's events: {events:?}");
    };
    assert_eq!(message.content, [Part::text("Hello there, world")]);

    let history = messages(&s.db, id).await;
    assert_eq!(roles(&history), [MessageRole::User, MessageRole::Assistant]);
    let reply = &history[1];
    assert_eq!(text_of(reply), "Hello there, world");
    assert!(
        reply.usage.input_tokens.unwrap() > 0 && reply.usage.output_tokens.unwrap() > 0,
        "{:?}",
        reply.usage
    );
    assert!(reply.runtime_ms.is_some());
    assert!(
        reply.cost_micros.unwrap() >= 1,
        "priced model: cost is recorded"
    );
    assert_eq!(
        (reply.generation, reply.step),
        (Some(row.generation), Some(0))
    );
    s.shutdown().await;
}

async fn tools_run_over_steps_and_the_model_sees_the_whole_history(wire: Wire) {
    let s = setup(wire).await;
    let script = json!({"steps": [
        {"tool_calls": [{"name": "current_time", "args": {}}]},
        {"text": "It is late."}
    ]});
    let (id, _receiver) = s.chat(script).await;
    assert_eq!(wait_idle(&s.db, id).await.status, ChatStatus::Waiting);
    let history = messages(&s.db, id).await;
    assert_eq!(
        roles(&history),
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Assistant
        ]
    );
    let Part::ToolCall {
        id: call_id, name, ..
    } = &history[1].content[0]
    else {
        panic!("{:?}", history[1].content);
    };
    assert_eq!(name, "current_time");
    let Part::ToolResult {
        tool_call_id,
        is_error,
        result,
        ..
    } = &history[2].content[0]
    else {
        panic!("{:?}", history[2].content);
    };
    assert_eq!((tool_call_id, *is_error), (call_id, false));
    assert!(result["utc"].is_string());
    assert_eq!(text_of(&history[3]), "It is late.");
    assert_eq!(history[3].step, Some(1));

    // What the model was sent: the tools, then the history with the call and its result.
    let requests = s.mock.requests();
    assert_eq!(requests.len(), 2);
    let first = requests[0].body.as_ref().unwrap();
    let second = requests[1].body.as_ref().unwrap();
    let offered = serde_json::to_string(&first["tools"]).unwrap();
    assert!(offered.contains("current_time"), "{offered}");
    let sent = &second["messages"];
    match s.wire {
        Wire::OpenAi => {
            let n = sent.as_array().unwrap().len();
            assert_eq!(sent[0]["role"], "system");
            assert_eq!(sent[n - 2]["tool_calls"][0]["id"], json!(call_id));
            assert_eq!(sent[n - 1]["role"], "tool");
            assert_eq!(sent[n - 1]["tool_call_id"], json!(call_id));
        }
        Wire::Anthropic => {
            assert_eq!(second["system"], "You are a test.");
            let n = sent.as_array().unwrap().len();
            assert_eq!(sent[n - 2]["role"], "assistant");
            assert_eq!(sent[n - 2]["content"][0]["type"], "tool_use");
            assert_eq!(sent[n - 2]["content"][0]["id"], json!(call_id));
            assert_eq!(sent[n - 1]["role"], "user");
            assert_eq!(sent[n - 1]["content"][0]["type"], "tool_result");
            assert_eq!(sent[n - 1]["content"][0]["tool_use_id"], json!(call_id));
        }
    }
    s.shutdown().await;
}

/// Waits until `parties` calls are inside it at once: it can only succeed
/// when the calls of a step run in parallel.
struct Rendezvous(Arc<tokio::sync::Barrier>);

#[async_trait::async_trait]
impl Tool for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }
    fn description(&self) -> &'static str {
        "Meets the other calls of the step."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"who": {"type": "string"}}})
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        match tokio::time::timeout(Duration::from_secs(10), self.0.wait()).await {
            Ok(_) => Ok(json!({"met": true, "who": args["who"]})),
            Err(_) => Err(ToolError(
                "nobody else came: the calls did not run in parallel".into(),
            )),
        }
    }
}

async fn parallel_tool_calls_run_at_once_and_results_come_in_call_order(wire: Wire) {
    let mut tools = ToolRegistry::builtin(false);
    tools.register(Arc::new(Rendezvous(Arc::new(tokio::sync::Barrier::new(2)))));
    let s = setup_with(wire, tools, fast_turns(), "right-key").await;
    let script = json!({"steps": [
        {"tool_calls": [
            {"name": "rendezvous", "args": {"who": "first"}, "id": "call_a"},
            {"name": "rendezvous", "args": {"who": "second"}, "id": "call_b"}
        ]},
        {"text": "Both met."}
    ]});
    let (id, receiver) = s.chat(script).await;
    assert_eq!(wait_idle(&s.db, id).await.status, ChatStatus::Waiting);
    let history = messages(&s.db, id).await;
    let results: Vec<(String, bool, Value)> = history
        .iter()
        .filter(|m| m.role == MessageRole::Tool)
        .map(|m| match &m.content[0] {
            Part::ToolResult {
                tool_call_id,
                is_error,
                result,
                ..
            } => (tool_call_id.clone(), *is_error, result["who"].clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        results,
        [
            ("call_a".into(), false, json!("first")),
            ("call_b".into(), false, json!("second"))
        ],
        "both met (parallel), stored in call order"
    );
    let streamed: Vec<String> = drain(&receiver)
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Part {
                part: Part::ToolResult { tool_call_id, .. },
                ..
            } => Some(tool_call_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        streamed,
        ["call_a", "call_b"],
        "results are streamed in call order"
    );
    s.shutdown().await;
}

async fn reasoning_is_streamed_and_stored(wire: Wire) {
    let s = setup(wire).await;
    let (id, receiver) = s
        .chat(json!({"thinking": "Let me think.", "text": "42"}))
        .await;
    wait_idle(&s.db, id).await;
    let reasoning: String = drain(&receiver)
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Part {
                part: Part::ReasoningDelta { text },
                ..
            } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasoning, "Let me think.");
    let history = messages(&s.db, id).await;
    let Part::Reasoning { text, signature } = &history[1].content[0] else {
        panic!("{:?}", history[1].content);
    };
    assert_eq!(text, "Let me think.");
    if s.wire == Wire::Anthropic {
        assert!(
            signature.is_some(),
            "Anthropic thinking keeps its signature"
        );
    }
    assert_eq!(history[1].content[1], Part::text("42"));
    s.shutdown().await;
}

fn retries(events: &[StreamEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Retry { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

async fn rate_limit_then_success_retries_and_discards_the_draft(wire: Wire) {
    let s = setup(wire).await;
    let script = json!({"error": {"status": 429, "retry_after": 0, "times": 2}, "text": "finally"});
    let (id, receiver) = s.chat(script).await;
    assert_eq!(wait_idle(&s.db, id).await.status, ChatStatus::Waiting);
    let events = drain(&receiver);
    assert_eq!(retries(&events), [2, 3]);
    assert_eq!(s.mock.requests().len(), 3);
    assert_eq!(text_of(&messages(&s.db, id).await[1]), "finally");
    s.shutdown().await;
}

async fn server_error_then_success_retries(wire: Wire) {
    let s = setup(wire).await;
    let (id, receiver) = s
        .chat(json!({"error": {"status": 500, "times": 1}, "text": "recovered"}))
        .await;
    assert_eq!(wait_idle(&s.db, id).await.status, ChatStatus::Waiting);
    assert_eq!(retries(&drain(&receiver)), [2]);
    assert_eq!(text_of(&messages(&s.db, id).await[1]), "recovered");
    s.shutdown().await;
}

async fn a_cut_stream_is_retried_and_its_draft_discarded(wire: Wire) {
    let s = setup(wire).await;
    let text = "one two three four five";
    let (id, receiver) = s
        .chat(json!({"text": text, "cut_after": 2, "cut_times": 1}))
        .await;
    assert_eq!(wait_idle(&s.db, id).await.status, ChatStatus::Waiting);
    let events = drain(&receiver);
    let retry_at = events
        .iter()
        .position(|e| matches!(e, StreamEvent::Retry { .. }))
        .expect("a retry");
    assert_eq!(
        deltas(&events[..retry_at]),
        "one two",
        "the cut attempt streamed two pieces"
    );
    assert_eq!(
        deltas(&events[retry_at..]),
        text,
        "after the retry the whole reply streams again"
    );
    let history = messages(&s.db, id).await;
    assert_eq!(history.len(), 2);
    assert_eq!(text_of(&history[1]), text, "stored once, whole");
    s.shutdown().await;
}

async fn a_wrong_key_ends_the_turn_in_error_without_retrying(wire: Wire) {
    let s = setup_with(
        wire,
        ToolRegistry::builtin(false),
        fast_turns(),
        "wrong-key",
    )
    .await;
    let (id, _receiver) = s.chat(json!({"text": "never"})).await;
    let row = wait_idle(&s.db, id).await;
    assert_eq!(row.status, ChatStatus::Error);
    let error = row.last_error.unwrap();
    assert!(
        error.contains("mock-") && error.contains("401"),
        "readable, names the provider: {error}"
    );
    assert!(!error.contains("wrong-key"), "never the key: {error}");
    assert_eq!(s.mock.requests().len(), 1, "auth errors are not retried");
    assert_eq!(roles(&messages(&s.db, id).await), [MessageRole::User]);
    s.shutdown().await;
}

async fn malformed_provider_output_ends_the_turn_in_a_readable_error(wire: Wire) {
    let s = setup(wire).await;
    for kind in ["content_type", "json", "sse"] {
        let (id, _receiver) = s.chat(json!({"malformed": kind})).await;
        let row = wait_idle(&s.db, id).await;
        assert_eq!(row.status, ChatStatus::Error, "{kind}");
        let error = row.last_error.unwrap();
        assert!(
            error.starts_with("mock-"),
            "names the provider ({kind}): {error}"
        );
    }
    s.shutdown().await;
}

async fn interrupt(s: &Setup, id: ChatId) {
    let client = s.db.pool().get().await.unwrap();
    let generation: chatd_shared::ids::Generation = client
        .query_one(
            "UPDATE chats SET interrupt_requested = true WHERE id = $1 RETURNING generation",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    s.replica
        .pubsub
        .publish_chat(id, ChatEvent::Interrupt { generation })
        .unwrap();
}

async fn an_interrupt_while_streaming_saves_the_partial_reply_before_the_queued_message(
    wire: Wire,
) {
    let s = setup(wire).await;
    let long = "a b c d e f g h i j k l m n o p q r s t";
    let (id, receiver) = s.chat(json!({"text": long, "token_delay_ms": 100})).await;
    let mut seen = Vec::new();
    eventually("two pieces streamed", WAIT, || {
        seen.extend(drain(&receiver));
        let enough = deltas(&seen).split_whitespace().count() >= 2;
        async move { enough.then_some(()) }
    })
    .await;
    let client = s.db.pool().get().await.unwrap();
    queued_messages::push(
        &client,
        id,
        &[Part::text(directive(json!({"text": "second answer"})))],
        Some(s.owner),
        None,
    )
    .await
    .unwrap()
    .unwrap();
    interrupt(&s, id).await;
    eventually("the queued message to be answered", WAIT, || async {
        let history = messages(&s.db, id).await;
        (history.len() == 4 && chat(&s.db, id).await.status == ChatStatus::Waiting).then_some(())
    })
    .await;
    let history = messages(&s.db, id).await;
    assert_eq!(
        roles(&history),
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::User,
            MessageRole::Assistant
        ]
    );
    let partial = text_of(&history[1]);
    assert!(
        !partial.is_empty() && long.starts_with(&partial) && partial.len() < long.len(),
        "partial: {partial:?}"
    );
    assert!(text_of(&history[2]).contains("second answer"));
    assert_eq!(text_of(&history[3]), "second answer");
    assert!(history.windows(2).all(|w| w[0].id < w[1].id));
    let row = chat(&s.db, id).await;
    assert_eq!(
        history[3].generation,
        Some(row.generation),
        "the same run went on with the queued message"
    );
    s.shutdown().await;
}

async fn an_interrupt_while_a_tool_runs_saves_error_results(wire: Wire) {
    let s = setup(wire).await;
    let script =
        json!({"steps": [{"tool_calls": [{"name": "test_sleep", "args": {"ms": 60000}}]}]});
    let (id, receiver) = s.chat(script).await;
    let mut seen = Vec::new();
    eventually("the tool call to start", WAIT, || {
        seen.extend(drain(&receiver));
        let called = seen.iter().any(|e| {
            matches!(
                e,
                StreamEvent::Part {
                    part: Part::ToolCall { .. },
                    ..
                }
            )
        });
        async move { called.then_some(()) }
    })
    .await;
    interrupt(&s, id).await;
    assert_eq!(wait_idle(&s.db, id).await.status, ChatStatus::Waiting);
    let history = messages(&s.db, id).await;
    assert_eq!(
        roles(&history),
        [MessageRole::User, MessageRole::Assistant, MessageRole::Tool]
    );
    let Part::ToolResult {
        is_error, result, ..
    } = &history[2].content[0]
    else {
        panic!("{:?}", history[2].content);
    };
    assert!(*is_error);
    assert!(
        result["error"].as_str().unwrap().contains("interrupted"),
        "{result}"
    );
    s.shutdown().await;
}

async fn a_run_that_lost_ownership_persists_nothing(wire: Wire) {
    let s = setup(wire).await;
    let (id, receiver) = s
        .chat(json!({"text": "a b c d e f g h i j k l m n o p", "token_delay_ms": 100}))
        .await;
    let mut seen = Vec::new();
    eventually("streaming started", WAIT, || {
        seen.extend(drain(&receiver));
        let started = !deltas(&seen).is_empty();
        async move { started.then_some(()) }
    })
    .await;
    s.db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE chats SET status = 'waiting', worker_id = NULL, generation = generation + 1 WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let runtime = &s.replica.runtime;
    eventually("the run to stop", WAIT, || {
        let running = runtime.running().iter().any(|(chat, _)| *chat == id);
        async move { (!running).then_some(()) }
    })
    .await;
    assert_eq!(
        roles(&messages(&s.db, id).await),
        [MessageRole::User],
        "nothing written after ownership was lost"
    );
    s.shutdown().await;
}

async fn unknown_and_crashing_tools_become_error_results_and_the_turn_goes_on(wire: Wire) {
    let s = setup(wire).await;
    let script = json!({"steps": [
        {"tool_calls": [{"name": "no_such_tool", "args": {}}, {"name": "test_panic", "args": {}}]},
        {"text": "recovered"}
    ]});
    let (id, _receiver) = s.chat(script).await;
    assert_eq!(wait_idle(&s.db, id).await.status, ChatStatus::Waiting);
    let history = messages(&s.db, id).await;
    let errors: Vec<String> = history
        .iter()
        .filter(|m| m.role == MessageRole::Tool)
        .map(|m| match &m.content[0] {
            Part::ToolResult {
                is_error: true,
                result,
                ..
            } => result["error"].as_str().unwrap().to_owned(),
            other => panic!("expected an error result: {other:?}"),
        })
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].contains("unknown tool") && errors[1].contains("crashed"),
        "{errors:?}"
    );
    assert_eq!(text_of(history.last().unwrap()), "recovered");
    s.shutdown().await;
}

async fn the_step_limit_ends_the_turn_in_error(wire: Wire) {
    let mut config = fast_turns();
    config.max_steps = 3;
    let s = setup_with(wire, ToolRegistry::builtin(false), config, "right-key").await;
    let script = json!({"steps": [{"tool_calls": [{"name": "current_time", "args": {}}]}], "repeat_last": true});
    let (id, _receiver) = s.chat(script).await;
    let row = wait_idle(&s.db, id).await;
    assert_eq!(row.status, ChatStatus::Error);
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("step limit of 3"),
        "{:?}",
        row.last_error
    );
    let history = messages(&s.db, id).await;
    assert_eq!(
        history
            .iter()
            .filter(|m| m.role == MessageRole::Assistant)
            .count(),
        3
    );
    s.shutdown().await;
}
