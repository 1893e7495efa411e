//! What the engine decided to answer, independent of any wire format.
//!
//! A [`Plan`] is complete before the first byte is written: renderers only
//! translate it (and split tool-call arguments into fragments), they never
//! decide anything. chatd's in-process `mock` provider consumes plans directly.

use std::time::Duration;

use serde_json::Value;

/// The engine's answer to one model call.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Refuse the call with an HTTP error (no stream is started).
    Fail(Failure),
    /// Answer with a broken response, to exercise chatd's handling of bad input.
    Malformed(Malformed),
    /// Answer with a reply (streamed or as one JSON object, as the request asked).
    Reply(Reply),
}

/// An HTTP error the provider returns instead of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status (400..=599; 529 is Anthropic's "overloaded").
    pub status: u16,
    /// The provider-neutral category; renderers map it to their error `type`.
    pub kind: ErrorKind,
    /// Human-readable message put in the error body.
    pub message: String,
    /// Seconds for the `Retry-After` header; `None` sends no header.
    pub retry_after: Option<u64>,
}

impl Failure {
    /// A failure with the kind implied by `status` and no `Retry-After`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: ErrorKind::from_status(status),
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Provider-neutral error categories, one per distinct provider error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong (400 and unlisted 4xx statuses); retrying cannot help.
    InvalidRequest,
    /// Missing or wrong API key (401).
    Authentication,
    /// The key may not do this (403).
    PermissionDenied,
    /// Unknown model or endpoint (404).
    NotFound,
    /// The request body is too large (413).
    RequestTooLarge,
    /// Rate limited (429); honour `Retry-After`.
    RateLimit,
    /// The provider failed (500 and unlisted 5xx statuses); retryable.
    Server,
    /// The provider is overloaded (529, Anthropic's status); retryable.
    Overloaded,
}

impl ErrorKind {
    /// The category a provider uses for `status`.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 => Self::Authentication,
            403 => Self::PermissionDenied,
            404 => Self::NotFound,
            413 => Self::RequestTooLarge,
            429 => Self::RateLimit,
            529 => Self::Overloaded,
            500..=599 => Self::Server,
            _ => Self::InvalidRequest,
        }
    }
}

/// Ways a response can be broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    /// Status 200 with an HTML page (`text/html`) instead of the API's content type.
    ContentType,
    /// The right content type, but one chunk (or the whole JSON body) is not valid JSON.
    Json,
    /// `text/event-stream` whose body is not server-sent events at all (for a
    /// non-streaming request: garbage under `application/json`).
    Sse,
}

/// A successful answer: what to emit and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Deterministic id of this response; renderers prefix it (`chatcmpl-`, `msg_`).
    pub id: String,
    /// Delay before the first chunk (the preamble and the first event go together).
    pub ttft: Duration,
    /// Delay between two consecutive events.
    pub token_delay: Duration,
    /// What the model "says", in order: thinking, its signature, text, tool calls.
    pub events: Vec<ReplyEvent>,
    /// Drop the connection after this many events, before the finish; `None`
    /// completes normally. A value `>= events.len()` cuts just before the finish.
    pub cut_after: Option<usize>,
    /// Token counts reported at the end of a complete reply.
    pub usage: Usage,
}

impl Reply {
    /// Why the model stopped: tool calls when any were made.
    pub fn finish_reason(&self) -> FinishReason {
        if self.tool_calls().next().is_some() {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        }
    }

    /// The complete visible text (the concatenation of all text events).
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|event| match event {
                ReplyEvent::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The complete reasoning text (the concatenation of all thinking events).
    pub fn thinking(&self) -> String {
        self.events
            .iter()
            .filter_map(|event| match event {
                ReplyEvent::Thinking(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The reasoning signature, when the reply has reasoning.
    pub fn signature(&self) -> Option<&str> {
        self.events.iter().find_map(|event| match event {
            ReplyEvent::Signature(signature) => Some(signature.as_str()),
            _ => None,
        })
    }

    /// The tool calls, in call order.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.events.iter().filter_map(|event| match event {
            ReplyEvent::ToolCall(call) => Some(call),
            _ => None,
        })
    }
}

/// One step of a reply's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEvent {
    /// A piece of reasoning text (OpenAI `reasoning_content`, Anthropic `thinking_delta`).
    Thinking(String),
    /// The signature closing the reasoning (Anthropic `signature_delta`; OpenAI has none).
    Signature(String),
    /// A piece of visible text.
    Text(String),
    /// A complete tool call; renderers stream its arguments as [`ToolCall::fragments`].
    ToolCall(ToolCall),
}

/// A tool call, either made by the mock or found in a request's history.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call id that tool results refer to (`call_…` for OpenAI, `toolu_…` for Anthropic).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments (normally a JSON object).
    pub args: Value,
}

/// Bytes per streamed argument fragment: small enough that every call with
/// real arguments arrives in several pieces, as it does from real providers.
const FRAGMENT_BYTES: usize = 8;

impl ToolCall {
    /// The arguments as JSON text, as both wire formats stream them.
    pub fn arguments(&self) -> String {
        self.args.to_string()
    }

    /// The arguments' JSON text cut into the fragments the renderers stream;
    /// their concatenation is [`ToolCall::arguments`]. Cuts fall on character
    /// boundaries, so every fragment is valid UTF-8.
    pub fn fragments(&self) -> Vec<String> {
        let arguments = self.arguments();
        let mut fragments = Vec::new();
        let mut start = 0;
        while start < arguments.len() {
            let mut end = (start + FRAGMENT_BYTES).min(arguments.len());
            while !arguments.is_char_boundary(end) {
                end += 1;
            }
            fragments.push(arguments[start..end].to_owned());
            start = end;
        }
        fragments
    }
}

/// Why a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model finished its answer (OpenAI `stop`, Anthropic `end_turn`).
    Stop,
    /// The model wants tool results (OpenAI `tool_calls`, Anthropic `tool_use`).
    ToolCalls,
}

/// Token accounting of a reply, in the mock's unit: one word is one token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// All prompt tokens, cached ones included (OpenAI `prompt_tokens`; Anthropic
    /// reports `input_tokens - cache_read_tokens` as its `input_tokens`).
    pub input_tokens: u64,
    /// Tokens emitted: text and thinking pieces plus tool-argument fragments.
    pub output_tokens: u64,
    /// The part of `output_tokens` that was reasoning.
    pub reasoning_tokens: u64,
    /// The part of `input_tokens` a provider would have cached: everything
    /// before the request's last message.
    pub cache_read_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fragments_concatenate_to_the_arguments_and_respect_char_boundaries() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "echo".into(),
            args: json!({"text": "héllo wörld ✓✓✓", "n": 1}),
        };
        let fragments = call.fragments();
        assert!(fragments.len() > 1);
        assert_eq!(fragments.concat(), call.arguments());
    }

    #[test]
    fn empty_object_is_one_fragment() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "now".into(),
            args: json!({}),
        };
        assert_eq!(call.fragments(), vec!["{}".to_owned()]);
    }

    #[test]
    fn error_kinds_follow_the_status() {
        assert_eq!(ErrorKind::from_status(429), ErrorKind::RateLimit);
        assert_eq!(ErrorKind::from_status(529), ErrorKind::Overloaded);
        assert_eq!(ErrorKind::from_status(503), ErrorKind::Server);
        assert_eq!(ErrorKind::from_status(418), ErrorKind::InvalidRequest);
    }
}
