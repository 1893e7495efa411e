//! OpenAI Chat Completions (`POST /v1/chat/completions`): the request parser
//! and the renderer of replies as `chat.completion` objects and
//! `chat.completion.chunk` server-sent events.

use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::Api;
use crate::conversation::{Conversation, Message, Role, ToolResult};
use crate::plan::{ErrorKind, Failure, FinishReason, Reply, ReplyEvent, ToolCall, Usage};
use crate::wire::{CREATED, RenderedStream, ResponseOptions, WireFormat, data_frame};

/// The OpenAI wire format.
pub(crate) struct OpenAi;

/// What the mock reads of a Chat Completions request; other fields are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Option<Vec<ChatTool>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum ChatMessage {
    System {
        content: Content,
    },
    Developer {
        content: Content,
    },
    User {
        content: Content,
    },
    Assistant {
        #[serde(default)]
        content: Option<Content>,
        #[serde(default)]
        tool_calls: Option<Vec<ChatToolCall>>,
    },
    Tool {
        content: Content,
        tool_call_id: String,
    },
}

/// Message content: a string or an array of typed parts (only `text` parts count).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Parts(parts) => parts
                .into_iter()
                .filter(|part| part.kind == "text")
                .filter_map(|part| part.text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ChatToolCall {
    id: String,
    function: FunctionCall,
}

#[derive(Debug, Deserialize)]
struct FunctionCall {
    name: String,
    arguments: String,
}

#[derive(Debug, Deserialize)]
struct ChatTool {
    #[serde(default)]
    function: Option<FunctionName>,
}

#[derive(Debug, Deserialize)]
struct FunctionName {
    name: String,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl WireFormat for OpenAi {
    const API: Api = Api::OpenAi;
    type Request = ChatRequest;

    fn authorized(headers: &HeaderMap, key: &str) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| given == key)
    }

    fn validate(request: &ChatRequest) -> Result<(), String> {
        if request.messages.is_empty() {
            return Err("'messages' must contain at least one message".into());
        }
        Ok(())
    }

    fn options(request: &ChatRequest) -> ResponseOptions {
        ResponseOptions {
            model: request.model.clone(),
            stream: request.stream.unwrap_or(false),
            include_usage: request
                .stream_options
                .as_ref()
                .and_then(|options| options.include_usage)
                .unwrap_or(false),
        }
    }

    fn conversation(request: ChatRequest) -> Conversation {
        let mut conversation = Conversation {
            tools: request
                .tools
                .unwrap_or_default()
                .into_iter()
                .filter_map(|tool| tool.function.map(|function| function.name))
                .collect(),
            ..Conversation::default()
        };
        for message in request.messages {
            match message {
                ChatMessage::System { content } | ChatMessage::Developer { content } => {
                    if !conversation.system.is_empty() {
                        conversation.system.push('\n');
                    }
                    conversation.system.push_str(&content.into_text());
                }
                ChatMessage::User { content } => {
                    conversation
                        .messages
                        .push(Message::user(content.into_text()));
                }
                ChatMessage::Assistant {
                    content,
                    tool_calls,
                } => conversation.messages.push(Message {
                    role: Role::Assistant,
                    text: content.map(Content::into_text).unwrap_or_default(),
                    tool_calls: tool_calls
                        .unwrap_or_default()
                        .into_iter()
                        .map(|call| ToolCall {
                            id: call.id,
                            name: call.function.name,
                            // Arguments that are not JSON are kept as the string they are.
                            args: serde_json::from_str(&call.function.arguments)
                                .unwrap_or(Value::String(call.function.arguments)),
                        })
                        .collect(),
                    tool_results: Vec::new(),
                }),
                ChatMessage::Tool {
                    content,
                    tool_call_id,
                } => conversation.messages.push(Message {
                    role: Role::Tool,
                    text: String::new(),
                    tool_calls: Vec::new(),
                    tool_results: vec![ToolResult {
                        call_id: tool_call_id,
                        content: content.into_text(),
                    }],
                }),
            }
        }
        conversation
    }

    fn error_body(failure: &Failure) -> Value {
        let (kind, code) = match failure.kind {
            ErrorKind::InvalidRequest => ("invalid_request_error", Value::Null),
            ErrorKind::Authentication => ("invalid_request_error", json!("invalid_api_key")),
            ErrorKind::PermissionDenied => ("invalid_request_error", json!("permission_denied")),
            ErrorKind::NotFound => ("invalid_request_error", json!("model_not_found")),
            ErrorKind::RequestTooLarge => ("invalid_request_error", json!("request_too_large")),
            ErrorKind::RateLimit => ("requests", json!("rate_limit_exceeded")),
            ErrorKind::Server => ("server_error", Value::Null),
            ErrorKind::Overloaded => ("server_error", json!("overloaded")),
        };
        json!({
            "error": {
                "message": failure.message,
                "type": kind,
                "param": null,
                "code": code,
            }
        })
    }

    fn stream(reply: &Reply, options: &ResponseOptions) -> RenderedStream {
        let id = format!("chatcmpl-{}", reply.id);
        let chunks = Chunks::new(&id, options);
        let mut rendered = RenderedStream::default();
        chunks.push(&mut rendered.preamble, Delta::start(), None);

        let mut tool_index = 0;
        for event in &reply.events {
            let mut frames = BytesMut::new();
            match event {
                ReplyEvent::Thinking(text) => {
                    let delta = Delta {
                        reasoning_content: Some(text),
                        ..Delta::default()
                    };
                    chunks.push(&mut frames, delta, None);
                }
                // Chat Completions has no reasoning signature.
                ReplyEvent::Signature(_) => {}
                ReplyEvent::Text(text) => {
                    let delta = Delta {
                        content: Some(text),
                        ..Delta::default()
                    };
                    chunks.push(&mut frames, delta, None);
                }
                ReplyEvent::ToolCall(call) => {
                    let first = ToolCallDelta {
                        index: tool_index,
                        id: Some(&call.id),
                        kind: Some("function"),
                        function: FunctionDelta {
                            name: Some(&call.name),
                            arguments: "",
                        },
                    };
                    chunks.push(&mut frames, Delta::tool_call(first), None);
                    for fragment in call.fragments() {
                        let more = ToolCallDelta {
                            index: tool_index,
                            id: None,
                            kind: None,
                            function: FunctionDelta {
                                name: None,
                                arguments: &fragment,
                            },
                        };
                        chunks.push(&mut frames, Delta::tool_call(more), None);
                    }
                    tool_index += 1;
                }
            }
            rendered.events.push(frames.freeze());
        }

        let mut epilogue = BytesMut::new();
        chunks.push(&mut epilogue, Delta::default(), Some(reply.finish_reason()));
        if options.include_usage {
            let usage = usage(&reply.usage);
            data_frame(&mut epilogue, &chunks.chunk(&[], Some(&usage)));
        }
        epilogue.extend_from_slice(b"data: [DONE]\n\n");
        rendered.epilogue = epilogue.freeze();
        rendered
    }

    fn message(reply: &Reply, options: &ResponseOptions) -> Value {
        let text = reply.text();
        let calls: Vec<Value> = reply
            .tool_calls()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments()},
                })
            })
            .collect();
        let mut message = json!({
            "role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
            "refusal": null,
        });
        let thinking = reply.thinking();
        if !thinking.is_empty() {
            message["reasoning_content"] = Value::String(thinking);
        }
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        json!({
            "id": format!("chatcmpl-{}", reply.id),
            "object": "chat.completion",
            "created": CREATED,
            "model": options.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(reply.finish_reason()),
            }],
            "usage": usage(&reply.usage),
            "system_fingerprint": SYSTEM_FINGERPRINT,
        })
    }

    fn broken_json_stream(options: &ResponseOptions) -> Bytes {
        let mut body = BytesMut::new();
        Chunks::new("chatcmpl-mockbroken", options).push(&mut body, Delta::start(), None);
        body.extend_from_slice(
            b"data: {\"id\": \"chatcmpl-mockbroken\", \"choices\": [{\"delta\": {\"content\": \"cut\n\n",
        );
        body.extend_from_slice(b"data: [DONE]\n\n");
        body.freeze()
    }
}

