//! Helpers shared by the integration tests: a server per test, requests in
//! each wire format, and an SSE reader that keeps transport errors.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use chatd_mockllm::{Behaviour, MockLlm};
use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use serde_json::{Value, json};

/// The model name every test request uses; responses echo it.
pub const MODEL: &str = "mock-model";

/// A server with default behaviour on a free loopback port.
pub async fn start() -> MockLlm {
    start_with(Behaviour::default()).await
}

/// A server with `behaviour` on a free loopback port.
pub async fn start_with(behaviour: Behaviour) -> MockLlm {
    match MockLlm::start(behaviour).await {
        Ok(server) => server,
        Err(error) => panic!("cannot start the mock LLM: {error:?}"),
    }
}

/// An OpenAI request with one user message.
pub fn openai_request(text: &str, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    })
}

/// An Anthropic request with one user message.
pub fn anthropic_request(text: &str, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    })
}

/// POSTs `body` to the OpenAI endpoint.
pub async fn post_openai(server: &MockLlm, body: &Value) -> reqwest::Response {
    send(
        reqwest::Client::new()
            .post(format!("{}/chat/completions", server.openai_base_url()))
            .json(body),
    )
    .await
}

/// POSTs `body` to the Anthropic endpoint with the headers Anthropic requires.
pub async fn post_anthropic(server: &MockLlm, body: &Value) -> reqwest::Response {
    send(
        reqwest::Client::new()
            .post(format!("{}/v1/messages", server.anthropic_base_url()))
            .header("anthropic-version", "2023-06-01")
            .json(body),
    )
    .await
}

/// Sends a request, failing the test on a transport error.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    match request.send().await {
        Ok(response) => response,
        Err(error) => panic!("request failed: {error:?}"),
    }
}

/// The JSON body of a response.
pub async fn json_body(response: reqwest::Response) -> Value {
    match response.json().await {
        Ok(body) => body,
        Err(error) => panic!("body is not JSON: {error:?}"),
    }
}

/// A response's `Content-Type`.
pub fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A server-sent event stream read to its end.
#[derive(Debug)]
pub struct Sse {
    /// The events, in order.
    pub events: Vec<Event>,
    /// The error that ended the stream, if it did not end cleanly.
    pub error: Option<String>,
}

impl Sse {
    /// The `data` of every event parsed as JSON, except OpenAI's `[DONE]`.
    pub fn json(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|event| event.data != "[DONE]")
            .map(|event| parse(&event.data))
            .collect()
    }

    /// The event names (`message` for unnamed events).
    pub fn names(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|event| event.event.as_str())
            .collect()
    }
}

/// Reads a response as server-sent events until the body ends or fails.
pub async fn read_sse(response: reqwest::Response) -> Sse {
    let mut stream = response.bytes_stream().eventsource();
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => {
                return Sse {
                    events,
                    error: Some(error.to_string()),
                };
            }
        }
    }
    Sse {
        events,
        error: None,
    }
}

/// Parses JSON text, failing the test when it is not JSON.
pub fn parse(text: &str) -> Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}): {text}"),
    }
}
