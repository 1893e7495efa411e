//! The in-process `mock` provider: the mock LLM's engine without HTTP, for
//! tests, `chatd dev` and load tests that should not pay for a socket.
//!
//! It renders the [`Prompt`] as the engine's [`Conversation`] (the way the
//! OpenAI provider renders it, so `@mock` directives work the same), takes
//! the engine's [`Plan`] and plays it back with the plan's pacing. Failures
//! become the errors an HTTP provider would return for the same response:
//! an HTTP status goes through the same classification (429 → rate limited
//! with `Retry-After`, 529 → overloaded, 5xx → server, 401/403 → auth, 404 →
//! invalid model, 400 about the context → context too long, else bad
//! request), a cut stream is a connection error after the events sent so
//! far, and a malformed response is an invalid response.
//!
//! # Settings
//!
//! The provider row's base URL holds the engine's [`Behaviour`] as a query
//! string; absent settings keep the mock LLM's defaults:
//!
//! ```text
//! mock://?tokens=20&token_delay_ms=0&ttft_ms=0&seed=1&tool_call_probability=0.2&error_rate_429=0&error_rate_500=0&cut_rate=0
//! ```
//!
//! `mock://` (or `mock`, or an empty base URL) means all defaults. Unknown
//! settings and bad values are configuration errors.

use std::{collections::VecDeque, str::FromStr, sync::Arc, time::Duration};

use chatd_mockllm::{
    Api, Behaviour, Conversation, Engine, Failure, Malformed, Message, Plan, Reply, ReplyEvent,
    Role, ToolCall,
};
use chatd_shared::{
    parts::{Part, Usage},
    status::MessageRole,
};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::json;

use super::{
    Completion, ErrorKind, EventStream, FinishReason, Prompt, Provider, ProviderConfigError,
    ProviderError, StreamEvent, error,
    prompt::{joined_text, json_text, system_text},
};

/// A deterministic in-process model.
#[derive(Debug, Clone)]
pub struct MockProvider {
    name: String,
    /// Shared by every call, so `times` limits in directives count retries.
    engine: Arc<Engine>,
}

impl MockProvider {
    /// A provider answering with `engine`.
    pub fn new(name: impl Into<String>, engine: Arc<Engine>) -> Self {
        Self {
            name: name.into(),
            engine,
        }
    }

    /// A provider with its own engine, configured by the settings in `url`
    /// (see the module docs).
    pub fn from_url(name: impl Into<String>, url: &str) -> Result<Self, ProviderConfigError> {
        let name = name.into();
        let invalid = |reason: String| ProviderConfigError::MockSettings {
            provider: name.clone(),
            url: url.to_owned(),
            reason,
        };
        let behaviour = behaviour(url).map_err(invalid)?;
        let engine = Engine::new(behaviour).map_err(|error| invalid(error.to_string()))?;
        Ok(Self::new(name, Arc::new(engine)))
    }
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stream(&self, prompt: &Prompt) -> Result<EventStream, ProviderError> {
        // `Api::OpenAi` only shapes generated tool-call ids (`call_…`).
        match self.engine.plan(&conversation(prompt), Api::OpenAi) {
            Plan::Fail(failure) => Err(self.failure(&failure)),
            Plan::Malformed(kind) => self.malformed(kind),
            Plan::Reply(reply) => Ok(playback(&self.name, reply)),
        }
    }

    /// The mock server's non-streamed reply: the whole text after the time
    /// the stream would have taken, or the same failures.
    async fn complete(&self, prompt: &Prompt) -> Result<Completion, ProviderError> {
        let reply = match self.engine.plan(&conversation(prompt), Api::OpenAi) {
            Plan::Fail(failure) => return Err(self.failure(&failure)),
            Plan::Malformed(_) => {
                return Err(error::invalid_response(
                    &self.name,
                    "the answer is not the JSON we expect",
                    br#"{"choices": [{"message": {"content": "cut"#,
                ));
            }
            Plan::Reply(reply) => reply,
        };
        let events = u32::try_from(reply.events.len()).unwrap_or(u32::MAX);
        let took = reply.ttft + reply.token_delay * events.saturating_sub(1);
        if !took.is_zero() {
            tokio::time::sleep(took).await;
        }
        if reply.cut_after.is_some() {
            return Err(ProviderError::new(
                &self.name,
                ErrorKind::Connection,
                "connection lost mid-answer: the mock cut it",
            ));
        }
        Ok(Completion {
            text: reply.text(),
            usage: usage(&reply),
        })
    }
}

