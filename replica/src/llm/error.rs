//! Classifying failures into [`ProviderError`]s, the same way for every
//! provider: HTTP statuses and error bodies, error events in a stream,
//! transport errors, and responses we cannot read.
//!
//! Messages never contain an API key: they are built from statuses, the
//! provider's own error text and excerpts of the response body, none of
//! which carries the request's headers.

use std::{fmt, time::Duration};

use chatd_shared::error_chain::Chain;
use chrono::{DateTime, Utc};
use reqwest::{
    StatusCode,
    header::{self, HeaderMap},
};
use serde_json::Value;

use super::{ErrorKind, ProviderError};

/// How much of an error response's body is read: enough for any provider's
/// error JSON, bounded so a misbehaving server cannot make us buffer a lot.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Characters of offending data quoted in a message.
const EXCERPT_CHARS: usize = 120;

impl ProviderError {
    /// An error without HTTP status or `Retry-After`.
    pub(crate) fn new(provider: &str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            provider: provider.to_owned(),
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// What a provider's error body says. Understands OpenAI's
/// `{"error": {"message", "type", "code"}}`, Anthropic's
/// `{"type": "error", "error": {"type", "message"}}` and what compatible
/// servers send instead (`{"error": "…"}`, `{"message": "…"}`, `{"detail": "…"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// The error's `type` (`rate_limit_error`, `overloaded_error`, …).
    pub(crate) kind: Option<String>,
    /// OpenAI's `code` (`model_not_found`, `context_length_exceeded`, …).
    pub(crate) code: Option<String>,
    /// The provider's human-readable message.
    pub(crate) message: Option<String>,
}

impl ErrorBody {
    /// Reads an error body; anything that is not JSON gives an empty one.
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice::<Value>(body)
            .map(|value| Self::from_value(&value))
            .unwrap_or_default()
    }

    /// Reads an error from JSON already parsed (an error event's data).
    pub(crate) fn from_value(value: &Value) -> Self {
        let error = match value.get("error") {
            Some(Value::String(message)) => {
                return Self {
                    message: Some(message.clone()),
                    ..Self::default()
                };
            }
            Some(error @ Value::Object(_)) => error,
            _ => value,
        };
        let text = |field: &str| match error.get(field) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        Self {
            kind: text("type").filter(|kind| kind != "error"),
            code: text("code"),
            message: text("message").or_else(|| text("detail")),
        }
    }

    /// Whether the type or code is `name`.
    fn is(&self, name: &str) -> bool {
        self.kind.as_deref() == Some(name) || self.code.as_deref() == Some(name)
    }

    /// Whether the error says the prompt does not fit the context window.
    fn says_context_too_long(&self) -> bool {
        const PHRASES: [&str; 5] = [
            "prompt is too long",
            "maximum context length",
            "context length",
            "context window",
            "too many input tokens",
        ];
        if self.is("context_length_exceeded") {
            return true;
        }
        let Some(message) = &self.message else {
            return false;
        };
        let message = message.to_lowercase();
        PHRASES.iter().any(|phrase| message.contains(phrase))
    }
}

/// The kind of an HTTP error response (`status` set) or of an error event
/// in a stream (`status` is `None`).
pub(crate) fn classify(status: Option<u16>, body: &ErrorBody) -> ErrorKind {
    match status {
        Some(429) => ErrorKind::RateLimited,
        Some(529) => ErrorKind::Overloaded,
        // The server gave up waiting for our request: worth another try.
        Some(408) => ErrorKind::Timeout,
        _ if body.is("overloaded_error") => ErrorKind::Overloaded,
        Some(500..=599) => ErrorKind::Server,
        Some(401 | 403) => ErrorKind::Auth,
        Some(404) => ErrorKind::InvalidModel,
        _ if body.is("model_not_found") => ErrorKind::InvalidModel,
        Some(400 | 413) | None if body.says_context_too_long() => ErrorKind::ContextTooLong,
        Some(400..=499) => ErrorKind::BadRequest,
        Some(_) => ErrorKind::InvalidResponse,
        None => classify_event(body),
    }
}

