//! The error body every failed request gets (ARCHITECTURE.md §9).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ApiErrorBody,
}

/// The `error` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    /// A stable snake_case code (`not_found`, `queue_full`, …).
    pub code: String,
    /// A human sentence.
    pub message: String,
    /// Anything more specific (the field that was wrong, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}
