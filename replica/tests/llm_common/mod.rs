//! Shared pieces of the LLM provider tests: a mock LLM server, prompts, and
//! what a call yielded.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::llm::{
    FinishReason, Prompt, PromptMessage, Provider, ProviderError, StreamEvent, StreamTimeouts,
    ToolSpec, start_call,
};
use chatd_shared::{
    parts::{Part, Usage},
    status::MessageRole,
};
use futures::StreamExt;
use serde_json::{Value, json};

/// The model every prompt asks for.
pub const MODEL: &str = "mock-model";

/// A mock LLM server on a free loopback port.
pub async fn server(behaviour: Behaviour) -> MockLlm {
    match MockLlm::start(behaviour).await {
        Ok(server) => server,
        Err(error) => panic!("cannot start the mock LLM: {error:?}"),
    }
}

/// The HTTP client, as a replica builds it.
pub fn http() -> reqwest::Client {
    chatd_replica::llm::http_client().expect("the HTTP client builds")
}

/// A prompt of the given messages, without system prompt or tools.
pub fn prompt(messages: Vec<PromptMessage>) -> Prompt {
    Prompt {
        model: MODEL.into(),
        system: None,
        messages,
        tools: Vec::new(),
        max_output_tokens: 512,
        options: Value::Null,
        files: Default::default(),
    }
}

/// A prompt of one user message.
pub fn ask(text: &str) -> Prompt {
    prompt(vec![user(text)])
}

/// A user message.
pub fn user(text: &str) -> PromptMessage {
    PromptMessage {
        role: MessageRole::User,
        content: vec![Part::text(text)],
    }
}

/// An assistant message.
pub fn assistant(content: Vec<Part>) -> PromptMessage {
    PromptMessage {
        role: MessageRole::Assistant,
        content,
    }
}

/// A tool message with one result.
pub fn tool_result(call_id: &str, name: &str, result: Value, is_error: bool) -> PromptMessage {
    PromptMessage {
        role: MessageRole::Tool,
        content: vec![Part::ToolResult {
            tool_call_id: call_id.into(),
            name: name.into(),
            result,
            is_error,
        }],
    }
}

/// A tool call part.
pub fn tool_call(id: &str, name: &str, args: Value) -> Part {
    Part::ToolCall {
        id: id.into(),
        name: name.into(),
        args,
    }
}

/// The `get_time` tool.
pub fn get_time_tool() -> ToolSpec {
    ToolSpec {
        name: "get_time".into(),
        description: "The current time in a time zone".into(),
        parameters: json!({
            "type": "object",
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
        }),
    }
}

/// Everything one call yielded: its events, and the error that ended it.
#[derive(Debug)]
pub struct Outcome {
    pub events: Vec<StreamEvent>,
    pub error: Option<ProviderError>,
}

/// A tool call put together from its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The concatenated argument fragments.
    pub args: String,
    /// How many fragments there were.
    pub fragments: usize,
}