/// Writes the `chat.completion.chunk` frames of one response.
struct Chunks<'a> {
    id: &'a str,
    options: &'a ResponseOptions,
}

impl<'a> Chunks<'a> {
    fn new(id: &'a str, options: &'a ResponseOptions) -> Self {
        Self { id, options }
    }

    /// A chunk. With `include_usage` every chunk has a `usage` field, `null`
    /// except in the final usage chunk, as OpenAI sends them; without it no
    /// chunk has the field.
    fn chunk<'c>(&self, choices: &'c [ChunkChoice<'c>], usage: Option<&'c Value>) -> Chunk<'c>
    where
        'a: 'c,
    {
        Chunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: CREATED,
            model: &self.options.model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage: self.options.include_usage.then_some(usage),
        }
    }

    /// Appends a chunk whose only choice carries `delta`.
    fn push(&self, buffer: &mut BytesMut, delta: Delta<'_>, finish: Option<FinishReason>) {
        let choice = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish.map(finish_reason),
        }];
        data_frame(buffer, &self.chunk(&choice, None));
    }
}

/// Identifies the "backend" in every response, like OpenAI's `fp_…`.
const SYSTEM_FINGERPRINT: &str = "fp_mockllm";

/// A `chat.completion.chunk`, fields in OpenAI's order.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent, `null`, or the usage object.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Value>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// `choices[0].delta`; only the fields that are set are sent.
#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

