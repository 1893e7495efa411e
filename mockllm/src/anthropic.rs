//! Anthropic Messages (`POST /v1/messages`): the request parser and the
//! renderer of replies as `message` objects and named server-sent events.

use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::Api;
use crate::conversation::{Conversation, Message, Role, ToolResult};
use crate::plan::{ErrorKind, Failure, FinishReason, Reply, ReplyEvent, ToolCall, Usage};
use crate::wire::{RenderedStream, ResponseOptions, WireFormat, event_frame};

/// The Anthropic wire format.
pub(crate) struct Anthropic;

/// What the mock reads of a Messages request; other fields are ignored.
/// `model` and `max_tokens` are required, as they are by Anthropic.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesRequest {
    model: String,
    #[allow(
        dead_code,
        reason = "required by the API; the mock only checks it is there"
    )]
    max_tokens: u64,
    messages: Vec<InputMessage>,
    #[serde(default)]
    system: Option<Content>,
    #[serde(default)]
    tools: Option<Vec<InputTool>>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct InputMessage {
    role: InputRole,
    content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InputRole {
    User,
    Assistant,
}

/// Content: a string or an array of blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<Content>,
    },
    /// Thinking, images, documents, …: not needed to plan a reply.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct InputTool {
    name: String,
}

impl Content {
    /// The text blocks, joined with `\n`.
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Blocks(blocks) => blocks
                .iter()
                .filter_map(|block| match block {
                    Block::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

impl WireFormat for Anthropic {
    const API: Api = Api::Anthropic;
    type Request = MessagesRequest;

    fn authorized(headers: &HeaderMap, key: &str) -> bool {
        headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|given| given == key)
    }

    fn validate(request: &MessagesRequest) -> Result<(), String> {
        if request.messages.is_empty() {
            return Err("messages: at least one message is required".into());
        }
        Ok(())
    }

    fn options(request: &MessagesRequest) -> ResponseOptions {
        ResponseOptions {
            model: request.model.clone(),
            stream: request.stream.unwrap_or(false),
            include_usage: true,
        }
    }

    fn conversation(request: MessagesRequest) -> Conversation {
        Conversation {
            system: request
                .system
                .as_ref()
                .map(Content::text)
                .unwrap_or_default(),
            messages: request.messages.into_iter().map(message).collect(),
            tools: request
                .tools
                .unwrap_or_default()
                .into_iter()
                .map(|tool| tool.name)
                .collect(),
        }
    }

    fn error_body(failure: &Failure) -> Value {
        let kind = match failure.kind {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Server => "api_error",
            ErrorKind::Overloaded => "overloaded_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": failure.message}})
    }

    fn stream(reply: &Reply, options: &ResponseOptions) -> RenderedStream {
        let id = format!("msg_{}", reply.id);
        let mut rendered = RenderedStream::default();
        message_start(&mut rendered.preamble, &id, options, &reply.usage);
        frame(&mut rendered.preamble, &StreamEvent::Ping);

        let mut blocks = Blocks::default();
        for event in &reply.events {
            let mut frames = BytesMut::new();
            match event {
                ReplyEvent::Thinking(thinking) => {
                    blocks.enter(&mut frames, ContentBlock::Thinking { thinking: "" });
                    blocks.delta(&mut frames, BlockDelta::Thinking { thinking });
                }
                ReplyEvent::Signature(signature) => {
                    blocks.enter(&mut frames, ContentBlock::Thinking { thinking: "" });
                    blocks.delta(&mut frames, BlockDelta::Signature { signature });
                }
                ReplyEvent::Text(text) => {
                    blocks.enter(&mut frames, ContentBlock::Text { text: "" });
                    blocks.delta(&mut frames, BlockDelta::Text { text });
                }
                ReplyEvent::ToolCall(call) => {
                    let block = ContentBlock::ToolUse {
                        id: &call.id,
                        name: &call.name,
                        input: EmptyObject {},
                    };
                    blocks.open(&mut frames, block);
                    // Anthropic opens every tool input with an empty fragment.
                    let empty = BlockDelta::InputJson { partial_json: "" };
                    blocks.delta(&mut frames, empty);
                    for fragment in call.fragments() {
                        let partial_json = fragment.as_str();
                        blocks.delta(&mut frames, BlockDelta::InputJson { partial_json });
                    }
                }
            }
            rendered.events.push(frames.freeze());
        }

        let mut epilogue = BytesMut::new();
        blocks.close(&mut epilogue);
        let message_delta = StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: stop_reason(reply.finish_reason()),
                stop_sequence: None,
            },
            usage: OutputUsage {
                output_tokens: reply.usage.output_tokens,
            },
        };
        frame(&mut epilogue, &message_delta);
        frame(&mut epilogue, &StreamEvent::MessageStop);
        rendered.epilogue = epilogue.freeze();
        rendered
    }

    fn message(reply: &Reply, options: &ResponseOptions) -> Value {
        let mut content = Vec::new();
        if let Some(signature) = reply.signature() {
            content.push(
                json!({"type": "thinking", "thinking": reply.thinking(), "signature": signature}),
            );
        }
        let text = reply.text();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        content.extend(reply.tool_calls().map(|call| {
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.args})
        }));
        json!({
            "id": format!("msg_{}", reply.id),
            "type": "message",
            "role": "assistant",
            "model": options.model,
            "content": content,
            "stop_reason": stop_reason(reply.finish_reason()),
            "stop_sequence": null,
            "usage": usage(&reply.usage, reply.usage.output_tokens),
        })
    }

    fn broken_json_stream(options: &ResponseOptions) -> Bytes {
        let mut body = BytesMut::new();
        message_start(&mut body, "msg_mockbroken", options, &Usage::default());
        body.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\n\n",
        );
        frame(&mut body, &StreamEvent::MessageStop);
        body.freeze()
    }
}

