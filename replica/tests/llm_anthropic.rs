//! The Anthropic provider against the mock LLM over real HTTP: streamed
//! events, the request it sends, and how every failure is classified.

mod llm_common;

use std::time::Duration;

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::llm::{
    AnthropicProvider, ErrorKind, FinishReason, Prompt, StreamEvent, StreamTimeouts,
};
use chatd_shared::parts::Part;
use llm_common::{
    MODEL, ask, assistant, call, call_with, get_time_tool, http, prompt, server, tool_call,
    tool_result, user,
};
use serde_json::{Value, json};

fn provider(server: &MockLlm, api_key: Option<&str>) -> AnthropicProvider {
    AnthropicProvider::new("anthropic", &server.anthropic_base_url(), api_key, http())
        .expect("valid provider config")
}

/// The body of the only request the server received.
fn only_request_body(server: &MockLlm) -> Value {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "exactly one request, never a retry");
    assert_eq!(requests[0].path, "/v1/messages");
    requests[0].body.clone().expect("the request body is JSON")
}

#[tokio::test]
async fn text_deltas_concatenate_to_the_reply_with_usage() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"text": "Hello brave new world"}"#),
    )
    .await;
    outcome.assert_complete();
    assert_eq!(outcome.text(), "Hello brave new world");
    assert_eq!(outcome.text_deltas(), 4, "one delta per word");
    assert_eq!(outcome.finish(), Some(FinishReason::Stop));
    let usage = outcome.usage();
    assert!(
        usage.input_tokens.is_some_and(|tokens| tokens > 0),
        "{usage:?}"
    );
    assert_eq!(usage.output_tokens, Some(4));
    assert_eq!(usage.cache_read_tokens, Some(0));
    assert_eq!(usage.cache_write_tokens, Some(0));
    assert!(
        matches!(outcome.events.first(), Some(StreamEvent::Usage(usage)) if usage.output_tokens.is_none()),
        "input usage comes first, without message_start's placeholder output count: {:?}",
        outcome.events
    );
}

#[tokio::test]
async fn thinking_streams_with_its_signature_before_the_text() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"thinking": "Let me think.", "text": "42"}"#),
    )
    .await;
    outcome.assert_complete();
    assert_eq!(outcome.reasoning(), "Let me think.");
    assert_eq!(outcome.text(), "42");
    let signature = outcome.signature().expect("thinking is signed");
    assert!(signature.starts_with("mocksig_"), "{signature}");
    let position = |wanted: fn(&StreamEvent) -> bool| outcome.events.iter().position(wanted);
    let signature_at = position(|event| matches!(event, StreamEvent::ReasoningSignature(_)));
    let text_at = position(|event| matches!(event, StreamEvent::TextDelta(_)));
    assert!(signature_at < text_at, "{:?}", outcome.events);
}

#[tokio::test]
async fn a_tool_use_block_streams_id_name_and_input_fragments() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(
            r#"@mock {"tool_calls": [{"name": "get_time", "id": "toolu_fixed", "args": {"tz": "Europe/Paris", "format": "24h"}}]}"#,
        ),
    )
    .await;
    outcome.assert_complete();
    let calls = outcome.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "toolu_fixed");
    assert_eq!(calls[0].name, "get_time");
    assert!(calls[0].fragments > 1, "input arrives in fragments");
    let args: Value = serde_json::from_str(&calls[0].args).expect("fragments join to JSON");
    assert_eq!(args, json!({"tz": "Europe/Paris", "format": "24h"}));
    assert_eq!(outcome.finish(), Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn parallel_tool_use_blocks_after_text_are_numbered_from_zero() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(
            r#"@mock {"text": "Checking both.", "tool_calls": [{"name": "get_time", "args": {"tz": "UTC"}}, {"name": "get_weather", "args": {"city": "Oslo"}}]}"#,
        ),
    )
    .await;
    outcome.assert_complete();
    assert_eq!(outcome.text(), "Checking both.");
    // Block 0 is the text; the tool_use blocks 1 and 2 are our calls 0 and 1
    // (`tool_calls()` asserts the start order).
    let calls = outcome.tool_calls();
    let names: Vec<&str> = calls.iter().map(|call| call.name.as_str()).collect();
    assert_eq!(names, ["get_time", "get_weather"]);
    assert!(calls.iter().all(|call| call.id.starts_with("toolu_")));
    assert_ne!(calls[0].id, calls[1].id);
    let args: Vec<Value> = calls
        .iter()
        .map(|call| serde_json::from_str(&call.args).expect("JSON arguments"))
        .collect();
    assert_eq!(args, [json!({"tz": "UTC"}), json!({"city": "Oslo"})]);
    assert_eq!(outcome.finish(), Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn request_has_system_tools_max_tokens_and_version_header() {
    let server = server(Behaviour::default()).await;
    let prompt = Prompt {
        system: Some("You are terse.".into()),
        tools: vec![get_time_tool()],
        options: json!({"temperature": 0.5, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        files: Default::default(),
        ..ask(r#"@mock {"text": "ok"}"#)
    };
    call(&provider(&server, None), &prompt)
        .await
        .assert_complete();

    let body = only_request_body(&server);
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(
        body["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": r#"@mock {"text": "ok"}"#}]}])
    );
    assert_eq!(
        body["tools"],
        json!([{
            "name": "get_time",
            "description": "The current time in a time zone",
            "input_schema": {
                "type": "object",
                "properties": {"tz": {"type": "string"}},
                "required": ["tz"],
            },
        }])
    );
    let request = &server.requests()[0];
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("x-api-key"), None);
}

#[tokio::test]
async fn history_alternates_roles_with_tool_results_in_user_messages() {
    let server = server(Behaviour::default()).await;
    let directive = r#"@mock {"steps": [{"tool_calls": [{"name": "get_time"}, {"name": "get_time"}]}, {"text": "All done."}]}"#;
    let history = prompt(vec![
        user("First, some context."),
        user(directive),
        assistant(vec![
            Part::Reasoning {
                text: "Two zones.".into(),
                signature: Some("sig_1".into()),
            },
            Part::text("Let me look."),
            tool_call("toolu_1", "get_time", json!({"tz": "UTC"})),
            tool_call("toolu_2", "get_time", json!({"tz": "CET"})),
        ]),
        tool_result("toolu_1", "get_time", json!({"time": "12:00"}), false),
        tool_result("toolu_2", "get_time", json!("unknown zone"), true),
    ]);
    let outcome = call(&provider(&server, None), &history).await;
    outcome.assert_complete();
    assert_eq!(
        outcome.text(),
        "All done.",
        "the mock saw step 1 of the turn"
    );

    let body = only_request_body(&server);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "First, some context."},
                {"type": "text", "text": directive},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two zones.", "signature": "sig_1"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {"tz": "UTC"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"tz": "CET"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"time\":\"12:00\"}", "is_error": false},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "unknown zone", "is_error": true},
            ]},
        ])
    );
}

