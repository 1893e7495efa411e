//! Usage analytics (ARCHITECTURE.md §17, "Cost"): `/users/me/usage` and
//! `/admin/usage`.

use serde::{Deserialize, Serialize};

/// `GET /users/me/usage` and `GET /admin/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// Cost of everything in the range, in micro-dollars.
    pub total_cost_micros: i64,
    /// Input tokens of everything in the range.
    pub input_tokens: i64,
    /// Output tokens of everything in the range.
    pub output_tokens: i64,
    /// One row per group, by key.
    pub rows: Vec<UsageRow>,
}

/// One group's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// The group: a day (`YYYY-MM-DD`, UTC), a model config id or a user id.
    pub key: String,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Turns that ended with a model reply.
    pub turns: i64,
}
