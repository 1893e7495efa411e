//! OpenAI Chat Completions streaming (`POST {base}/chat/completions`), for
//! OpenAI and every compatible server (vLLM, Ollama, OpenRouter, LiteLLM…).
//!
//! # Request
//!
//! - The system prompt is the first message (`role: system`).
//! - The output cap is sent as `max_tokens`: every compatible server
//!   accepts it, while `max_completion_tokens` (OpenAI's newer name) is
//!   unknown to several. OpenAI's reasoning models refuse `max_tokens`;
//!   their model config sets `{"max_tokens": null, "max_completion_tokens": N}`
//!   in its options (which apply as a JSON Merge Patch, see below).
//! - `stream_options.include_usage` asks for the usage chunk at the end.
//! - Reasoning parts are not sent back: the format has no field for them
//!   (servers that stream `reasoning_content` ignore it in requests, and
//!   OpenAI keeps reasoning server-side).
//! - A user message with `file` parts has array content: images as
//!   `image_url` parts with a `data:` URL, text files as `text` parts
//!   (after a line naming the file), and a note for anything else (PDFs
//!   too: not every compatible server takes documents).
//! - Each `tool_result` part is its own `role: tool` message; results that
//!   are not strings are sent as JSON text. The format has no error flag;
//!   the result's text is what the model sees.
//! - The model config's `options` are merged into the body as a JSON Merge
//!   Patch; `model`, `messages`, `tools` and `stream` stay chatd's.
//!
//! # Response
//!
//! Text comes in `delta.content`; reasoning in `delta.reasoning_content`
//! (DeepSeek, vLLM) or `delta.reasoning` (OpenRouter, newer vLLM), one of
//! the two per chunk, since some servers fill both with the same text. Tool
//! calls come in `delta.tool_calls[]`: the first delta of a call has its id
//! and name, later ones add argument fragments; calls are numbered 0, 1, …
//! in order of appearance, whatever `index` the server uses. The finish
//! reason arrives before the usage chunk, so `Finish` is emitted at
//! `[DONE]`; a stream without `[DONE]` is a connection error. A server that
//! says `stop` after making tool calls (some do) reports `ToolCalls`.

use std::collections::VecDeque;

use eventsource_stream::Event;
use reqwest::{Url, header::HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use chatd_shared::{
    parts::{Part, Usage},
    status::MessageRole,
};

use super::{
    Completion, ErrorKind, EventStream, FinishReason, Prompt, Provider, ProviderConfigError,
    ProviderError, StreamEvent, complete,
    config::{endpoint, secret_header},
    error,
    prompt::{
        Attachment, apply_options, attachment, joined_text, json_text, named_text, system_text,
        unreadable,
    },
    sse::{self, Decoder, Progress},
};

/// Top-level body fields chatd sets and model options cannot change.
const OWNED_FIELDS: [&str; 4] = ["model", "messages", "tools", "stream"];

/// An OpenAI-compatible Chat Completions endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    name: String,
    /// `{base}/chat/completions`.
    endpoint: Url,
    /// `Bearer KEY`, marked sensitive.
    authorization: Option<HeaderValue>,
    http: reqwest::Client,
}

impl OpenAiProvider {
    /// A provider named `name` (used in errors and metrics) for `base_url`,
    /// which includes the API version (`https://api.openai.com/v1`). With
    /// `api_key`, requests carry `Authorization: Bearer KEY`.
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: Option<&str>,
        http: reqwest::Client,
    ) -> Result<Self, ProviderConfigError> {
        let name = name.into();
        let endpoint = endpoint(&name, base_url, &["chat", "completions"])?;
        let authorization = api_key
            .map(|key| secret_header(&name, format!("Bearer {key}")))
            .transpose()?;
        Ok(Self {
            name,
            endpoint,
            authorization,
            http,
        })
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stream(&self, prompt: &Prompt) -> Result<EventStream, ProviderError> {
        let response = sse::open(&self.name, self.request(prompt, true)?).await?;
        Ok(sse::events(
            self.name.clone(),
            response,
            ChatDecoder::default(),
        ))
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, ProviderError> {
        let answer = complete::send_json(&self.name, self.request(prompt, false)?).await?;
        completion(&self.name, &answer)
    }
}

impl OpenAiProvider {
    /// The request for `prompt`, streamed (asking for the usage chunk) or
    /// not, with its authorization.
    fn request(
        &self,
        prompt: &Prompt,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut body = request_body(prompt)
            .map_err(|reason| ProviderError::new(&self.name, ErrorKind::BadRequest, reason))?;
        if !stream {
            body["stream"] = Value::Bool(false);
            if let Value::Object(fields) = &mut body {
                fields.remove("stream_options");
            }
        }
        let mut request = self.http.post(self.endpoint.clone()).json(&body);
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
        }
        Ok(request)
    }
}

