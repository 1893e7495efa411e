//! The server itself: health, API keys, bad bodies, determinism, recording
//! and shutdown.

mod common;

use std::time::Duration;

use chatd_mockllm::{Api, Behaviour, MockLlm};
use common::{
    anthropic_request, json_body, openai_request, post_anthropic, post_openai, send, start,
    start_with,
};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn healthz_is_ok() {
    let server = start().await;
    let response = send(reqwest::Client::new().get(format!("{}/healthz", server.url()))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn base_urls_follow_each_sdk_convention() {
    let server = start().await;
    assert_eq!(server.url(), format!("http://{}", server.addr()));
    assert_eq!(server.openai_base_url(), format!("{}/v1", server.url()));
    assert_eq!(server.anthropic_base_url(), server.url());
}

#[tokio::test]
async fn openai_requires_the_bearer_key_when_configured() {
    let server = start_with(Behaviour {
        require_api_key: Some("sk-mock".into()),
        ..Behaviour::default()
    })
    .await;
    let url = format!("{}/chat/completions", server.openai_base_url());
    let body = openai_request("hi", false);
    let client = reqwest::Client::new();

    for key in [None, Some("wrong")] {
        let mut request = client.post(&url).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = send(request).await;
        assert_eq!(response.status(), 401);
        let error = json_body(response).await;
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["code"], "invalid_api_key");
    }
    let response = send(client.post(&url).bearer_auth("sk-mock").json(&body)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn anthropic_requires_the_x_api_key_when_configured() {
    let server = start_with(Behaviour {
        require_api_key: Some("sk-ant-mock".into()),
        ..Behaviour::default()
    })
    .await;
    let url = format!("{}/v1/messages", server.anthropic_base_url());
    let body = anthropic_request("hi", false);
    let client = reqwest::Client::new();

    // A bearer token is the OpenAI convention, not Anthropic's.
    let response = send(client.post(&url).bearer_auth("sk-ant-mock").json(&body)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        json_body(response).await["error"]["type"],
        "authentication_error"
    );
    let response = send(
        client
            .post(&url)
            .header("x-api-key", "sk-ant-mock")
            .json(&body),
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn garbage_bodies_are_400s_in_each_provider_shape() {
    let server = start().await;
    let client = reqwest::Client::new();
    let openai = send(
        client
            .post(format!("{}/chat/completions", server.openai_base_url()))
            .body("{not json"),
    )
    .await;
    assert_eq!(openai.status(), 400);
    let body = json_body(openai).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].is_string());

    let anthropic = send(
        client
            .post(format!("{}/v1/messages", server.anthropic_base_url()))
            .body(vec![0xff, 0x00, 0x13]),
    )
    .await;
    assert_eq!(anthropic.status(), 400);
    let body = json_body(anthropic).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn missing_required_fields_are_400s_that_name_the_field() {
    let server = start().await;
    let no_max_tokens = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_anthropic(&server, &no_max_tokens).await;
    assert_eq!(response.status(), 400);
    let message = json_body(response).await["error"]["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|text| text.contains("max_tokens")),
        "{message}"
    );

    let no_messages = json!({"model": "m", "messages": []});
    assert_eq!(post_openai(&server, &no_messages).await.status(), 400);
}

/// The raw bytes of a streamed answer to `text` in `api`'s format.
async fn streamed_body(server: &MockLlm, api: Api, text: &str) -> bytes::Bytes {
    let response = match api {
        Api::OpenAi => post_openai(server, &openai_request(text, true)).await,
        Api::Anthropic => post_anthropic(server, &anthropic_request(text, true)).await,
    };
    response.bytes().await.expect("body")
}

#[tokio::test]
async fn same_seed_and_request_give_identical_bodies_across_servers() {
    let seeded = |seed| Behaviour {
        seed,
        tool_call_probability: 0.5,
        ..Behaviour::default()
    };
    let first = start_with(seeded(42)).await;
    let second = start_with(seeded(42)).await;
    let other_seed = start_with(seeded(43)).await;

    for api in [Api::OpenAi, Api::Anthropic] {
        let body = streamed_body(&first, api, "write me a poem").await;
        assert_eq!(
            body,
            streamed_body(&first, api, "write me a poem").await,
            "same server"
        );
        assert_eq!(
            body,
            streamed_body(&second, api, "write me a poem").await,
            "same seed"
        );
        assert_ne!(
            body,
            streamed_body(&other_seed, api, "write me a poem").await,
            "other seed"
        );
        assert_ne!(
            body,
            streamed_body(&first, api, "write me a song").await,
            "other request"
        );
    }
}

#[tokio::test]
async fn requests_are_recorded_with_path_headers_and_body() {
    let server = start().await;
    let openai_body = openai_request("first", true);
    send(
        reqwest::Client::new()
            .post(format!("{}/chat/completions", server.openai_base_url()))
            .bearer_auth("sk-test")
            .json(&openai_body),
    )
    .await;
    post_anthropic(&server, &anthropic_request("second", false)).await;
    send(
        reqwest::Client::new()
            .post(format!("{}/v1/messages", server.anthropic_base_url()))
            .body("garbage"),
    )
    .await;

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].api, Api::OpenAi);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(requests[0].body.as_ref(), Some(&openai_body));
    assert_eq!(requests[1].api, Api::Anthropic);
    assert_eq!(requests[1].path, "/v1/messages");
    assert_eq!(requests[1].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        requests[1]
            .body
            .as_ref()
            .map(|body| body["messages"][0]["content"].clone()),
        Some(json!("second"))
    );
    assert_eq!(requests[2].body, None);

    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn graceful_shutdown_stops_listening() {
    let server = start().await;
    let url = format!("{}/healthz", server.url());
    server.shutdown().await.expect("clean shutdown");
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn dropping_the_server_cuts_in_flight_streams() {
    let server = start().await;
    let request = openai_request(
        r#"@mock {"text": "slow words here", "token_delay_ms": 600000}"#,
        true,
    );
    let response = post_openai(&server, &request).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk");
    assert!(first.is_ok());

    drop(server);
    // A deadline, not a synchronisation: without the cut this waits ten minutes.
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        let mut outcome = Ok(());
        while let Some(chunk) = body.next().await {
            if let Err(error) = chunk {
                outcome = Err(error);
                break;
            }
        }
        outcome
    })
    .await
    .expect("the stream ends promptly");
    assert!(rest.is_err(), "the stream is cut, not finished");
}
