//! Anthropic Messages streaming (`POST {base}/v1/messages`).
//!
//! # Request
//!
//! - Headers `x-api-key` (when a key is configured) and
//!   `anthropic-version: 2023-06-01`.
//! - The system prompt goes in `system`; `max_tokens` is required.
//! - Messages alternate user/assistant: consecutive messages of one role are
//!   merged, and our `tool` messages become `user` messages of
//!   `tool_result` blocks (placed before any text in the same message, as
//!   the API requires).
//! - User messages carry `text`, `image` (base64) and `document` blocks
//!   (PDFs in base64, text files as text documents) for their `file` parts.
//! - Assistant messages carry `thinking` blocks (only reasoning that has a
//!   signature: the API rejects unsigned thinking), `text` and `tool_use`
//!   (arguments that are not an object are sent as `{}`: `input` must be
//!   one).
//! - The model config's `options` are merged into the body as a JSON Merge
//!   Patch (e.g. `{"thinking": {"type": "enabled", "budget_tokens": 2048}}`);
//!   `model`, `messages`, `system`, `tools` and `stream` stay chatd's.
//!
//! # Response
//!
//! Named events: `message_start` (input usage), `content_block_start` /
//! `_delta` / `_stop` for `text`, `thinking` (`thinking_delta`,
//! `signature_delta`) and `tool_use` (`input_json_delta`), `message_delta`
//! (stop reason, output usage), `message_stop`, `ping`, and `error`
//! mid-stream. Tool-use blocks are numbered 0, 1, … as our tool-call
//! indexes, whatever their block index. Unknown events, blocks and deltas
//! (e.g. `redacted_thinking`, `citations_delta`) are skipped, as the API
//! asks of clients. Anthropic's `input_tokens` excludes cache reads and
//! writes; our `input_tokens` is their sum, like OpenAI's.

use std::collections::VecDeque;

use eventsource_stream::Event;
use reqwest::{Url, header::HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use chatd_shared::{
    parts::{Part, Usage},
    status::MessageRole,
};

use super::{
    Completion, ErrorKind, EventStream, FinishReason, Prompt, Provider, ProviderConfigError,
    ProviderError, StreamEvent, complete,
    config::{endpoint, secret_header},
    error,
    prompt::{Attachment, apply_options, attachment, json_text, system_text},
    sse::{self, Decoder, Progress},
};

/// The API version chatd speaks.
const API_VERSION: &str = "2023-06-01";

/// Top-level body fields chatd sets and model options cannot change.
const OWNED_FIELDS: [&str; 5] = ["model", "messages", "system", "tools", "stream"];

/// An Anthropic Messages endpoint.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    name: String,
    /// `{base}/v1/messages`.
    endpoint: Url,
    /// The key for `x-api-key`, marked sensitive.
    api_key: Option<HeaderValue>,
    http: reqwest::Client,
}

impl AnthropicProvider {
    /// A provider named `name` (used in errors and metrics) for `base_url`,
    /// which does not include the version (`https://api.anthropic.com`).
    /// With `api_key`, requests carry `x-api-key: KEY`.
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: Option<&str>,
        http: reqwest::Client,
    ) -> Result<Self, ProviderConfigError> {
        let name = name.into();
        let endpoint = endpoint(&name, base_url, &["v1", "messages"])?;
        let api_key = api_key
            .map(|key| secret_header(&name, key.to_owned()))
            .transpose()?;
        Ok(Self {
            name,
            endpoint,
            api_key,
            http,
        })
    }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stream(&self, prompt: &Prompt) -> Result<EventStream, ProviderError> {
        let response = sse::open(&self.name, self.request(prompt, true)?).await?;
        Ok(sse::events(
            self.name.clone(),
            response,
            MessagesDecoder::default(),
        ))
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, ProviderError> {
        let answer = complete::send_json(&self.name, self.request(prompt, false)?).await?;
        completion(&self.name, &answer)
    }
}

impl AnthropicProvider {
    /// The request for `prompt`, streamed or not, with its headers.
    fn request(
        &self,
        prompt: &Prompt,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut body = request_body(prompt)
            .map_err(|reason| ProviderError::new(&self.name, ErrorKind::BadRequest, reason))?;
        body["stream"] = Value::Bool(stream);
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header("anthropic-version", API_VERSION)
            .json(&body);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key.clone());
        }
        Ok(request)
    }
}

