//! The in-process `mock` provider: the same scripts give the same events and
//! errors as the HTTP providers against the mock LLM server, with the
//! script's pacing.

mod llm_common;

use std::time::Duration;

use chatd_mockllm::Behaviour;
use chatd_replica::llm::{
    ErrorKind, FinishReason, MockProvider, OpenAiProvider, Prompt, StreamEvent, StreamTimeouts,
    build,
};
use chatd_shared::{db::providers::Provider as ProviderRow, ids::ProviderId, status::ProviderKind};
use llm_common::{Outcome, ask, call, call_with, get_time_tool, http, server};
use tokio::time::Instant;

fn mock() -> MockProvider {
    MockProvider::from_url("mock", "mock://").expect("default settings")
}

/// The events, without reasoning signatures (Chat Completions has none).
fn unsigned(outcome: &Outcome) -> Vec<StreamEvent> {
    outcome
        .events
        .iter()
        .filter(|event| !matches!(event, StreamEvent::ReasoningSignature(_)))
        .cloned()
        .collect()
}

#[tokio::test]
async fn same_script_same_events_as_the_openai_provider() {
    let server = server(Behaviour::default()).await;
    let openai = OpenAiProvider::new("openai", &server.openai_base_url(), None, http())
        .expect("valid provider config");
    let scripted = Prompt {
        tools: vec![get_time_tool()],
        ..ask(
            r#"@mock {"thinking": "Two calls.", "text": "On it.", "tool_calls": [{"name": "get_time", "args": {"tz": "UTC"}}, {"name": "get_weather", "args": {"city": "Oslo"}}]}"#,
        )
    };
    for prompt in [scripted, ask("no directive: random words")] {
        let over_http = call(&openai, &prompt).await;
        let in_process = call(&mock(), &prompt).await;
        over_http.assert_complete();
        in_process.assert_complete();
        assert_eq!(unsigned(&in_process), unsigned(&over_http));
    }
    let signed = call(&mock(), &ask(r#"@mock {"thinking": "Hmm."}"#)).await;
    assert!(signed.signature().is_some(), "{:?}", signed.events);
}

#[tokio::test]
async fn failures_are_classified_like_http_responses() {
    let cases = [
        (
            r#"{"error": {"status": 429, "retry_after": 3}}"#,
            ErrorKind::RateLimited,
            Some(3),
        ),
        (
            r#"{"error": {"status": 429}}"#,
            ErrorKind::RateLimited,
            Some(1),
        ),
        (r#"{"error": {"status": 500}}"#, ErrorKind::Server, None),
        (r#"{"error": {"status": 503}}"#, ErrorKind::Server, None),
        (r#"{"error": {"status": 529}}"#, ErrorKind::Overloaded, None),
        (r#"{"error": {"status": 401}}"#, ErrorKind::Auth, None),
        (r#"{"error": {"status": 403}}"#, ErrorKind::Auth, None),
        (
            r#"{"error": {"status": 404}}"#,
            ErrorKind::InvalidModel,
            None,
        ),
        (
            r#"{"error": {"status": 400, "message": "maximum context length exceeded"}}"#,
            ErrorKind::ContextTooLong,
            None,
        ),
        (r#"{"error": {"status": 400}}"#, ErrorKind::BadRequest, None),
        (r#"{"error": {"status": 422}}"#, ErrorKind::BadRequest, None),
    ];
    let provider = mock();
    for (directive, kind, retry_after) in cases {
        let outcome = call(&provider, &ask(&format!("@mock {directive}"))).await;
        let error = outcome.error();
        assert_eq!(error.kind, kind, "{directive}: {error}");
        assert_eq!(
            error.retry_after,
            retry_after.map(Duration::from_secs),
            "{directive}"
        );
        assert!(error.status.is_some(), "{directive}");
        assert!(error.to_string().starts_with("mock: "), "{error}");
    }
}

#[tokio::test]
async fn cuts_and_malformed_responses_fail_like_http_ones() {
    let provider = mock();
    let cut = call(
        &provider,
        &ask(r#"@mock {"text": "one two three four", "cut_after": 2}"#),
    )
    .await;
    assert_eq!(cut.text(), "one two");
    assert_eq!(cut.error().kind, ErrorKind::Connection);
    assert_eq!(cut.finish(), None);

    for kind in ["content_type", "json", "sse"] {
        let outcome = call(
            &provider,
            &ask(&format!(r#"@mock {{"malformed": "{kind}"}}"#)),
        )
        .await;
        let error = outcome.error();
        assert_eq!(error.kind, ErrorKind::InvalidResponse, "{kind}");
        assert!(error.to_string().starts_with("mock: "), "{error}");
    }
}

#[tokio::test]
async fn failures_with_times_are_counted_across_calls() {
    let provider = mock();
    let prompt = ask(r#"@mock {"error": {"status": 503, "times": 1}, "text": "recovered"}"#);
    assert_eq!(
        call(&provider, &prompt).await.error().kind,
        ErrorKind::Server
    );
    let retry = call(&provider, &prompt).await;
    retry.assert_complete();
    assert_eq!(retry.text(), "recovered");
}

#[tokio::test(start_paused = true)]
async fn replies_follow_the_scripts_pacing() {
    let started = Instant::now();
    let outcome = call(
        &mock(),
        &ask(r#"@mock {"text": "a b c", "ttft_ms": 500, "token_delay_ms": 100}"#),
    )
    .await;
    outcome.assert_complete();
    assert_eq!(outcome.text(), "a b c");
    assert_eq!(started.elapsed(), Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn slow_first_token_times_out() {
    let timeouts = StreamTimeouts {
        first_chunk: Duration::from_secs(1),
        idle: Duration::from_secs(60),
    };
    let started = Instant::now();
    let outcome = call_with(
        &mock(),
        &ask(r#"@mock {"text": "slow", "ttft_ms": 10000}"#),
        timeouts,
    )
    .await;
    assert_eq!(outcome.error().kind, ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test]
async fn a_mock_row_builds_a_provider_with_its_settings() {
    let row = ProviderRow {
        id: ProviderId::new_random(),
        name: "dev-mock".into(),
        kind: ProviderKind::Mock,
        base_url: "mock://?tokens=3&seed=7".into(),
        api_key: None,
        api_key_env: None,
        enabled: true,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    let provider = build(&row, &http()).expect("valid mock row");
    assert_eq!(provider.name(), "dev-mock");
    let outcome = call(provider.as_ref(), &ask("hello")).await;
    outcome.assert_complete();
    assert_eq!(outcome.text_deltas(), 3);
    assert_eq!(outcome.finish(), Some(FinishReason::Stop));
}