#[tokio::test]
async fn rate_limit_is_retryable_with_retry_after() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 429, "retry_after": 7, "message": "Number of requests has exceeded your rate limit"}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert!(error.is_retryable());
    assert_eq!(error.status, Some(429));
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        error.to_string(),
        "anthropic: rate limited (429): Number of requests has exceeded your rate limit"
    );
}

#[tokio::test]
async fn server_error_is_retryable() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 500}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Server);
    assert!(error.is_retryable());
}

#[tokio::test]
async fn overloaded_529_is_retryable() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 529, "message": "Overloaded"}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert!(error.is_retryable());
    assert_eq!(error.to_string(), "anthropic: overloaded (529): Overloaded");
}

#[tokio::test]
async fn wrong_api_key_is_a_fatal_auth_error_that_never_shows_the_key() {
    let server = server(Behaviour {
        require_api_key: Some("sk-ant-right".into()),
        ..Behaviour::default()
    })
    .await;
    let outcome = call(&provider(&server, Some("sk-ant-wrong")), &ask("hello")).await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Auth);
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "anthropic: authentication failed (401): mock: invalid API key"
    );
    assert!(!format!("{error:?}").contains("sk-ant-wrong"));
}

#[tokio::test]
async fn api_key_is_sent_as_x_api_key() {
    let server = server(Behaviour {
        require_api_key: Some("sk-ant-test".into()),
        ..Behaviour::default()
    })
    .await;
    let outcome = call(
        &provider(&server, Some("sk-ant-test")),
        &ask(r#"@mock {"text": "welcome"}"#),
    )
    .await;
    outcome.assert_complete();
    assert_eq!(outcome.text(), "welcome");
    let request = &server.requests()[0];
    assert_eq!(request.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(request.header("authorization"), None);
}

#[tokio::test]
async fn unknown_model_is_fatal() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 404, "message": "model: claude-9"}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::InvalidModel);
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "anthropic: model not found (404): model: claude-9"
    );
}

#[tokio::test]
async fn prompt_too_long_is_context_too_long() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 400, "message": "prompt is too long: 210000 tokens > 200000 maximum"}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::ContextTooLong);
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn cut_stream_is_a_connection_error_after_the_deltas_sent() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"text": "one two three four", "cut_after": 2}"#),
    )
    .await;
    assert_eq!(outcome.text(), "one two");
    assert_eq!(outcome.finish(), None);
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(error.is_retryable());
}

#[tokio::test]
async fn malformed_responses_are_invalid_responses_naming_the_provider() {
    let server = server(Behaviour::default()).await;
    let provider = provider(&server, None);
    for (kind, says) in [
        ("content_type", "got content type text/html"),
        ("json", "not the JSON we expect"),
        ("sse", "not server-sent events"),
    ] {
        let directive = format!(r#"@mock {{"malformed": "{kind}"}}"#);
        let outcome = call(&provider, &ask(&directive)).await;
        let error = outcome.error();
        assert_eq!(error.kind, ErrorKind::InvalidResponse, "{kind}: {error}");
        assert!(!error.is_retryable());
        let message = error.to_string();
        assert!(message.starts_with("anthropic: "), "{message}");
        assert!(message.contains(says), "{kind}: {message}");
        assert_eq!(outcome.finish(), None);
    }
}

#[tokio::test]
async fn slow_first_token_times_out() {
    let server = server(Behaviour::default()).await;
    let timeouts = StreamTimeouts {
        first_chunk: Duration::from_millis(200),
        idle: Duration::from_secs(60),
    };
    let outcome = call_with(
        &provider(&server, None),
        &ask(r#"@mock {"text": "slow", "ttft_ms": 30000}"#),
        timeouts,
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.is_retryable());
    assert!(outcome.events.is_empty());
}
