//! Scripted behaviour over real HTTP: step selection across tool round trips,
//! counted failures, cuts and malformed responses.

mod common;

use common::{
    anthropic_request, content_type, json_body, openai_request, post_anthropic, post_openai,
    read_sse, start,
};
use serde_json::{Value, json};

const TOOL_LOOP: &str = r#"@mock {"steps": [
    {"tool_calls": [{"name": "get_time", "args": {"tz": "UTC"}}]},
    {"text": "It is noon."}
]}"#;

#[tokio::test]
async fn openai_second_call_with_the_tool_result_gets_step_one() {
    let server = start().await;
    let mut request = openai_request(TOOL_LOOP, false);
    request["tools"] =
        json!([{"type": "function", "function": {"name": "get_time", "parameters": {}}}]);

    let first = json_body(post_openai(&server, &request).await).await;
    let message = first["choices"][0]["message"].clone();
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let call_id = message["tool_calls"][0]["id"].clone();

    let messages = request["messages"].as_array_mut().expect("messages");
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "12:00"}));
    let second = json_body(post_openai(&server, &request).await).await;
    assert_eq!(second["choices"][0]["message"]["content"], "It is noon.");
    assert_eq!(second["choices"][0]["finish_reason"], "stop");
    // The prompt cache holds everything before the tool result.
    assert!(second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() > Some(0));

    let messages = request["messages"].as_array_mut().expect("messages");
    messages.push(second["choices"][0]["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "again"}));
    let past_end = json_body(post_openai(&server, &request).await).await;
    assert_eq!(
        past_end["choices"][0]["finish_reason"], "stop",
        "a scripted loop ends"
    );
    assert_ne!(past_end["choices"][0]["message"]["content"], "It is noon.");
}

#[tokio::test]
async fn anthropic_tool_result_in_a_user_message_still_gets_step_one() {
    let server = start().await;
    let mut request = anthropic_request(TOOL_LOOP, false);
    let first = json_body(post_anthropic(&server, &request).await).await;
    assert_eq!(first["stop_reason"], "tool_use");
    let tool_use_id = first["content"][0]["id"].clone();

    let messages = request["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool_use_id, "content": "12:00"}
    ]}));
    let second = json_body(post_anthropic(&server, &request).await).await;
    assert_eq!(
        second["content"],
        json!([{"type": "text", "text": "It is noon."}])
    );
    assert_eq!(second["stop_reason"], "end_turn");
}

#[tokio::test]
async fn error_with_times_fails_that_many_attempts_then_succeeds() {
    let server = start().await;
    let request = openai_request(
        r#"@mock {"error": {"status": 429, "retry_after": 3, "times": 2}, "text": "finally"}"#,
        false,
    );
    for attempt in 0..2 {
        let response = post_openai(&server, &request).await;
        assert_eq!(response.status(), 429, "attempt {attempt}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()),
            Some("3")
        );
        let body = json_body(response).await;
        assert_eq!(body["error"]["type"], "requests");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert!(body["error"]["message"].is_string());
    }
    let response = post_openai(&server, &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json_body(response).await["choices"][0]["message"]["content"],
        "finally"
    );
}

#[tokio::test]
async fn openai_500_is_a_server_error() {
    let server = start().await;
    let response = post_openai(
        &server,
        &openai_request(r#"@mock {"error": {"status": 500}}"#, true),
    )
    .await;
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(json_body(response).await["error"]["type"], "server_error");
}

#[tokio::test]
async fn openai_cut_ends_the_body_without_finish_or_done() {
    let server = start().await;
    let request = openai_request(
        r#"@mock {"text": "one two three four five", "cut_after": 2, "cut_times": 1}"#,
        true,
    );
    let sse = read_sse(post_openai(&server, &request).await).await;
    assert!(
        sse.error.is_some(),
        "the connection must drop, not end cleanly"
    );
    assert!(sse.events.iter().all(|event| event.data != "[DONE]"));
    let chunks = sse.json();
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "one two");
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["choices"][0]["finish_reason"].is_null())
    );

    // cut_times: 1, so the retry of the same request completes.
    let retry = read_sse(post_openai(&server, &request).await).await;
    assert_eq!(retry.error, None);
    assert_eq!(
        retry.events.last().map(|event| event.data.as_str()),
        Some("[DONE]")
    );
}

