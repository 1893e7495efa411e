//! Message parts: the `content` array of a message and the payload of stream
//! `part` events (ARCHITECTURE.md §2). The same enum serves both; deltas are streamed
//! while a step is in progress and never stored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One piece of a message, or a delta of the step in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Part {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// The model's visible reasoning ("thinking").
    Reasoning {
        /// The reasoning text.
        text: String,
        /// Provider signature that must be sent back with the reasoning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// A tool call the model made.
    ToolCall {
        /// The provider's call id; results refer to it.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments (a JSON object).
        args: Value,
    },
    /// The result of a tool call.
    ToolResult {
        /// The call this answers.
        tool_call_id: String,
        /// Tool name, repeated for readers that only see the result.
        name: String,
        /// The result (any JSON).
        result: Value,
        /// True when the tool failed (or was unknown, timed out, interrupted).
        #[serde(default)]
        is_error: bool,
    },
    /// An attached file.
    File {
        /// The stored file's id.
        file_id: String,
        /// Its media type (`image/png`, …).
        media_type: String,
        /// Its display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A source the model cited.
    Source {
        /// Where it is.
        url: String,
        /// Its title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    /// Streaming only: more text of the current text part.
    TextDelta {
        /// The new text.
        text: String,
    },
    /// Streaming only: more reasoning text.
    ReasoningDelta {
        /// The new reasoning text.
        text: String,
    },
    /// Streaming only: more of a tool call's JSON arguments.
    ToolCallDelta {
        /// The call id.
        id: String,
        /// The tool name (repeated on every delta so a late joiner knows it).
        name: String,
        /// The next fragment of the arguments' JSON text.
        args_delta: String,
    },
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// True for the variants that only exist while streaming.
    pub fn is_delta(&self) -> bool {
        matches!(
            self,
            Self::TextDelta { .. } | Self::ReasoningDelta { .. } | Self::ToolCallDelta { .. }
        )
    }
}

/// Token usage of one model call, stored on the assistant message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Prompt tokens (including cached ones).
    pub input_tokens: Option<i64>,
    /// Completion tokens (including reasoning).
    pub output_tokens: Option<i64>,
    /// Of the output, tokens spent reasoning.
    pub reasoning_tokens: Option<i64>,
    /// Prompt tokens read from the provider's cache.
    pub cache_read_tokens: Option<i64>,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: Option<i64>,
}

impl Usage {
    /// Takes in a later report of the same call: each field it has replaces
    /// the earlier one (Anthropic reports input tokens first, output last).
    pub fn merge(&mut self, later: &Usage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.reasoning_tokens = later.reasoning_tokens.or(self.reasoning_tokens);
        self.cache_read_tokens = later.cache_read_tokens.or(self.cache_read_tokens);
        self.cache_write_tokens = later.cache_write_tokens.or(self.cache_write_tokens);
    }
}