/// An error event mid-stream has no status, only a type. The request was
/// accepted, so an error we do not recognise is most likely transient.
fn classify_event(body: &ErrorBody) -> ErrorKind {
    if body.is("rate_limit_error") || body.is("rate_limit_exceeded") {
        ErrorKind::RateLimited
    } else if body.is("authentication_error")
        || body.is("permission_error")
        || body.is("invalid_api_key")
    {
        ErrorKind::Auth
    } else if body.is("not_found_error") {
        ErrorKind::InvalidModel
    } else if body.is("invalid_request_error") || body.is("request_too_large") {
        ErrorKind::BadRequest
    } else {
        ErrorKind::Server
    }
}

/// How a message describes a failure of `kind`.
fn describe(kind: ErrorKind, status: Option<u16>) -> &'static str {
    match (kind, status) {
        (ErrorKind::RateLimited, _) => "rate limited",
        (ErrorKind::Overloaded, _) => "overloaded",
        (ErrorKind::Server, _) => "server error",
        (ErrorKind::Auth, Some(403)) => "permission denied",
        (ErrorKind::Auth, _) => "authentication failed",
        (ErrorKind::InvalidModel, _) => "model not found",
        (ErrorKind::ContextTooLong, _) => "prompt too long for the model's context window",
        (ErrorKind::BadRequest, _) => "request rejected",
        (ErrorKind::InvalidResponse, _) => "unexpected response status",
        (ErrorKind::Timeout, _) => "timed out",
        (ErrorKind::Connection, _) => "connection failed",
    }
}

/// The error for an HTTP error response: `rate limited (429): <the
/// provider's message>`. Without a message in the body, an excerpt of the
/// body (or the status's reason phrase) stands in.
pub(crate) fn status_error(
    provider: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> ProviderError {
    let parsed = ErrorBody::parse(body);
    let kind = classify(Some(status), &parsed);
    let detail = match parsed.message {
        Some(message) => message,
        None if !body.is_empty() => excerpt(body),
        None => StatusCode::from_u16(status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("no details")
            .to_owned(),
    };
    let message = if (300..400).contains(&status) {
        let location = header_text(headers, header::LOCATION.as_str()).unwrap_or("nowhere");
        format!(
            "redirected ({status}) to {location}; check the provider's base URL (chatd does not follow redirects)"
        )
    } else {
        format!("{} ({status}): {detail}", describe(kind, Some(status)))
    };
    ProviderError {
        status: Some(status),
        retry_after: retry_after(headers),
        ..ProviderError::new(provider, kind, message)
    }
}

/// The error for an HTTP error response, reading (a bounded part of) its body.
pub(crate) async fn from_response(
    provider: &str,
    mut response: reqwest::Response,
) -> ProviderError {
    let mut body = Vec::new();
    // The status alone classifies the error; a body cut short only loses
    // detail, so read errors end the read rather than the classification.
    while body.len() < ERROR_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(ERROR_BODY_LIMIT);
    status_error(
        provider,
        response.status().as_u16(),
        response.headers(),
        &body,
    )
}

/// The error for an error event or error chunk in a stream.
pub(crate) fn event_error(provider: &str, data: &Value) -> ProviderError {
    let body = ErrorBody::from_value(data);
    let kind = classify(None, &body);
    let what = body.kind.as_deref().or(body.code.as_deref());
    let detail = body
        .message
        .clone()
        .unwrap_or_else(|| excerpt(data.to_string().as_bytes()));
    let message = match what {
        Some(what) => format!("{} mid-stream ({what}): {detail}", describe(kind, None)),
        None => format!("{} mid-stream: {detail}", describe(kind, None)),
    };
    ProviderError::new(provider, kind, message)
}

/// The error for a failed request or a body that broke off: a timeout or a
/// connection failure (both retryable). The URL is left out of the message
/// (it says nothing the provider's name does not).
pub(crate) fn transport(provider: &str, error: reqwest::Error, phase: Phase) -> ProviderError {
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Connection
    };
    let error = error.without_url();
    // reqwest's own message is terse; the cause ("Connection refused") is
    // in its sources.
    let cause = Chain(&error);
    let message = match phase {
        Phase::Request => format!("cannot reach the provider: {cause}"),
        Phase::Body => format!("connection lost mid-stream: {cause}"),
    };
    ProviderError::new(provider, kind, message)
}

/// When a transport error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Sending the request or waiting for the response headers.
    Request,
    /// Reading the streamed body.
    Body,
}