impl MockProvider {
    /// The error an HTTP provider returns for this failure response.
    fn failure(&self, failure: &Failure) -> ProviderError {
        let mut headers = HeaderMap::new();
        if let Some(seconds) = failure.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        let body = json!({"error": {"message": failure.message}}).to_string();
        error::status_error(&self.name, failure.status, &headers, body.as_bytes())
    }

    /// What an HTTP provider makes of the mock server's broken responses: a
    /// wrong content type fails the call, bad chunks fail the stream.
    fn malformed(&self, kind: Malformed) -> Result<EventStream, ProviderError> {
        let error = match kind {
            Malformed::ContentType => {
                return Err(error::invalid_response(
                    &self.name,
                    "expected a text/event-stream response, got content type text/html",
                    b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head>",
                ));
            }
            Malformed::Json => error::invalid_response(
                &self.name,
                "a stream chunk is not the JSON we expect",
                br#"{"choices": [{"delta": {"content": "cut"#,
            ),
            Malformed::Sse => error::invalid_response(
                &self.name,
                "the response is not server-sent events (not valid UTF-8)",
                b"\xff\xfe\x00garbage <not> an event stream",
            ),
        };
        Ok(Box::pin(futures::stream::once(async move { Err(error) })))
    }
}

/// The settings in a mock base URL.
fn behaviour(url: &str) -> Result<Behaviour, String> {
    const FORMAT: &str = "expected mock://?setting=value&… (settings: tokens, token_delay_ms, \
        ttft_ms, seed, tool_call_probability, error_rate_429, error_rate_500, cut_rate)";
    let url = url.trim();
    let query = match url {
        "" | "mock" => "",
        _ => {
            let rest = url.strip_prefix("mock:").ok_or(FORMAT)?;
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            match rest.split_once('?') {
                None if rest.is_empty() => "",
                Some(("", query)) => query,
                _ => return Err(FORMAT.to_owned()),
            }
        }
    };
    let mut behaviour = Behaviour::default();
    for setting in query.split('&').filter(|setting| !setting.is_empty()) {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("{setting:?} is not setting=value; {FORMAT}"))?;
        match key {
            "tokens" => behaviour.tokens = number(key, value)?,
            "token_delay_ms" => behaviour.token_delay = Duration::from_millis(number(key, value)?),
            "ttft_ms" => behaviour.ttft = Duration::from_millis(number(key, value)?),
            "seed" => behaviour.seed = number(key, value)?,
            "tool_call_probability" => behaviour.tool_call_probability = number(key, value)?,
            "error_rate_429" => behaviour.error_rate_429 = number(key, value)?,
            "error_rate_500" => behaviour.error_rate_500 = number(key, value)?,
            "cut_rate" => behaviour.cut_rate = number(key, value)?,
            _ => return Err(format!("unknown setting {key:?}; {FORMAT}")),
        }
    }
    Ok(behaviour)
}

fn number<T>(key: &str, value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|error| format!("{key}={value:?}: {error}"))
}

