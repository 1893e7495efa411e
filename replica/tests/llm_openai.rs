//! The OpenAI provider against the mock LLM over real HTTP: streamed events,
//! the request it sends, and how every failure is classified.

mod llm_common;

use std::time::Duration;

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::llm::{
    ErrorKind, FinishReason, OpenAiProvider, Prompt, StreamEvent, StreamTimeouts,
};
use chatd_shared::parts::Part;
use llm_common::{
    MODEL, ask, assistant, call, call_with, get_time_tool, http, prompt, raw_http_server, server,
    tool_call, tool_result, user,
};
use serde_json::{Value, json};

fn provider(server: &MockLlm, api_key: Option<&str>) -> OpenAiProvider {
    OpenAiProvider::new("openai", &server.openai_base_url(), api_key, http())
        .expect("valid provider config")
}

/// The body of the only request the server received.
fn only_request_body(server: &MockLlm) -> Value {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "exactly one request, never a retry");
    assert_eq!(requests[0].path, "/v1/chat/completions");
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
    assert_eq!(usage.reasoning_tokens, Some(0));
    assert_eq!(
        usage.cache_read_tokens,
        Some(0),
        "a first message has no cache"
    );
}

#[tokio::test]
async fn reasoning_content_streams_before_the_text() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"thinking": "Let me think.", "text": "42"}"#),
    )
    .await;
    outcome.assert_complete();
    assert_eq!(outcome.reasoning(), "Let me think.");
    assert_eq!(outcome.text(), "42");
    let first_text = outcome
        .events
        .iter()
        .position(|event| matches!(event, StreamEvent::TextDelta(_)));
    let last_reasoning = outcome
        .events
        .iter()
        .rposition(|event| matches!(event, StreamEvent::ReasoningDelta(_)));
    assert!(last_reasoning < first_text, "{:?}", outcome.events);
    assert_eq!(
        outcome.signature(),
        None,
        "Chat Completions has no signature"
    );
    assert_eq!(outcome.usage().reasoning_tokens, Some(3));
}

#[tokio::test]
async fn a_tool_call_streams_id_name_and_argument_fragments() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(
            r#"@mock {"tool_calls": [{"name": "get_time", "id": "call_fixed", "args": {"tz": "Europe/Paris", "format": "24h"}}]}"#,
        ),
    )
    .await;
    outcome.assert_complete();
    let calls = outcome.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "call_fixed");
    assert_eq!(calls[0].name, "get_time");
    assert!(calls[0].fragments > 1, "arguments arrive in fragments");
    let args: Value = serde_json::from_str(&calls[0].args).expect("fragments join to JSON");
    assert_eq!(args, json!({"tz": "Europe/Paris", "format": "24h"}));
    assert_eq!(outcome.finish(), Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn parallel_tool_calls_keep_their_order_and_ids() {
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
    let calls = outcome.tool_calls();
    let names: Vec<&str> = calls.iter().map(|call| call.name.as_str()).collect();
    assert_eq!(names, ["get_time", "get_weather"]);
    assert!(calls.iter().all(|call| call.id.starts_with("call_")));
    assert_ne!(calls[0].id, calls[1].id);
    let args: Vec<Value> = calls
        .iter()
        .map(|call| serde_json::from_str(&call.args).expect("JSON arguments"))
        .collect();
    assert_eq!(args, [json!({"tz": "UTC"}), json!({"city": "Oslo"})]);
    assert_eq!(outcome.finish(), Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn request_has_system_prompt_tools_stream_options_and_options() {
    let server = server(Behaviour::default()).await;
    let prompt = Prompt {
        system: Some("You are terse.".into()),
        tools: vec![get_time_tool()],
        options: json!({"temperature": 0.5, "stream": false}),
        files: Default::default(),
        ..ask(r#"@mock {"text": "ok"}"#)
    };
    call(&provider(&server, None), &prompt)
        .await
        .assert_complete();

    let body = only_request_body(&server);
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], true, "options cannot turn streaming off");
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": r#"@mock {"text": "ok"}"#},
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "The current time in a time zone",
                "parameters": {
                    "type": "object",
                    "properties": {"tz": {"type": "string"}},
                    "required": ["tz"],
                },
            },
        }])
    );
    assert_eq!(
        server.requests()[0].header("authorization"),
        None,
        "no key configured, no Authorization header"
    );
}