fn message(input: InputMessage) -> Message {
    let role = match input.role {
        InputRole::User => Role::User,
        InputRole::Assistant => Role::Assistant,
    };
    let mut message = Message {
        role,
        text: input.content.text(),
        tool_calls: Vec::new(),
        tool_results: Vec::new(),
    };
    if let Content::Blocks(blocks) = input.content {
        for block in blocks {
            match block {
                Block::ToolUse { id, name, input } => message.tool_calls.push(ToolCall {
                    id,
                    name,
                    args: input,
                }),
                Block::ToolResult {
                    tool_use_id,
                    content,
                } => message.tool_results.push(ToolResult {
                    call_id: tool_use_id,
                    content: content.as_ref().map(Content::text).unwrap_or_default(),
                }),
                Block::Text { .. } | Block::Other => {}
            }
        }
    }
    message
}

fn message_start(buffer: &mut BytesMut, id: &str, options: &ResponseOptions, usage_so_far: &Usage) {
    let start = StreamEvent::MessageStart {
        message: MessageStart {
            id,
            kind: "message",
            role: "assistant",
            model: &options.model,
            content: [],
            stop_reason: None,
            stop_sequence: None,
            // As Anthropic does: 1 output token so far; the final count
            // comes in `message_delta`.
            usage: usage(usage_so_far, 1),
        },
    };
    frame(buffer, &start);
}

/// Anthropic's usage object; its `input_tokens` excludes cache reads.
fn usage(usage: &Usage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.input_tokens.saturating_sub(usage.cache_read_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": output_tokens,
    })
}

fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::ToolCalls => "tool_use",
    }
}

/// A streamed event; the SSE event name is its `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart {
        message: MessageStart<'a>,
    },
    Ping,
    ContentBlockStart {
        index: usize,
        content_block: ContentBlock<'a>,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: OutputUsage,
    },
    MessageStop,
}

impl StreamEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::Ping => "ping",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }
}

fn frame(buffer: &mut BytesMut, event: &StreamEvent<'_>) {
    event_frame(buffer, event.name(), event);
}

/// The message of `message_start`: empty content, no stop reason yet.
#[derive(Serialize)]
struct MessageStart<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: Value,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Thinking {
        thinking: &'a str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: EmptyObject,
    },
}

/// `{}`: a tool_use block starts with empty input; the input arrives as deltas.
#[derive(Serialize)]
struct EmptyObject {}

/// The `delta` of a `content_block_delta`; its `type` names the block kind.
#[derive(Serialize)]
#[serde(tag = "type")]
enum BlockDelta<'a> {
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDelta {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

/// The kind of the open content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Thinking,
    Text,
    ToolUse,
}

/// Tracks the open content block so consecutive events of one kind share a
/// block and every block is started and stopped exactly once.
#[derive(Debug, Default)]
struct Blocks {
    open: Option<OpenBlock>,
    /// Index of the open block, or of the next one when none is open.
    index: usize,
}

impl Blocks {
    /// Makes sure a block of `block`'s kind is open, starting `block` when needed.
    fn enter(&mut self, buffer: &mut BytesMut, block: ContentBlock<'_>) {
        if self.open != Some(OpenBlock::of(&block)) {
            self.open(buffer, block);
        }
    }

    /// Closes the open block, if any, and starts `block`.
    fn open(&mut self, buffer: &mut BytesMut, block: ContentBlock<'_>) {
        self.close(buffer);
        self.open = Some(OpenBlock::of(&block));
        let start = StreamEvent::ContentBlockStart {
            index: self.index,
            content_block: block,
        };
        frame(buffer, &start);
    }

    fn delta(&self, buffer: &mut BytesMut, delta: BlockDelta<'_>) {
        let index = self.index;
        frame(buffer, &StreamEvent::ContentBlockDelta { index, delta });
    }

    fn close(&mut self, buffer: &mut BytesMut) {
        if self.open.take().is_some() {
            frame(buffer, &StreamEvent::ContentBlockStop { index: self.index });
            self.index += 1;
        }
    }
}

impl OpenBlock {
    fn of(block: &ContentBlock<'_>) -> Self {
        match block {
            ContentBlock::Thinking { .. } => Self::Thinking,
            ContentBlock::Text { .. } => Self::Text,
            ContentBlock::ToolUse { .. } => Self::ToolUse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Conversation {
        let request: MessagesRequest = serde_json::from_value(body).expect("valid request");
        Anthropic::conversation(request)
    }

    #[test]
    fn tool_results_in_user_messages_do_not_hide_the_user_text() {
        let conversation = parse(json!({
            "model": "claude-test",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "what time"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {"tz": "UTC"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "12:00"}]}
                ]}
            ],
            "tools": [{"name": "now", "input_schema": {"type": "object"}}],
        }));
        assert_eq!(conversation.system, "be brief");
        assert_eq!(conversation.tools, ["now"]);
        assert_eq!(conversation.last_user_text(), Some("what time"));
        assert_eq!(conversation.step_index(), 1);
        assert!(conversation.answers_tool_result());
        assert_eq!(conversation.messages[2].tool_results[0].content, "12:00");
    }

    #[test]
    fn max_tokens_is_required() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let error = serde_json::from_value::<MessagesRequest>(body).expect_err("must fail");
        assert!(error.to_string().contains("max_tokens"), "{error}");
    }

    #[test]
    fn api_key_header_is_checked_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!Anthropic::authorized(&headers, "k"));
        headers.insert("x-api-key", "k".parse().expect("header"));
        assert!(Anthropic::authorized(&headers, "k"));
        assert!(!Anthropic::authorized(&headers, "other"));
    }
}