impl<'a> Delta<'a> {
    /// The first delta of a response.
    fn start() -> Self {
        Self {
            role: Some("assistant"),
            content: Some(""),
            ..Self::default()
        }
    }

    fn tool_call(call: ToolCallDelta<'a>) -> Self {
        Self {
            tool_calls: Some([call]),
            ..Self::default()
        }
    }
}

/// One entry of `delta.tool_calls`: the first of a call has its id, type and
/// name; later ones only `index` and an arguments fragment.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::ToolCalls => "tool_calls",
    }
}

fn usage(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Conversation {
        let request: ChatRequest = serde_json::from_value(body).expect("valid request");
        OpenAi::conversation(request)
    }

    #[test]
    fn parses_a_tool_conversation() {
        let conversation = parse(json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what time"}, {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{\"tz\":\"UTC\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}
            ],
            "tools": [{"type": "function", "function": {"name": "now", "parameters": {}}}],
        }));
        assert_eq!(conversation.system, "be brief");
        assert_eq!(conversation.tools, ["now"]);
        assert_eq!(conversation.messages.len(), 3);
        assert_eq!(conversation.last_user_text(), Some("what time"));
        assert_eq!(
            conversation.messages[1].tool_calls[0].args,
            json!({"tz": "UTC"})
        );
        assert_eq!(conversation.messages[2].tool_results[0].call_id, "call_1");
        assert_eq!(conversation.step_index(), 1);
    }

    #[test]
    fn unknown_role_is_rejected() {
        let body = json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]});
        assert!(serde_json::from_value::<ChatRequest>(body).is_err());
    }

    #[test]
    fn bearer_key_is_checked_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!OpenAi::authorized(&headers, "k"));
        headers.insert(header::AUTHORIZATION, "Bearer k".parse().expect("header"));
        assert!(OpenAi::authorized(&headers, "k"));
        assert!(!OpenAi::authorized(&headers, "k2"));
    }
}
