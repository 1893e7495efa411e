//! The Anthropic Messages wire format, over real HTTP.

mod common;

use common::{
    MODEL, Sse, anthropic_request, content_type, json_body, post_anthropic, read_sse, start,
};
use serde_json::{Value, json};

/// Every event's name must equal its data's `type`, as Anthropic sends them.
fn assert_names_match_types(sse: &Sse) {
    for (event, data) in sse.events.iter().zip(sse.json()) {
        assert_eq!(event.event, data["type"], "event {event:?}");
    }
}

/// The concatenated `field` of the deltas of type `delta_type` in block `index`.
fn block_deltas(sse: &Sse, index: u64, delta_type: &str, field: &str) -> String {
    sse.json()
        .iter()
        .filter(|data| data["type"] == "content_block_delta" && data["index"] == index)
        .filter(|data| data["delta"]["type"] == delta_type)
        .filter_map(|data| data["delta"][field].as_str().map(str::to_owned))
        .collect()
}

fn events_of_type(sse: &Sse, kind: &str) -> Vec<Value> {
    sse.json()
        .into_iter()
        .filter(|data| data["type"] == kind)
        .collect()
}

#[tokio::test]
async fn streamed_text_uses_named_events_in_anthropic_order() {
    let server = start().await;
    let response = post_anthropic(
        &server,
        &anthropic_request(r#"@mock {"text": "Hello brave new world"}"#, true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/event-stream");
    let sse = read_sse(response).await;
    assert_eq!(sse.error, None);
    assert_names_match_types(&sse);

    let names = sse.names();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"ping"));
    let deltas = names
        .iter()
        .filter(|name| **name == "content_block_delta")
        .count();
    assert_eq!(
        names
            .iter()
            .filter(|name| !matches!(**name, "ping" | "content_block_delta"))
            .collect::<Vec<_>>(),
        [
            &"message_start",
            &"content_block_start",
            &"content_block_stop",
            &"message_delta",
            &"message_stop"
        ]
    );
    assert_eq!(deltas, 4, "one delta per word");

    let start = &events_of_type(&sse, "message_start")[0]["message"];
    assert!(
        start["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_"))
    );
    assert_eq!(start["model"], MODEL);
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert!(
        start["usage"]["input_tokens"]
            .as_u64()
            .is_some_and(|tokens| tokens > 0)
    );
    assert_eq!(start["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(start["usage"]["cache_creation_input_tokens"], 0);

    let block = &events_of_type(&sse, "content_block_start")[0];
    assert_eq!(block["index"], 0);
    assert_eq!(block["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(
        block_deltas(&sse, 0, "text_delta", "text"),
        "Hello brave new world"
    );

    let message_delta = &events_of_type(&sse, "message_delta")[0];
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(message_delta["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn thinking_block_ends_with_a_signature_before_the_text_block() {
    let server = start().await;
    let directive = r#"@mock {"thinking": "Let me think about it.", "text": "Yes."}"#;
    let sse = read_sse(post_anthropic(&server, &anthropic_request(directive, true)).await).await;
    assert_eq!(sse.error, None);
    assert_names_match_types(&sse);

    let starts = events_of_type(&sse, "content_block_start");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["index"], 0);
    assert_eq!(starts[0]["content_block"]["type"], "thinking");
    assert_eq!(starts[1]["index"], 1);
    assert_eq!(starts[1]["content_block"]["type"], "text");

    assert_eq!(
        block_deltas(&sse, 0, "thinking_delta", "thinking"),
        "Let me think about it."
    );
    let block_zero: Vec<Value> = sse
        .json()
        .into_iter()
        .filter(|data| data["type"] == "content_block_delta" && data["index"] == 0)
        .collect();
    let last = block_zero.last().expect("thinking deltas");
    assert_eq!(last["delta"]["type"], "signature_delta");
    assert!(
        last["delta"]["signature"]
            .as_str()
            .is_some_and(|signature| !signature.is_empty())
    );
    assert_eq!(block_deltas(&sse, 1, "text_delta", "text"), "Yes.");

    let stops: Vec<_> = events_of_type(&sse, "content_block_stop")
        .iter()
        .map(|data| data["index"].clone())
        .collect();
    assert_eq!(stops, [json!(0), json!(1)]);
}

#[tokio::test]
async fn tool_use_streams_input_as_partial_json() {
    let server = start().await;
    let directive = r#"@mock {"text": "Checking.", "tool_calls": [
        {"name": "get_weather", "args": {"city": "Paris", "units": "metric"}},
        {"name": "get_time", "args": {}}
    ]}"#;
    let sse = read_sse(post_anthropic(&server, &anthropic_request(directive, true)).await).await;
    assert_eq!(sse.error, None);
    assert_names_match_types(&sse);

    let starts = events_of_type(&sse, "content_block_start");
    let blocks: Vec<_> = starts
        .iter()
        .map(|data| data["content_block"].clone())
        .collect();
    assert_eq!(blocks[0]["type"], "text");
    for (block, name) in blocks[1..].iter().zip(["get_weather", "get_time"]) {
        assert_eq!(block["type"], "tool_use");
        assert_eq!(block["name"], name);
        assert_eq!(block["input"], json!({}));
        assert!(
            block["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("toolu_"))
        );
    }
    assert_ne!(blocks[1]["id"], blocks[2]["id"]);

    let weather = block_deltas(&sse, 1, "input_json_delta", "partial_json");
    assert_eq!(
        common::parse(&weather),
        json!({"city": "Paris", "units": "metric"})
    );
    assert_eq!(
        common::parse(&block_deltas(&sse, 2, "input_json_delta", "partial_json")),
        json!({})
    );

    let message_delta = &events_of_type(&sse, "message_delta")[0];
    assert_eq!(message_delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn non_streaming_answer_is_a_message() {
    let server = start().await;
    let directive = r#"@mock {"thinking": "hm", "text": "Sure.", "tool_calls": [{"name": "now", "args": {"tz": "UTC"}}]}"#;
    let response = post_anthropic(&server, &anthropic_request(directive, false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    let body = json_body(response).await;
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], MODEL);
    let content = body["content"].as_array().expect("content");
    assert_eq!(content[0]["type"], "thinking");
    assert_eq!(content[0]["thinking"], "hm");
    assert!(
        content[0]["signature"]
            .as_str()
            .is_some_and(|signature| !signature.is_empty())
    );
    assert_eq!(content[1], json!({"type": "text", "text": "Sure."}));
    assert_eq!(content[2]["type"], "tool_use");
    assert_eq!(content[2]["input"], json!({"tz": "UTC"}));
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["usage"]["output_tokens"], 2 + 2);
}

#[tokio::test]
async fn errors_use_anthropic_types_and_statuses() {
    let server = start().await;
    for (status, kind) in [
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
        (401, "authentication_error"),
        (400, "invalid_request_error"),
        (404, "not_found_error"),
    ] {
        let directive =
            format!(r#"@mock {{"error": {{"status": {status}, "message": "scripted"}}}}"#);
        let response = post_anthropic(&server, &anthropic_request(&directive, true)).await;
        assert_eq!(response.status().as_u16(), status);
        let retry_after = response.headers().get("retry-after").cloned();
        assert_eq!(
            retry_after.is_some(),
            status == 429,
            "retry-after on {status}"
        );
        let body = json_body(response).await;
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": kind, "message": "scripted"}})
        );
    }
}