/// A `chat.completion` object read as a [`Completion`]: the first choice's
/// text and the usage.
fn completion(provider: &str, answer: &Value) -> Result<Completion, ProviderError> {
    if let Some(failure) = answer.get("error") {
        return Err(error::event_error(provider, &json!({"error": failure})));
    }
    let Some(message) = answer.pointer("/choices/0/message") else {
        return Err(error::invalid_response(
            provider,
            "the answer has no choices[0].message",
            answer.to_string().as_bytes(),
        ));
    };
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    };
    let usage = answer
        .get("usage")
        .cloned()
        .and_then(|usage| serde_json::from_value::<WireUsage>(usage).ok())
        .map(Usage::from)
        .unwrap_or_default();
    Ok(Completion { text, usage })
}

/// The request body for `prompt`.
fn request_body(prompt: &Prompt) -> Result<Value, String> {
    let mut body = json!({
        "model": prompt.model,
        "messages": messages(prompt),
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": prompt.max_output_tokens,
    });
    if !prompt.tools.is_empty() {
        let tools: Vec<Value> = prompt
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    apply_options(&mut body, &prompt.options, &OWNED_FIELDS)?;
    Ok(body)
}

/// The `messages` array: system prompt, then the conversation. Messages
/// with nothing to say (no text, no tool calls) are left out; some servers
/// reject empty content.
fn messages(prompt: &Prompt) -> Vec<Value> {
    let mut messages = Vec::with_capacity(prompt.messages.len() + 1);
    if let Some(system) = system_text(prompt) {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &prompt.messages {
        match message.role {
            // Folded into the system prompt.
            MessageRole::System => {}
            MessageRole::User => messages.extend(user_message(prompt, &message.content)),
            MessageRole::Assistant => messages.extend(assistant_message(&message.content)),
            MessageRole::Tool => messages.extend(message.content.iter().filter_map(tool_message)),
        }
    }
    messages
}

/// A user message: its text as a string, or, with attachments, an array
/// of content parts in order (images as `image_url` data URLs, text files
/// as text, PDFs as a note: OpenAI-compatible servers differ on documents).
fn user_message(prompt: &Prompt, parts: &[Part]) -> Option<Value> {
    if !parts.iter().any(|part| matches!(part, Part::File { .. })) {
        let text = joined_text(parts);
        return (!text.is_empty()).then(|| json!({"role": "user", "content": text}));
    }
    let content: Vec<Value> = parts
        .iter()
        .filter_map(|part| match part {
            Part::Text { text } if !text.is_empty() => Some(json!({"type": "text", "text": text})),
            Part::File { file_id, name, .. } => {
                Some(match attachment(prompt, file_id, name.as_deref()) {
                    Attachment::Image { media_type, data } => json!({
                        "type": "image_url",
                        "image_url": {"url": format!("data:{media_type};base64,{data}")},
                    }),
                    Attachment::Pdf { name, .. } => {
                        json!({"type": "text", "text": unreadable(name, "application/pdf")})
                    }
                    Attachment::Text {
                        name,
                        media_type,
                        text,
                    } => {
                        json!({"type": "text", "text": named_text(name, media_type, text)})
                    }
                    Attachment::Note(text) => json!({"type": "text", "text": text}),
                })
            }
            _ => None,
        })
        .collect();
    Some(json!({"role": "user", "content": content}))
}

fn assistant_message(parts: &[Part]) -> Option<Value> {
    let text = joined_text(parts);
    let calls: Vec<Value> = parts
        .iter()
        .filter_map(|part| match part {
            Part::ToolCall { id, name, args } => Some(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": json_text(args)},
            })),
            _ => None,
        })
        .collect();
    if text.is_empty() && calls.is_empty() {
        return None;
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Some(message)
}

fn tool_message(part: &Part) -> Option<Value> {
    match part {
        Part::ToolResult {
            tool_call_id,
            result,
            ..
        } => Some(json!({
            "role": "tool",
            "tool_call_id": tool_call_id,
            "content": json_text(result),
        })),
        _ => None,
    }
}

/// A `chat.completion.chunk`, or an error object some servers send mid-stream.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    /// Read leniently: usage we cannot read is dropped, not fatal.
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    /// A string on the servers we know; read leniently in case one differs.
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<i64>,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Self {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            reasoning_tokens: usage
                .completion_tokens_details
                .and_then(|details| details.reasoning_tokens),
            cache_read_tokens: usage
                .prompt_tokens_details
                .and_then(|details| details.cached_tokens),
            cache_write_tokens: None,
        }
    }
}

/// Decodes `chat.completion.chunk` events.
#[derive(Debug, Default)]
struct ChatDecoder {
    /// The finish reason, held until `[DONE]` (the usage chunk comes after it).
    finish: Option<FinishReason>,
    /// Tool calls in order of appearance; the position is our index.
    calls: Vec<CallState>,
}