/// A stream that ended without its terminal event: the connection was most
/// likely cut, so it is a (retryable) connection error, never a success.
pub(crate) fn ended_early(provider: &str, terminal: &str) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorKind::Connection,
        format!("the stream ended before its end ({terminal})"),
    )
}

/// A response we cannot understand: `what` was wrong, with an excerpt of
/// the offending data.
pub(crate) fn invalid_response(
    provider: &str,
    what: impl fmt::Display,
    data: &[u8],
) -> ProviderError {
    ProviderError::new(
        provider,
        ErrorKind::InvalidResponse,
        format!("{what}: {}", excerpt(data)),
    )
}

/// A streamed chunk whose JSON we cannot read.
pub(crate) fn bad_chunk(provider: &str, data: &str, error: &serde_json::Error) -> ProviderError {
    invalid_response(
        provider,
        format_args!("a stream chunk is not the JSON we expect ({error})"),
        data.as_bytes(),
    )
}

/// Up to [`EXCERPT_CHARS`] characters of `data`, quoted and escaped so that
/// binary garbage stays readable in logs.
pub(crate) fn excerpt(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// How long the provider asked us to wait: `retry-after-ms` (OpenAI, in
/// milliseconds) when present, else `Retry-After` in seconds or as an
/// HTTP-date. Values that cannot be read are ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let millis = header_text(headers, "retry-after-ms")
        .and_then(|value| value.trim().parse::<f64>().ok())
        .and_then(|millis| Duration::try_from_secs_f64(millis / 1000.0).ok());
    if millis.is_some() {
        return millis;
    }
    let value = header_text(headers, header::RETRY_AFTER.as_str())?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    // A date in the past means "now".
    Some(
        (date.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).expect("valid header"));
        }
        headers
    }

    fn error(status: u16, body: Value) -> ProviderError {
        status_error(
            "openai",
            status,
            &HeaderMap::new(),
            body.to_string().as_bytes(),
        )
    }

    #[test]
    fn statuses_map_to_kinds() {
        let cases = [
            (429, ErrorKind::RateLimited),
            (529, ErrorKind::Overloaded),
            (500, ErrorKind::Server),
            (503, ErrorKind::Server),
            (408, ErrorKind::Timeout),
            (401, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (404, ErrorKind::InvalidModel),
            (400, ErrorKind::BadRequest),
            (413, ErrorKind::BadRequest),
            (422, ErrorKind::BadRequest),
            (302, ErrorKind::InvalidResponse),
        ];
        for (status, kind) in cases {
            assert_eq!(
                classify(Some(status), &ErrorBody::default()),
                kind,
                "{status}"
            );
        }
    }

    #[test]
    fn bodies_refine_the_status() {
        let overloaded = error(
            500,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        );
        assert_eq!(overloaded.kind, ErrorKind::Overloaded);

        let missing_model = error(
            400,
            json!({"error": {"message": "no such model", "type": "invalid_request_error", "code": "model_not_found"}}),
        );
        assert_eq!(missing_model.kind, ErrorKind::InvalidModel);

        for body in [
            json!({"error": {"message": "too long", "code": "context_length_exceeded"}}),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}),
            json!({"error": {"message": "This model's maximum context length is 8192 tokens."}}),
            json!({"detail": "Input exceeds the context window"}),
        ] {
            assert_eq!(
                error(400, body.clone()).kind,
                ErrorKind::ContextTooLong,
                "{body}"
            );
        }
        let too_large = error(413, json!({"error": {"message": "prompt is too long"}}));
        assert_eq!(too_large.kind, ErrorKind::ContextTooLong);
        assert_eq!(
            error(400, json!({"error": "bad field"})).kind,
            ErrorKind::BadRequest
        );
    }

    #[test]
    fn message_names_what_happened_with_the_providers_words() {
        let error = status_error(
            "openai",
            429,
            &headers(&[("retry-after", "3")]),
            br#"{"error": {"message": "Rate limit reached for gpt-x", "type": "requests", "code": "rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            error.to_string(),
            "openai: rate limited (429): Rate limit reached for gpt-x"
        );
        assert_eq!(error.status, Some(429));
        assert_eq!(error.retry_after, Some(Duration::from_secs(3)));
        assert!(error.is_retryable());
    }

    #[test]
    fn body_without_json_message_is_quoted() {
        let error = status_error("vllm", 502, &HeaderMap::new(), b"<html>Bad Gateway</html>");
        assert_eq!(error.kind, ErrorKind::Server);
        assert_eq!(
            error.message,
            r#"server error (502): "<html>Bad Gateway</html>""#
        );
        let empty = status_error("vllm", 503, &HeaderMap::new(), b"");
        assert_eq!(empty.message, "server error (503): Service Unavailable");
    }

    #[test]
    fn redirects_point_at_the_base_url() {
        let error = status_error(
            "openai",
            301,
            &headers(&[("location", "https://example.com/v1/chat/completions")]),
            b"",
        );
        assert_eq!(error.kind, ErrorKind::InvalidResponse);
        assert!(!error.is_retryable());
        assert!(error.message.contains("base URL"), "{}", error.message);
    }

    #[test]
    fn error_events_are_classified_by_type() {
        let cases = [
            ("overloaded_error", ErrorKind::Overloaded),
            ("rate_limit_error", ErrorKind::RateLimited),
            ("api_error", ErrorKind::Server),
            ("authentication_error", ErrorKind::Auth),
            ("permission_error", ErrorKind::Auth),
            ("not_found_error", ErrorKind::InvalidModel),
            ("invalid_request_error", ErrorKind::BadRequest),
            ("something_new", ErrorKind::Server),
        ];
        for (kind, expected) in cases {
            let data = json!({"type": "error", "error": {"type": kind, "message": "m"}});
            assert_eq!(event_error("anthropic", &data).kind, expected, "{kind}");
        }
        let overloaded = event_error(
            "anthropic",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        );
        assert_eq!(
            overloaded.to_string(),
            "anthropic: overloaded mid-stream (overloaded_error): Overloaded"
        );
    }

    #[test]
    fn retry_after_in_seconds_milliseconds_and_dates() {
        assert_eq!(retry_after(&headers(&[])), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2"), ("retry-after-ms", "250")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")])), None);

        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            retry_after(&headers(&[("retry-after", past)])),
            Some(Duration::ZERO)
        );
        let later = (Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let wait = retry_after(&headers(&[("retry-after", &later)])).expect("a date parses");
        assert!(
            (Duration::from_secs(100)..=Duration::from_secs(120)).contains(&wait),
            "{wait:?}"
        );
    }

    #[test]
    fn excerpts_are_short_quoted_and_escaped() {
        assert_eq!(excerpt(b"\xff\x00ok\n"), "\"\u{fffd}\\0ok\\n\"");
        let long = "x".repeat(500);
        let quoted = excerpt(long.as_bytes());
        assert!(quoted.ends_with('…'));
        assert_eq!(quoted.chars().filter(|c| *c == 'x').count(), EXCERPT_CHARS);
    }
}