/// The prompt as the mock server would see it from the OpenAI provider:
/// same system prompt, same skipped messages, one message per tool result.
fn conversation(prompt: &Prompt) -> Conversation {
    let mut messages = Vec::with_capacity(prompt.messages.len());
    for message in &prompt.messages {
        match message.role {
            MessageRole::System => {}
            MessageRole::User => {
                let text = joined_text(&message.content);
                if !text.is_empty() {
                    messages.push(Message::user(text));
                }
            }
            MessageRole::Assistant => {
                let text = joined_text(&message.content);
                let tool_calls: Vec<ToolCall> = message
                    .content
                    .iter()
                    .filter_map(|part| match part {
                        Part::ToolCall { id, name, args } => Some(ToolCall {
                            id: id.clone(),
                            name: name.clone(),
                            args: args.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                if !text.is_empty() || !tool_calls.is_empty() {
                    messages.push(Message {
                        role: Role::Assistant,
                        text,
                        tool_calls,
                        tool_results: Vec::new(),
                    });
                }
            }
            MessageRole::Tool => {
                messages.extend(message.content.iter().filter_map(|part| match part {
                    Part::ToolResult {
                        tool_call_id,
                        result,
                        ..
                    } => Some(Message::tool_result(tool_call_id, json_text(result))),
                    _ => None,
                }));
            }
        }
    }
    Conversation {
        system: system_text(prompt).unwrap_or_default(),
        messages,
        tools: prompt.tools.iter().map(|tool| tool.name.clone()).collect(),
    }
}

/// Plays `reply` back: its first event after `ttft`, each later one after
/// `token_delay`, then usage and the finish, or a connection error where
/// the reply is cut.
fn playback(provider: &str, reply: Reply) -> EventStream {
    let tail = [
        StreamEvent::Usage(usage(&reply)),
        StreamEvent::Finish(match reply.finish_reason() {
            chatd_mockllm::FinishReason::Stop => FinishReason::Stop,
            chatd_mockllm::FinishReason::ToolCalls => FinishReason::ToolCalls,
        }),
    ];
    let mut calls = 0;
    let groups = reply
        .events
        .into_iter()
        .map(|event| match event {
            ReplyEvent::Thinking(text) => vec![StreamEvent::ReasoningDelta(text)],
            ReplyEvent::Signature(signature) => vec![StreamEvent::ReasoningSignature(signature)],
            ReplyEvent::Text(text) => vec![StreamEvent::TextDelta(text)],
            ReplyEvent::ToolCall(call) => {
                let index = calls;
                calls += 1;
                let fragments = call
                    .fragments()
                    .into_iter()
                    .map(|args| StreamEvent::ToolCallDelta { index, args });
                std::iter::once(StreamEvent::ToolCallStart {
                    index,
                    id: call.id,
                    name: call.name,
                })
                .chain(fragments)
                .collect()
            }
        })
        .collect();
    let playback = Playback {
        provider: provider.to_owned(),
        groups,
        tail: Some(tail),
        sent: 0,
        cut_after: reply.cut_after,
        ttft: reply.ttft,
        token_delay: reply.token_delay,
        pending: VecDeque::new(),
        finished: false,
    };
    Box::pin(futures::stream::unfold(playback, Playback::next))
}

fn usage(reply: &Reply) -> Usage {
    let count = |tokens: u64| i64::try_from(tokens).ok();
    Usage {
        input_tokens: count(reply.usage.input_tokens),
        output_tokens: count(reply.usage.output_tokens),
        reasoning_tokens: count(reply.usage.reasoning_tokens),
        cache_read_tokens: count(reply.usage.cache_read_tokens),
        cache_write_tokens: None,
    }
}

struct Playback {
    provider: String,
    /// Our events for each of the reply's events (the unit of pacing and cuts).
    groups: VecDeque<Vec<StreamEvent>>,
    /// Usage and finish, after the last group.
    tail: Option<[StreamEvent; 2]>,
    /// Groups sent so far.
    sent: usize,
    cut_after: Option<usize>,
    ttft: Duration,
    token_delay: Duration,
    pending: VecDeque<StreamEvent>,
    finished: bool,
}

impl Playback {
    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.finished {
                return None;
            }
            if self
                .cut_after
                .is_some_and(|after| self.sent >= after || self.groups.is_empty())
            {
                self.finished = true;
                let error = ProviderError::new(
                    &self.provider,
                    ErrorKind::Connection,
                    "connection lost mid-stream: the mock cut the stream",
                );
                return Some((Err(error), self));
            }
            let delay = if self.sent == 0 {
                self.ttft
            } else {
                self.token_delay
            };
            let group = self.groups.pop_front();
            // A reply without events still waits its time to first token.
            // A zero delay must not touch the timer: tokio rounds every sleep
            // up to its next millisecond tick.
            if !delay.is_zero() && (group.is_some() || self.sent == 0) {
                tokio::time::sleep(delay).await;
            }
            match group {
                Some(group) => {
                    self.sent += 1;
                    self.pending.extend(group);
                }
                None => {
                    self.finished = true;
                    self.pending.extend(self.tail.take().into_iter().flatten());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_query_string() {
        let settings = behaviour("mock://?tokens=3&token_delay_ms=5&ttft_ms=7&seed=9&cut_rate=0.5")
            .expect("valid settings");
        assert_eq!(settings.tokens, 3);
        assert_eq!(settings.token_delay, Duration::from_millis(5));
        assert_eq!(settings.ttft, Duration::from_millis(7));
        assert_eq!(settings.seed, 9);
        assert_eq!(settings.cut_rate, 0.5);
        for defaults in ["", "mock", "mock:", "mock://", "mock://?"] {
            assert_eq!(
                behaviour(defaults),
                Ok(Behaviour::default()),
                "{defaults:?}"
            );
        }
    }

    #[test]
    fn bad_settings_are_named() {
        for (url, names) in [
            ("mock://?tokens=many", "tokens"),
            ("mock://?colour=red", "colour"),
            ("mock://?tokens", "tokens"),
            ("http://localhost", "mock://"),
            ("mock://host?tokens=1", "mock://"),
        ] {
            let error = behaviour(url).expect_err(url);
            assert!(error.contains(names), "{url}: {error}");
        }
        let error = MockProvider::from_url("m", "mock://?error_rate_429=2").expect_err("rate > 1");
        assert!(error.to_string().contains("error_rate_429"), "{error}");
    }
}
