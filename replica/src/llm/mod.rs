//! LLM providers: one streaming model call behind one trait (ARCHITECTURE.md §8).
//!
//! Only the modules in here know a wire format. The rest of chatd builds a
//! [`Prompt`] from our message parts and consumes [`StreamEvent`]s; errors
//! come back classified ([`ProviderError::is_retryable`]) so the turn loop
//! decides about retries. No provider ever retries or re-POSTs by itself: a
//! silent retry doubles cost.
//!
//! # Layout
//!
//! - [`OpenAiProvider`], [`AnthropicProvider`]: the two HTTP wire formats;
//!   [`MockProvider`]: chatd's in-process model.
//! - [`build`] turns a `providers` row into one of them; [`http_client`] is
//!   the one HTTP client a replica shares between them.
//! - [`start_call`] is how the turn loop calls a provider: it adds the
//!   first-chunk and idle timeouts. [`Provider::complete`] is the
//!   non-streaming call of titles and compaction summaries (`complete`
//!   holds what the wire formats share for it).
//! - Private: `error` classifies failures the same way for every provider,
//!   `sse` reads server-sent events, `prompt` holds what both wire formats
//!   share when rendering a [`Prompt`].

mod anthropic;
mod call;
mod complete;
mod config;
mod error;
mod mock;
mod openai;
mod prompt;
mod sse;

pub use anthropic::AnthropicProvider;
pub use call::start_call;
pub use complete::Completion;
pub use config::{ProviderConfigError, build, http_client};
pub use mock::MockProvider;
pub use openai::OpenAiProvider;
pub(crate) use prompt::joined_text;

use std::{pin::Pin, sync::Arc, time::Duration};

use chatd_shared::{
    parts::{Part, Usage},
    status::MessageRole,
};
use futures::Stream;

/// One model call's input, provider-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The provider's model name.
    pub model: String,
    /// The system prompt, if any.
    pub system: Option<String>,
    /// The conversation in id order: `user`, `assistant` (text, reasoning,
    /// tool calls) and `tool` (tool results) messages.
    pub messages: Vec<PromptMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Output token cap.
    pub max_output_tokens: u32,
    /// Provider-specific request options from the model config (temperature,
    /// reasoning effort, …), merged into the request body as given.
    pub options: serde_json::Value,
    /// The attachments `file` parts refer to, loaded by the turn loop
    /// before each call; a part whose file is missing here is sent as a note.
    pub files: PromptFiles,
}

/// A prompt's attachments by file id (the `file_id` of `file` parts).
pub type PromptFiles = std::collections::HashMap<String, PromptFile>;

/// An attachment as a model can be given it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFile {
    /// Its display name.
    pub name: String,
    /// Its (sniffed) media type.
    pub media_type: String,
    /// Its content, prepared once when loaded.
    pub content: FileContent,
}

/// An attachment's content in the form wire formats send it.
#[derive(Debug, Clone, PartialEq)]
pub enum FileContent {
    /// Images and PDFs: the bytes in base64.
    Base64(Arc<str>),
    /// Text, Markdown and JSON files: the text.
    Text(Arc<str>),
}

/// One message of a [`Prompt`].
#[derive(Debug, Clone, PartialEq)]
pub struct PromptMessage {
    /// Who it is from (`system` messages are folded into the system prompt).
    pub role: MessageRole,
    /// Its parts (never deltas).
    pub content: Vec<Part>,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub parameters: serde_json::Value,
}

/// What a streaming call yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More text.
    TextDelta(String),
    /// More reasoning ("thinking") text.
    ReasoningDelta(String),
    /// The signature of the reasoning so far (must be sent back with it).
    ReasoningSignature(String),
    /// A tool call begins. `index` orders parallel calls.
    ToolCallStart {
        /// Position among this response's tool calls (0, 1, …).
        index: usize,
        /// The provider's call id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of a tool call's JSON arguments.
    ToolCallDelta {
        /// Which call.
        index: usize,
        /// The next fragment of the arguments' JSON text.
        args: String,
    },
    /// Token usage. May come more than once (Anthropic reports input tokens
    /// first, output tokens last): later values of a field replace earlier ones.
    Usage(Usage),
    /// The response is complete. Nothing follows.
    Finish(FinishReason),
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// It finished its answer.
    Stop,
    /// It wants tool results.
    ToolCalls,
    /// It hit the output token cap.
    Length,
    /// The provider filtered the content.
    ContentFilter,
    /// Anything else the provider said.
    Other(String),
}

/// The events of one call. It ends after `Finish`, or with an error.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// A streaming model endpoint.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name, for errors and metrics.
    fn name(&self) -> &str;

    /// Sends one request and returns its event stream once the response
    /// headers arrived. Never retries by itself.
    async fn stream(&self, prompt: &Prompt) -> Result<EventStream, ProviderError>;

    /// Sends one non-streaming request and returns the whole answer (text
    /// and usage). Never retries by itself, and has no timeout of its own:
    /// the caller bounds it. Without an override, the streamed answer is
    /// read whole.
    async fn complete(&self, prompt: &Prompt) -> Result<Completion, ProviderError> {
        complete::collect(self.stream(prompt).await?).await
    }
}

/// What kind of failure a provider call had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 429: slow down (honour `retry_after`).
    RateLimited,
    /// The provider is overloaded (Anthropic 529, `overloaded_error`).
    Overloaded,
    /// 5xx.
    Server,
    /// No first chunk, or no next chunk, in time.
    Timeout,
    /// The connection failed or was cut (reset, EOF mid-stream).
    Connection,
    /// 401/403: the key is wrong or lacks access.
    Auth,
    /// The model does not exist (404, `model_not_found`).
    InvalidModel,
    /// The prompt does not fit the model's context window.
    ContextTooLong,
    /// Any other 4xx: the request is malformed.
    BadRequest,
    /// The response could not be understood (wrong content type, not SSE,
    /// JSON we cannot parse).
    InvalidResponse,
}

impl ErrorKind {
    /// Worth trying again (after a backoff)?
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::Overloaded | Self::Server | Self::Timeout | Self::Connection
        )
    }

    /// The stable snake_case name used in error events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Server => "server_error",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Auth => "auth",
            Self::InvalidModel => "invalid_model",
            Self::ContextTooLong => "context_too_long",
            Self::BadRequest => "bad_request",
            Self::InvalidResponse => "invalid_response",
        }
    }
}

/// A failed provider call, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderError {
    /// The provider's name.
    pub provider: String,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// HTTP status, when there was one.
    pub status: Option<u16>,
    /// A human sentence (from the provider's error body when it sent one).
    pub message: String,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// Worth trying again?
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// Timeouts every call gets (ARCHITECTURE.md §8).
#[derive(Debug, Clone, Copy)]
pub struct StreamTimeouts {
    /// From sending the request to the first event.
    pub first_chunk: Duration,
    /// Between two events.
    pub idle: Duration,
}

impl Default for StreamTimeouts {
    fn default() -> Self {
        Self {
            first_chunk: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// A shared provider.
pub type SharedProvider = Arc<dyn Provider>;