#[tokio::test]
async fn anthropic_cut_ends_the_body_without_message_stop() {
    let server = start().await;
    let request = anthropic_request(r#"@mock {"text": "one two three", "cut_after": 1}"#, true);
    let sse = read_sse(post_anthropic(&server, &request).await).await;
    assert!(sse.error.is_some());
    let names = sse.names();
    assert_eq!(names.first(), Some(&"message_start"));
    assert!(!names.contains(&"message_delta") && !names.contains(&"message_stop"));
    assert_eq!(
        names
            .iter()
            .filter(|name| **name == "content_block_delta")
            .count(),
        1
    );
}

#[tokio::test]
async fn cut_non_streaming_reply_drops_the_connection_mid_body() {
    let server = start().await;
    let response = post_openai(
        &server,
        &openai_request(r#"@mock {"text": "a b c", "cut_after": 0}"#, false),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn malformed_content_type_is_an_html_page() {
    let server = start().await;
    let response = post_openai(
        &server,
        &openai_request(r#"@mock {"malformed": "content_type"}"#, true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/html"));
    let body = response.text().await.expect("body");
    assert!(body.contains("<html>"));
}

#[tokio::test]
async fn malformed_json_is_an_event_stream_with_a_chunk_that_is_not_json() {
    let server = start().await;
    for response in [
        post_openai(
            &server,
            &openai_request(r#"@mock {"malformed": "json"}"#, true),
        )
        .await,
        post_anthropic(
            &server,
            &anthropic_request(r#"@mock {"malformed": "json"}"#, true),
        )
        .await,
    ] {
        assert_eq!(content_type(&response), "text/event-stream");
        let sse = read_sse(response).await;
        assert_eq!(sse.error, None, "the stream itself is well framed");
        let invalid = sse
            .events
            .iter()
            .filter(|event| event.data != "[DONE]")
            .filter(|event| serde_json::from_str::<Value>(&event.data).is_err())
            .count();
        assert_eq!(invalid, 1, "{:?}", sse.events);
    }
    let response = post_openai(
        &server,
        &openai_request(r#"@mock {"malformed": "json"}"#, false),
    )
    .await;
    assert_eq!(content_type(&response), "application/json");
    assert!(response.json::<Value>().await.is_err());
}

#[tokio::test]
async fn malformed_sse_is_not_an_event_stream() {
    let server = start().await;
    let response = post_anthropic(
        &server,
        &anthropic_request(r#"@mock {"malformed": "sse"}"#, true),
    )
    .await;
    assert_eq!(content_type(&response), "text/event-stream");
    let body = response.bytes().await.expect("body");
    assert!(!body.windows(5).any(|window| window == b"data:"));
    assert!(std::str::from_utf8(&body).is_err(), "garbage, not text");
}

#[tokio::test]
async fn malformed_times_breaks_only_the_first_attempts() {
    let server = start().await;
    let request = anthropic_request(
        r#"@mock {"malformed": "content_type", "malformed_times": 1, "text": "ok"}"#,
        false,
    );
    let broken = post_anthropic(&server, &request).await;
    assert!(content_type(&broken).starts_with("text/html"));
    let body = json_body(post_anthropic(&server, &request).await).await;
    assert_eq!(body["content"][0]["text"], "ok");
}

#[tokio::test]
async fn invalid_directive_is_a_400_naming_the_problem() {
    let server = start().await;
    let response = post_openai(&server, &openai_request(r#"@mock {"txet": "typo"}"#, true)).await;
    assert_eq!(response.status(), 400);
    let body = json_body(response).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("txet"), "{message}");
}