/// A tool call being streamed.
#[derive(Debug, Default)]
struct CallState {
    /// The server's `index`, when it sends one.
    wire_index: Option<usize>,
    id: Option<String>,
    name: Option<String>,
    /// Whether `ToolCallStart` was emitted (it needs the name).
    started: bool,
    /// Argument fragments that arrived before the name.
    pending_args: String,
}

impl Decoder for ChatDecoder {
    const TERMINAL: &'static str = "data: [DONE]";

    fn decode(
        &mut self,
        provider: &str,
        event: &Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            out.push_back(StreamEvent::Finish(self.finish_reason(provider)?));
            return Ok(Progress::Done);
        }
        if event.event == "error" {
            let value: Value = serde_json::from_str(data)
                .map_err(|parse| error::bad_chunk(provider, data, &parse))?;
            return Err(error::event_error(provider, &value));
        }
        let chunk: Chunk =
            serde_json::from_str(data).map_err(|parse| error::bad_chunk(provider, data, &parse))?;
        if let Some(failure) = chunk.error {
            return Err(error::event_error(provider, &json!({"error": failure})));
        }
        // Only the first choice: chatd never asks for more (`n` is 1).
        let choices = chunk.choices.into_iter().flatten();
        for choice in choices.filter(|choice| choice.index.unwrap_or(0) == 0) {
            if let Some(delta) = choice.delta {
                self.delta(delta, out);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if let Some(usage) = chunk
            .usage
            .and_then(|usage| serde_json::from_value::<WireUsage>(usage).ok())
        {
            out.push_back(StreamEvent::Usage(usage.into()));
        }
        Ok(Progress::More)
    }
}

impl ChatDecoder {
    fn delta(&mut self, delta: Delta, out: &mut VecDeque<StreamEvent>) {
        let reasoning_field = match delta.reasoning {
            Some(Value::String(text)) => Some(text),
            _ => None,
        };
        let reasoning = delta
            .reasoning_content
            .filter(|text| !text.is_empty())
            .or(reasoning_field.filter(|text| !text.is_empty()));
        if let Some(reasoning) = reasoning {
            out.push_back(StreamEvent::ReasoningDelta(reasoning));
        }
        if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
            out.push_back(StreamEvent::TextDelta(text));
        }
        for call in delta.tool_calls.into_iter().flatten() {
            self.tool_call(call, out);
        }
    }

    fn tool_call(&mut self, delta: ToolCallDelta, out: &mut VecDeque<StreamEvent>) {
        let index = self.call_index(delta.index, delta.id.as_deref());
        let call = &mut self.calls[index];
        if call.id.is_none() {
            call.id = delta.id.filter(|id| !id.is_empty());
        }
        if let Some(function) = delta.function {
            if call.name.is_none() {
                call.name = function.name.filter(|name| !name.is_empty());
            }
            if let Some(arguments) = function.arguments {
                call.pending_args.push_str(&arguments);
            }
        }
        if !call.started
            && let Some(name) = &call.name
        {
            call.started = true;
            out.push_back(StreamEvent::ToolCallStart {
                index,
                // Servers that send no id get one; results still match it.
                id: call.id.clone().unwrap_or_else(|| format!("call_{index}")),
                name: name.clone(),
            });
        }
        if call.started && !call.pending_args.is_empty() {
            out.push_back(StreamEvent::ToolCallDelta {
                index,
                args: std::mem::take(&mut call.pending_args),
            });
        }
    }

    /// Our index of the call a delta belongs to: by the server's `index`,
    /// else by id, else the latest call; a new call when none matches.
    fn call_index(&mut self, wire_index: Option<usize>, id: Option<&str>) -> usize {
        let found = match (wire_index, id) {
            (Some(wire), _) => self
                .calls
                .iter()
                .position(|call| call.wire_index == Some(wire)),
            (None, Some(id)) => self
                .calls
                .iter()
                .position(|call| call.id.as_deref() == Some(id)),
            (None, None) => self.calls.len().checked_sub(1),
        };
        found.unwrap_or_else(|| {
            self.calls.push(CallState {
                wire_index,
                ..CallState::default()
            });
            self.calls.len() - 1
        })
    }