/// A `message` object read as a [`Completion`]: its text blocks and usage
/// (input tokens counted with cache reads and writes, as when streaming).
fn completion(provider: &str, answer: &Value) -> Result<Completion, ProviderError> {
    if answer.get("type").and_then(Value::as_str) == Some("error") {
        return Err(error::event_error(provider, answer));
    }
    let Some(Value::Array(blocks)) = answer.get("content") else {
        return Err(error::invalid_response(
            provider,
            "the answer has no content array",
            answer.to_string().as_bytes(),
        ));
    };
    let text = blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect();
    let mut decoder = MessagesDecoder::default();
    let mut events = VecDeque::new();
    decoder.usage(answer.get("usage").cloned(), true, &mut events);
    let usage = match events.pop_front() {
        Some(StreamEvent::Usage(usage)) => usage,
        _ => Usage::default(),
    };
    Ok(Completion { text, usage })
}

/// The request body for `prompt`.
fn request_body(prompt: &Prompt) -> Result<Value, String> {
    let mut body = json!({
        "model": prompt.model,
        "max_tokens": prompt.max_output_tokens,
        "messages": messages(prompt),
        "stream": true,
    });
    if let Some(system) = system_text(prompt) {
        body["system"] = Value::String(system);
    }
    if !prompt.tools.is_empty() {
        let tools: Vec<Value> = prompt
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    apply_options(&mut body, &prompt.options, &OWNED_FIELDS)?;
    Ok(body)
}

/// One message being assembled: a role and its content blocks.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// The `messages` array, alternating user/assistant.
fn messages(prompt: &Prompt) -> Vec<Value> {
    let mut turns: Vec<Turn> = Vec::with_capacity(prompt.messages.len());
    for message in &prompt.messages {
        let (role, blocks) = match message.role {
            // Folded into the system prompt.
            MessageRole::System => continue,
            MessageRole::User => ("user", user_blocks(prompt, &message.content)),
            MessageRole::Assistant => ("assistant", assistant_blocks(&message.content)),
            MessageRole::Tool => ("user", tool_result_blocks(&message.content)),
        };
        // Nothing to say: the API rejects empty content.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    turns
        .into_iter()
        .map(|mut turn| {
            // Tool results must come first in a user message; the sort is
            // stable, so each group keeps its order.
            turn.blocks
                .sort_by_key(|block| block["type"] != "tool_result");
            json!({"role": turn.role, "content": turn.blocks})
        })
        .collect()
}

/// A user message's blocks, in order: text, and attachments as `image`
/// and `document` blocks (PDFs as base64 documents, text files as text
/// documents titled with their name), or a note.
fn user_blocks(prompt: &Prompt, parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|part| match part {
            // The API rejects empty text blocks.
            Part::Text { text } if !text.is_empty() => Some(json!({"type": "text", "text": text})),
            Part::File { file_id, name, .. } => Some(file_block(prompt, file_id, name.as_deref())),
            _ => None,
        })
        .collect()
}

fn file_block(prompt: &Prompt, file_id: &str, name: Option<&str>) -> Value {
    match attachment(prompt, file_id, name) {
        Attachment::Image { media_type, data } => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        Attachment::Pdf { name, data } => json!({
            "type": "document",
            "title": name,
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        }),
        Attachment::Text { name, text, .. } => json!({
            "type": "document",
            "title": name,
            "source": {"type": "text", "media_type": "text/plain", "data": text},
        }),
        Attachment::Note(text) => json!({"type": "text", "text": text}),
    }
}

fn assistant_blocks(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|part| match part {
            Part::Reasoning {
                text,
                signature: Some(signature),
            } => Some(json!({"type": "thinking", "thinking": text, "signature": signature})),
            Part::Text { text } if !text.is_empty() => Some(json!({"type": "text", "text": text})),
            Part::ToolCall { id, name, args } => {
                let input = match args {
                    Value::Object(_) => args.clone(),
                    _ => Value::Object(Map::new()),
                };
                Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
            }
            _ => None,
        })
        .collect()
}

fn tool_result_blocks(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|part| match part {
            Part::ToolResult {
                tool_call_id,
                result,
                is_error,
                ..
            } => Some(json!({
                "type": "tool_result",
                "tool_use_id": tool_call_id,
                "content": json_text(result),
                "is_error": is_error,
            })),
            _ => None,
        })
        .collect()
}

/// A streamed event; its `type` equals the SSE event name.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: WireDelta,
    },
    ContentBlockStop,
    MessageDelta {
        delta: MessageDelta,
        /// Read leniently: usage we cannot read is dropped, not fatal.
        #[serde(default)]
        usage: Option<Value>,
    },
    MessageStop,
    Ping,
    Error {
        error: Value,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<i64>,
    #[serde(default)]
    output_tokens: Option<i64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<i64>,
    #[serde(default)]
    cache_read_input_tokens: Option<i64>,
}