impl Outcome {
    /// The concatenated text deltas.
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::TextDelta(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// How many text deltas there were.
    pub fn text_deltas(&self) -> usize {
        self.events
            .iter()
            .filter(|event| matches!(event, StreamEvent::TextDelta(_)))
            .count()
    }

    /// The concatenated reasoning deltas.
    pub fn reasoning(&self) -> String {
        self.events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::ReasoningDelta(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The concatenated reasoning signature, if any.
    pub fn signature(&self) -> Option<String> {
        let signature: String = self
            .events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::ReasoningSignature(signature) => Some(signature.as_str()),
                _ => None,
            })
            .collect();
        (!signature.is_empty()).then_some(signature)
    }

    /// The tool calls, by index; panics on a delta for a call never started.
    pub fn tool_calls(&self) -> Vec<Call> {
        let mut calls: Vec<Call> = Vec::new();
        for event in &self.events {
            match event {
                StreamEvent::ToolCallStart { index, id, name } => {
                    assert_eq!(*index, calls.len(), "tool calls start in index order");
                    calls.push(Call {
                        id: id.clone(),
                        name: name.clone(),
                        args: String::new(),
                        fragments: 0,
                    });
                }
                StreamEvent::ToolCallDelta { index, args } => {
                    let call = calls
                        .get_mut(*index)
                        .unwrap_or_else(|| panic!("delta for unknown call {index}"));
                    call.args.push_str(args);
                    call.fragments += 1;
                }
                _ => {}
            }
        }
        calls
    }

    /// The finish reason; `None` when the stream did not finish.
    pub fn finish(&self) -> Option<FinishReason> {
        self.events.iter().find_map(|event| match event {
            StreamEvent::Finish(reason) => Some(reason.clone()),
            _ => None,
        })
    }

    /// The usage, later reports overriding earlier ones field by field.
    pub fn usage(&self) -> Usage {
        let mut merged = Usage::default();
        for event in &self.events {
            if let StreamEvent::Usage(usage) = event {
                merged.input_tokens = usage.input_tokens.or(merged.input_tokens);
                merged.output_tokens = usage.output_tokens.or(merged.output_tokens);
                merged.reasoning_tokens = usage.reasoning_tokens.or(merged.reasoning_tokens);
                merged.cache_read_tokens = usage.cache_read_tokens.or(merged.cache_read_tokens);
                merged.cache_write_tokens = usage.cache_write_tokens.or(merged.cache_write_tokens);
            }
        }
        merged
    }

    /// Asserts the call completed: no error, `Finish` last.
    pub fn assert_complete(&self) {
        assert_eq!(self.error, None, "events so far: {:?}", self.events);
        assert!(
            matches!(self.events.last(), Some(StreamEvent::Finish(_))),
            "the stream must end with Finish: {:?}",
            self.events
        );
    }

    /// The error that ended the call; panics when it completed.
    pub fn error(&self) -> &ProviderError {
        match &self.error {
            Some(error) => error,
            None => panic!("expected an error, got {:?}", self.events),
        }
    }
}

/// Calls `provider` with the default timeouts and collects the result.
pub async fn call(provider: &dyn Provider, prompt: &Prompt) -> Outcome {
    call_with(provider, prompt, StreamTimeouts::default()).await
}

/// Calls `provider` with `timeouts` and collects the result.
pub async fn call_with(
    provider: &dyn Provider,
    prompt: &Prompt,
    timeouts: StreamTimeouts,
) -> Outcome {
    let mut stream = match start_call(provider, prompt, timeouts).await {
        Ok(stream) => stream,
        Err(error) => {
            return Outcome {
                events: Vec::new(),
                error: Some(error),
            };
        }
    };
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => {
                assert!(stream.next().await.is_none(), "nothing follows an error");
                return Outcome {
                    events,
                    error: Some(error),
                };
            }
        }
    }
    Outcome {
        events,
        error: None,
    }
}

/// A one-shot HTTP server: it reads one request, answers with `response`
/// (status line, headers and body, as given) and closes the connection, so
/// a body without `Content-Length` ends cleanly where `response` ends.
/// Returns its `http://IP:PORT`.
pub async fn raw_http_server(response: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("one connection");
        // Read the whole request first: closing with unread input would
        // reset the connection instead of ending the body.
        let mut request = Vec::new();
        let mut buffer = [0; 4096];
        loop {
            let read = socket.read(&mut buffer).await.expect("read the request");
            request.extend_from_slice(&buffer[..read]);
            if read == 0 || request_complete(&request) {
                break;
            }
        }
        socket
            .write_all(response)
            .await
            .expect("write the response");
        socket.shutdown().await.expect("close the connection");
    });
    format!("http://{addr}")
}

/// Whether `request` holds its headers and the whole `Content-Length` body.
fn request_complete(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let headers = String::from_utf8_lossy(&request[..end]).to_lowercase();
    let length = headers
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}
