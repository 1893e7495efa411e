//! The OpenAI Chat Completions wire format, over real HTTP.

mod common;

use common::{MODEL, Sse, content_type, json_body, openai_request, post_openai, read_sse, start};
use serde_json::{Value, json};

/// The `choices[0].delta` of every chunk that has a choice.
fn deltas(sse: &Sse) -> Vec<Value> {
    sse.json()
        .into_iter()
        .filter_map(|chunk| {
            chunk["choices"]
                .get(0)
                .map(|choice| choice["delta"].clone())
        })
        .collect()
}

fn concat(deltas: &[Value], field: &str) -> String {
    deltas
        .iter()
        .filter_map(|delta| delta[field].as_str())
        .collect()
}

#[tokio::test]
async fn streamed_text_is_the_directive_text_then_stop_then_done() {
    let server = start().await;
    let response = post_openai(
        &server,
        &openai_request(r#"@mock {"text": "Hello  brave new\nworld!"}"#, true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/event-stream");

    let sse = read_sse(response).await;
    assert_eq!(sse.error, None);
    assert_eq!(
        sse.events.last().map(|event| event.data.as_str()),
        Some("[DONE]")
    );
    let chunks = sse.json();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], MODEL);
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert!(
            chunk.get("usage").is_none(),
            "usage without include_usage: {chunk}"
        );
    }
    assert!(
        chunks[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );

    let deltas = deltas(&sse);
    assert_eq!(deltas[0]["role"], "assistant");
    assert!(deltas[1..].iter().all(|delta| delta.get("role").is_none()));
    assert_eq!(concat(&deltas, "content"), "Hello  brave new\nworld!");
    assert!(deltas.len() > 3, "text must arrive in several chunks");

    let finishes: Vec<_> = chunks
        .iter()
        .map(|chunk| chunk["choices"][0]["finish_reason"].clone())
        .collect();
    assert_eq!(finishes.last(), Some(&json!("stop")));
    assert!(finishes[..finishes.len() - 1].iter().all(Value::is_null));
}

#[tokio::test]
async fn include_usage_adds_one_usage_chunk_before_done() {
    let server = start().await;
    let mut request = openai_request(r#"@mock {"text": "one two three four"}"#, true);
    request["stream_options"] = json!({"include_usage": true});
    let sse = read_sse(post_openai(&server, &request).await).await;
    assert_eq!(sse.error, None);

    let chunks = sse.json();
    let (usage_chunk, others) = chunks.split_last().expect("chunks");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(
        others
            .iter()
            .all(|chunk| chunk["usage"].is_null() && chunk.get("usage").is_some())
    );
    let usage = &usage_chunk["usage"];
    assert_eq!(usage["completion_tokens"], 4);
    assert!(
        usage["prompt_tokens"]
            .as_u64()
            .is_some_and(|tokens| tokens > 0)
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap_or(0) + 4)
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(
        sse.events.last().map(|event| event.data.as_str()),
        Some("[DONE]")
    );
}

#[tokio::test]
async fn parallel_tool_calls_stream_with_indices_ids_and_argument_fragments() {
    let server = start().await;
    let directive = r#"@mock {"tool_calls": [
        {"name": "get_weather", "args": {"city": "Paris", "units": "metric", "days": [1, 2, 3]}},
        {"name": "get_time", "args": {"tz": "Europe/Paris"}},
        {"name": "noop", "id": "call_fixed"}
    ]}"#;
    let sse = read_sse(post_openai(&server, &openai_request(directive, true)).await).await;
    assert_eq!(sse.error, None);

    let mut calls: Vec<(Value, String, usize)> = Vec::new(); // (first delta, arguments, fragments)
    for delta in deltas(&sse) {
        let Some(tool_calls) = delta["tool_calls"].as_array() else {
            continue;
        };
        assert_eq!(tool_calls.len(), 1, "one call per chunk");
        let call = &tool_calls[0];
        let index = call["index"].as_u64().expect("index") as usize;
        if index == calls.len() {
            assert_eq!(call["type"], "function");
            assert_eq!(call["function"]["arguments"], "");
            calls.push((call.clone(), String::new(), 0));
        } else {
            assert_eq!(index, calls.len() - 1, "calls arrive in index order");
            assert!(call.get("id").is_none() && call["function"].get("name").is_none());
            let entry = &mut calls[index];
            entry
                .1
                .push_str(call["function"]["arguments"].as_str().expect("fragment"));
            entry.2 += 1;
        }
    }

    assert_eq!(calls.len(), 3);
    let names: Vec<_> = calls
        .iter()
        .map(|(first, _, _)| first["function"]["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("get_weather"), json!("get_time"), json!("noop")]
    );
    let ids: Vec<&str> = calls
        .iter()
        .map(|(first, _, _)| first["id"].as_str().expect("id"))
        .collect();
    assert!(ids[0].starts_with("call_") && ids[1].starts_with("call_"));
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids[2], "call_fixed");
    assert!(calls[0].2 > 1, "long arguments arrive in several fragments");
    let args: Vec<Value> = calls
        .iter()
        .map(|(_, text, _)| common::parse(text))
        .collect();
    assert_eq!(
        args,
        [
            json!({"city": "Paris", "units": "metric", "days": [1, 2, 3]}),
            json!({"tz": "Europe/Paris"}),
            json!({}),
        ]
    );

    let last_choice = sse
        .json()
        .into_iter()
        .filter_map(|chunk| chunk["choices"].get(0).cloned())
        .next_back()
        .expect("a choice");
    assert_eq!(last_choice["finish_reason"], "tool_calls");
    assert_eq!(
        concat(&deltas(&sse), "content"),
        "",
        "a tool-only step has no text"
    );
}