/// Decodes Messages stream events.
#[derive(Debug, Default)]
struct MessagesDecoder {
    /// `(block index, our tool-call index)` of every tool_use block.
    tool_blocks: Vec<(usize, usize)>,
    stop_reason: Option<String>,
    /// Input-side usage so far (`message_delta` may restate it).
    uncached_input: Option<i64>,
    cache_read: Option<i64>,
    cache_write: Option<i64>,
}

impl Decoder for MessagesDecoder {
    const TERMINAL: &'static str = "event: message_stop";

    fn decode(
        &mut self,
        provider: &str,
        event: &Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        let wire: WireEvent = serde_json::from_str(&event.data)
            .map_err(|parse| error::bad_chunk(provider, &event.data, &parse))?;
        match wire {
            WireEvent::MessageStart { message } => self.usage(message.usage, false, out),
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => self.block_start(index, content_block, out),
            WireEvent::ContentBlockDelta { index, delta } => {
                self.block_delta(provider, index, delta, out);
            }
            WireEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.usage(usage, true, out);
            }
            WireEvent::MessageStop => {
                out.push_back(StreamEvent::Finish(self.finish_reason()));
                return Ok(Progress::Done);
            }
            WireEvent::Error { error } => {
                return Err(error::event_error(provider, &json!({"error": error})));
            }
            WireEvent::ContentBlockStop | WireEvent::Ping => {}
            WireEvent::Unknown => {
                tracing::debug!(provider, event = %event.event, "skipping an unknown stream event");
            }
        }
        Ok(Progress::More)
    }
}

impl MessagesDecoder {
    fn block_start(&mut self, index: usize, block: WireBlock, out: &mut VecDeque<StreamEvent>) {
        match block {
            WireBlock::Text { text } => {
                if !text.is_empty() {
                    out.push_back(StreamEvent::TextDelta(text));
                }
            }
            WireBlock::Thinking {
                thinking,
                signature,
            } => {
                if !thinking.is_empty() {
                    out.push_back(StreamEvent::ReasoningDelta(thinking));
                }
                if !signature.is_empty() {
                    out.push_back(StreamEvent::ReasoningSignature(signature));
                }
            }
            WireBlock::ToolUse { id, name, input } => {
                let call = self.tool_blocks.len();
                self.tool_blocks.push((index, call));
                out.push_back(StreamEvent::ToolCallStart {
                    index: call,
                    id,
                    name,
                });
                // Streamed input starts as `{}` and arrives as deltas;
                // anything already in it is part of the arguments.
                if input.as_object().is_some_and(|fields| !fields.is_empty()) {
                    out.push_back(StreamEvent::ToolCallDelta {
                        index: call,
                        args: input.to_string(),
                    });
                }
            }
            WireBlock::Other => {}
        }
    }

    fn block_delta(
        &mut self,
        provider: &str,
        index: usize,
        delta: WireDelta,
        out: &mut VecDeque<StreamEvent>,
    ) {
        let event = match delta {
            WireDelta::TextDelta { text } => StreamEvent::TextDelta(text),
            WireDelta::ThinkingDelta { thinking } => StreamEvent::ReasoningDelta(thinking),
            WireDelta::SignatureDelta { signature } => StreamEvent::ReasoningSignature(signature),
            WireDelta::InputJsonDelta { partial_json } => {
                let Some(&(_, call)) = self.tool_blocks.iter().find(|(block, _)| *block == index)
                else {
                    // Input of a block we skip (e.g. `server_tool_use`).
                    tracing::debug!(
                        provider,
                        index,
                        "skipping input of a block that is not a tool_use"
                    );
                    return;
                };
                StreamEvent::ToolCallDelta {
                    index: call,
                    args: partial_json,
                }
            }
            WireDelta::Other => return,
        };
        let empty = match &event {
            StreamEvent::TextDelta(text)
            | StreamEvent::ReasoningDelta(text)
            | StreamEvent::ToolCallDelta { args: text, .. } => text.is_empty(),
            _ => false,
        };
        if !empty {
            out.push_back(event);
        }
    }

    /// Emits usage from `message_start` (input side only: its output count
    /// is a placeholder) or `message_delta`.
    fn usage(&mut self, usage: Option<Value>, with_output: bool, out: &mut VecDeque<StreamEvent>) {
        let Some(usage) = usage.and_then(|usage| serde_json::from_value::<WireUsage>(usage).ok())
        else {
            return;
        };
        self.uncached_input = usage.input_tokens.or(self.uncached_input);
        self.cache_read = usage.cache_read_input_tokens.or(self.cache_read);
        self.cache_write = usage.cache_creation_input_tokens.or(self.cache_write);
        let input_tokens = self.uncached_input.map(|uncached| {
            uncached
                .saturating_add(self.cache_read.unwrap_or(0))
                .saturating_add(self.cache_write.unwrap_or(0))
        });
        out.push_back(StreamEvent::Usage(Usage {
            input_tokens,
            output_tokens: usage.output_tokens.filter(|_| with_output),
            reasoning_tokens: None,
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
        }));
    }