#[tokio::test]
async fn multi_step_history_renders_tool_calls_and_tool_messages() {
    let server = server(Behaviour::default()).await;
    let directive = r#"@mock {"steps": [{"tool_calls": [{"name": "get_time"}]}, {"tool_calls": [{"name": "get_time"}]}, {"text": "It is noon."}]}"#;
    let history = prompt(vec![
        user(directive),
        assistant(vec![
            Part::Reasoning {
                text: "not sent back".into(),
                signature: None,
            },
            Part::text("Let me look."),
            tool_call("call_1", "get_time", json!({"tz": "UTC"})),
        ]),
        tool_result("call_1", "get_time", json!({"time": "12:00"}), false),
        assistant(vec![tool_call("call_2", "get_time", json!({}))]),
        tool_result("call_2", "get_time", json!("timeout"), true),
    ]);
    let outcome = call(&provider(&server, None), &history).await;
    outcome.assert_complete();
    assert_eq!(
        outcome.text(),
        "It is noon.",
        "the mock saw step 2 of the turn"
    );

    let body = only_request_body(&server);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": directive},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"UTC\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"time\":\"12:00\"}"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_2", "content": "timeout"},
        ])
    );
}

#[tokio::test]
async fn rate_limit_is_retryable_with_retry_after() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 429, "retry_after": 7, "message": "Rate limit reached for requests"}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert!(error.is_retryable());
    assert_eq!(error.status, Some(429));
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        error.to_string(),
        "openai: rate limited (429): Rate limit reached for requests"
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
    assert_eq!(
        error.to_string(),
        "openai: server error (500): mock: internal server error"
    );
}

#[tokio::test]
async fn wrong_api_key_is_a_fatal_auth_error_that_never_shows_the_key() {
    let server = server(Behaviour {
        require_api_key: Some("sk-right".into()),
        ..Behaviour::default()
    })
    .await;
    let outcome = call(&provider(&server, Some("sk-wrong")), &ask("hello")).await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Auth);
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "openai: authentication failed (401): mock: invalid API key"
    );
    assert!(!format!("{error:?}").contains("sk-wrong"));
}

#[tokio::test]
async fn api_key_is_sent_as_a_bearer_token() {
    let server = server(Behaviour {
        require_api_key: Some("sk-test".into()),
        ..Behaviour::default()
    })
    .await;
    let outcome = call(
        &provider(&server, Some("sk-test")),
        &ask(r#"@mock {"text": "welcome"}"#),
    )
    .await;
    outcome.assert_complete();
    assert_eq!(outcome.text(), "welcome");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer sk-test")
    );
}

#[tokio::test]
async fn unknown_model_is_fatal() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 404, "message": "The model `gpt-9` does not exist"}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::InvalidModel);
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "openai: model not found (404): The model `gpt-9` does not exist"
    );
}

#[tokio::test]
async fn context_length_400_is_context_too_long() {
    let server = server(Behaviour::default()).await;
    let outcome = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 400, "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."}}"#),
    )
    .await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::ContextTooLong);
    assert!(!error.is_retryable());

    let other = call(
        &provider(&server, None),
        &ask(r#"@mock {"error": {"status": 400, "message": "Invalid value for 'temperature'"}}"#),
    )
    .await;
    assert_eq!(other.error().kind, ErrorKind::BadRequest);
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
    assert!(
        error.message.starts_with("connection lost mid-stream"),
        "{error}"
    );
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
        assert!(message.starts_with("openai: "), "{message}");
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

#[tokio::test]
async fn unreachable_server_is_a_connection_error() {
    let server = server(Behaviour::default()).await;
    let base_url = server.openai_base_url();
    server.shutdown().await.expect("the mock stops");
    let provider = OpenAiProvider::new("openai", &base_url, None, http()).expect("valid config");
    let outcome = call(&provider, &ask("hello")).await;
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(
        error.message.starts_with("cannot reach the provider"),
        "{error}"
    );
}

#[tokio::test]
async fn stream_closed_without_done_is_a_connection_error_not_a_success() {
    let base_url = raw_http_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
          data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
          data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    )
    .await;
    let provider =
        OpenAiProvider::new("openai", &format!("{base_url}/v1"), None, http()).expect("config");
    let outcome = call(&provider, &ask("hello")).await;
    assert_eq!(outcome.text(), "Hi");
    assert_eq!(outcome.finish(), None);
    let error = outcome.error();
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        "openai: the stream ended before its end (data: [DONE])"
    );
}

#[tokio::test]
async fn event_stream_without_events_is_an_invalid_response() {
    let base_url = raw_http_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
          {\"id\": \"chatcmpl-1\", \"choices\": []}\n",
    )
    .await;
    let provider =
        OpenAiProvider::new("openai", &format!("{base_url}/v1"), None, http()).expect("config");
    let error = call(&provider, &ask("hello")).await.error().clone();
    assert_eq!(error.kind, ErrorKind::InvalidResponse);
    assert_eq!(
        error.to_string(),
        r#"openai: the response is not server-sent events (no event in it): "{\"id\": \"chatcmpl-1\", \"choices\": []}\n""#
    );
}
