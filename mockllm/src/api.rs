//! Which provider wire format a request used.

/// The two wire formats the mock speaks. The engine needs it only for the
/// shape of generated tool-call ids; recordings say which endpoint was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
}

impl Api {
    /// The request path of the API's endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Self::OpenAi => "/v1/chat/completions",
            Self::Anthropic => "/v1/messages",
        }
    }

    /// The prefix the provider uses for tool-call ids.
    pub fn tool_call_id_prefix(self) -> &'static str {
        match self {
            Self::OpenAi => "call_",
            Self::Anthropic => "toolu_",
        }
    }
}