    fn finish_reason(&mut self) -> FinishReason {
        match self.stop_reason.take().as_deref() {
            Some("end_turn" | "stop_sequence") => FinishReason::Stop,
            Some("tool_use") => FinishReason::ToolCalls,
            Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
            Some("refusal") => FinishReason::ContentFilter,
            Some(other) => FinishReason::Other(other.to_owned()),
            None if self.tool_blocks.is_empty() => FinishReason::Stop,
            None => FinishReason::ToolCalls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::PromptMessage;

    /// Decodes `(event name, data)` pairs as one stream.
    fn decode(events: &[(&str, Value)]) -> (Vec<StreamEvent>, Option<ProviderError>) {
        let mut decoder = MessagesDecoder::default();
        let mut out = VecDeque::new();
        for (name, data) in events {
            let event = Event {
                event: (*name).into(),
                data: data.to_string(),
                ..Event::default()
            };
            match decoder.decode("anthropic", &event, &mut out) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => break,
                Err(error) => return (out.into(), Some(error)),
            }
        }
        (out.into(), None)
    }

    #[test]
    fn overloaded_error_event_mid_stream_is_retryable() {
        let (events, error) = decode(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            ),
            (
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        ]);
        assert_eq!(events.last(), Some(&StreamEvent::TextDelta("Hel".into())));
        let error = error.expect("the error event fails the stream");
        assert_eq!(error.kind, ErrorKind::Overloaded);
        assert!(error.is_retryable());
        assert_eq!(
            error.to_string(),
            "anthropic: overloaded mid-stream (overloaded_error): Overloaded"
        );
    }

    #[test]
    fn unknown_events_blocks_and_deltas_are_skipped() {
        let (events, error) = decode(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 2, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "xyz"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            ("brand_new", json!({"type": "brand_new", "stuff": 1})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta", "citation": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "ok"}}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        assert_eq!(error, None);
        let usage = Usage {
            input_tokens: Some(17),
            output_tokens: None,
            reasoning_tokens: None,
            cache_read_tokens: Some(10),
            cache_write_tokens: Some(2),
        };
        assert_eq!(
            events,
            [
                StreamEvent::Usage(usage),
                StreamEvent::TextDelta("ok".into()),
                StreamEvent::Usage(Usage {
                    output_tokens: Some(7),
                    ..usage
                }),
                StreamEvent::Finish(FinishReason::Length),
            ]
        );
    }

    #[test]
    fn tool_use_blocks_are_numbered_apart_from_skipped_blocks() {
        let (events, error) = decode(&[
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"query\": \"x\"}"}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            [
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "toolu_1".into(),
                    name: "now".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    args: "{}".into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    fn message(role: MessageRole, content: Vec<Part>) -> PromptMessage {
        PromptMessage { role, content }
    }

    fn result(id: &str, value: Value) -> Part {
        Part::ToolResult {
            tool_call_id: id.into(),
            name: "now".into(),
            result: value,
            is_error: false,
        }
    }

    #[test]
    fn messages_alternate_with_tool_results_first() {
        let prompt = Prompt {
            model: "claude-test".into(),
            system: None,
            messages: vec![
                message(MessageRole::User, vec![Part::text("one")]),
                message(MessageRole::User, vec![Part::text("two")]),
                message(
                    MessageRole::Assistant,
                    vec![
                        Part::Reasoning {
                            text: "unsigned".into(),
                            signature: None,
                        },
                        Part::ToolCall {
                            id: "toolu_1".into(),
                            name: "now".into(),
                            args: json!("not an object"),
                        },
                    ],
                ),
                message(MessageRole::User, vec![Part::text("hurry")]),
                message(MessageRole::Tool, vec![result("toolu_1", json!("12:00"))]),
                message(MessageRole::Assistant, vec![Part::text("")]),
            ],
            tools: Vec::new(),
            max_output_tokens: 100,
            options: Value::Null,
            files: Default::default(),
        };
        assert_eq!(
            messages(&prompt),
            [
                json!({"role": "user", "content": [
                    {"type": "text", "text": "one"},
                    {"type": "text", "text": "two"},
                ]}),
                json!({"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}},
                ]}),
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00", "is_error": false},
                    {"type": "text", "text": "hurry"},
                ]}),
            ]
        );
    }
}