#[tokio::test]
async fn reasoning_streams_as_reasoning_content_before_the_text() {
    let server = start().await;
    let directive = r#"@mock {"thinking": "Six times seven.", "text": "42"}"#;
    let mut request = openai_request(directive, true);
    request["stream_options"] = json!({"include_usage": true});
    let sse = read_sse(post_openai(&server, &request).await).await;

    let deltas = deltas(&sse);
    assert_eq!(concat(&deltas, "reasoning_content"), "Six times seven.");
    assert_eq!(concat(&deltas, "content"), "42");
    let last_reasoning = deltas
        .iter()
        .rposition(|delta| delta.get("reasoning_content").is_some());
    let first_text = deltas.iter().position(|delta| {
        delta["content"]
            .as_str()
            .is_some_and(|text| !text.is_empty())
    });
    assert!(last_reasoning < first_text, "reasoning comes first");

    let chunks = sse.json();
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 3);
    assert_eq!(usage["completion_tokens"], 4);
}

#[tokio::test]
async fn non_streaming_answer_is_a_chat_completion() {
    let server = start().await;
    let response = post_openai(
        &server,
        &openai_request(r#"@mock {"thinking": "hm", "text": "Hi there"}"#, false),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    let body = json_body(response).await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hi there");
    assert_eq!(choice["message"]["reasoning_content"], "hm");
    assert!(choice["message"].get("tool_calls").is_none());
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        1
    );
}

#[tokio::test]
async fn non_streaming_tool_calls_carry_arguments_as_json_text() {
    let server = start().await;
    let directive = r#"@mock {"tool_calls": [{"name": "now", "args": {"tz": "UTC"}}]}"#;
    let body = json_body(post_openai(&server, &openai_request(directive, false)).await).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    let call = &message["tool_calls"][0];
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "now");
    let arguments = call["function"]["arguments"]
        .as_str()
        .expect("arguments are a string");
    assert_eq!(common::parse(arguments), json!({"tz": "UTC"}));
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn unscripted_reply_has_the_configured_number_of_words() {
    let server = common::start_with(chatd_mockllm::Behaviour {
        tokens: 7,
        ..chatd_mockllm::Behaviour::default()
    })
    .await;
    let sse =
        read_sse(post_openai(&server, &openai_request("tell me something", true)).await).await;
    let text = concat(&deltas(&sse), "content");
    assert_eq!(text.split(' ').count(), 7, "{text:?}");
}