    fn finish_reason(&mut self, provider: &str) -> Result<FinishReason, ProviderError> {
        if let Some(index) = self.calls.iter().position(|call| !call.started) {
            return Err(ProviderError::new(
                provider,
                ErrorKind::InvalidResponse,
                format!("tool call {index} ended without a name"),
            ));
        }
        let made_calls = !self.calls.is_empty();
        Ok(match self.finish.take() {
            Some(FinishReason::Stop) | None if made_calls => FinishReason::ToolCalls,
            Some(reason) => reason,
            None => FinishReason::Stop,
        })
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{PromptMessage, ToolSpec};

    /// Decodes `data` lines as one stream; the events, and the error if any.
    fn decode(lines: &[&str]) -> (Vec<StreamEvent>, Option<ProviderError>) {
        let mut decoder = ChatDecoder::default();
        let mut out = VecDeque::new();
        for line in lines {
            let event = Event {
                event: "message".into(),
                data: (*line).into(),
                ..Event::default()
            };
            match decoder.decode("openai", &event, &mut out) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => break,
                Err(error) => return (out.into(), Some(error)),
            }
        }
        (out.into(), None)
    }

    #[test]
    fn reasoning_comes_from_either_field_once() {
        let (events, error) = decode(&[
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"a","reasoning":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"c"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            [
                StreamEvent::ReasoningDelta("a".into()),
                StreamEvent::ReasoningDelta("b".into()),
                StreamEvent::TextDelta("c".into()),
                StreamEvent::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn tool_calls_without_index_or_id_still_stream() {
        let (events, error) = decode(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"echo","arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            [
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_0".into(),
                    name: "echo".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    args: r#"{"a":1}"#.into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn sparse_server_indexes_map_to_ours() {
        let (events, _) = decode(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":3,"id":"a","function":{"name":"x"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":7,"id":"b","function":{"name":"y"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{}"}}]}}]}"#,
        ]);
        assert_eq!(
            events,
            [
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "a".into(),
                    name: "x".into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "b".into(),
                    name: "y".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    args: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn usage_chunk_and_finish_reasons() {
        let (events, _) = decode(&[
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events,
            [
                StreamEvent::Usage(Usage {
                    input_tokens: Some(10),
                    output_tokens: Some(5),
                    reasoning_tokens: Some(2),
                    cache_read_tokens: Some(4),
                    cache_write_tokens: None,
                }),
                StreamEvent::Finish(FinishReason::Length),
            ]
        );
        assert_eq!(finish_reason("content_filter"), FinishReason::ContentFilter);
        assert_eq!(finish_reason("eos"), FinishReason::Other("eos".into()));
    }

    #[test]
    fn error_chunks_are_classified() {
        let (_, error) = decode(&[
            r#"{"choices":[{"delta":{"content":"partial"}}]}"#,
            r#"{"error":{"message":"upstream overloaded","code":502}}"#,
        ]);
        let error = error.expect("an error chunk fails the stream");
        assert_eq!(error.kind, ErrorKind::Server);
        assert!(error.message.contains("upstream overloaded"), "{error}");
    }

    #[test]
    fn unreadable_chunks_are_invalid_responses_with_an_excerpt() {
        let (_, error) = decode(&[r#"{"choices": [{"delta": {"content": "cut"#]);
        let error = error.expect("bad JSON fails the stream");
        assert_eq!(error.kind, ErrorKind::InvalidResponse);
        assert!(error.message.contains(r#"{\"choices\""#), "{error}");
    }

    #[test]
    fn body_renders_history_and_merges_options() {
        let prompt = Prompt {
            model: "gpt-test".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                PromptMessage {
                    role: MessageRole::User,
                    content: vec![Part::text("time?")],
                },
                PromptMessage {
                    role: MessageRole::Assistant,
                    content: vec![
                        Part::Reasoning {
                            text: "hmm".into(),
                            signature: None,
                        },
                        Part::ToolCall {
                            id: "call_1".into(),
                            name: "now".into(),
                            args: json!({"tz": "UTC"}),
                        },
                    ],
                },
                PromptMessage {
                    role: MessageRole::Tool,
                    content: vec![Part::ToolResult {
                        tool_call_id: "call_1".into(),
                        name: "now".into(),
                        result: json!({"time": "12:00"}),
                        is_error: false,
                    }],
                },
            ],
            tools: vec![ToolSpec {
                name: "now".into(),
                description: "The time".into(),
                parameters: json!({"type": "object"}),
            }],
            max_output_tokens: 256,
            options: json!({"temperature": 0, "stream": false}),
            files: Default::default(),
        };
        let body = request_body(&prompt).expect("valid options");
        assert_eq!(
            body,
            json!({
                "model": "gpt-test",
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": 256,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "time?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{\"tz\":\"UTC\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "{\"time\":\"12:00\"}"},
                ],
                "tools": [{"type": "function", "function": {"name": "now", "description": "The time", "parameters": {"type": "object"}}}],
            })
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let http = crate::llm::http_client().expect("client");
        let provider = OpenAiProvider::new(
            "openai",
            "https://api.openai.com/v1",
            Some("sk-secret"),
            http,
        )
        .expect("valid config");
        assert!(!format!("{provider:?}").contains("sk-secret"));
    }
}
