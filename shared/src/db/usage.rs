//! Usage analytics (ARCHITECTURE.md §17, "Cost"): cost, tokens and turns per day,
//! user and model, read from the `usage_daily` rollup that step commits
//! keep ([`super::accounting`]), never from the messages.

use chrono::NaiveDate;

use super::{DbResult, GenericClient};
use crate::ids::UserId;

/// How usage rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    /// One row per day (UTC).
    Day,
    /// One row per model config.
    Model,
    /// One row per user.
    User,
}

impl UsageGroup {
    /// The SQL expression of the group's key, as text.
    fn key(self) -> &'static str {
        match self {
            Self::Day => "day::text",
            Self::Model => "model_config_id::text",
            Self::User => "user_id::text",
        }
    }
}

/// One group's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The day (`YYYY-MM-DD`), model config id or user id.
    pub key: String,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Turns (model replies that ended a turn).
    pub turns: i64,
}

/// What the usage endpoints ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    /// One user's usage, or everyone's.
    pub user: Option<UserId>,
    /// The first day counted (UTC).
    pub from: NaiveDate,
    /// The last day counted (UTC), inclusive.
    pub to: NaiveDate,
    /// How rows are grouped.
    pub group: UsageGroup,
}

/// Usage per group from `query.from` to `query.to` (days inclusive), by key.
/// One user's rows are found through `(user_id, day)`, everyone's through
/// the primary key `(day, …)`: a few rows per day and model, whatever the
/// number of messages.
pub async fn usage(db: &impl GenericClient, query: &UsageQuery) -> DbResult<Vec<UsageRow>> {
    // Two statements rather than `$3 IS NULL OR user_id = $3`, which a
    // generic plan could not serve from the user's index.
    let whose = match query.user {
        Some(_) => "user_id = $3 AND",
        None => "$3::uuid IS NULL AND",
    };
    let sql = format!(
        "SELECT {key} AS key, sum(cost_micros)::bigint AS cost_micros,
                sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
                sum(turns)::bigint AS turns
         FROM usage_daily
         WHERE {whose} day BETWEEN $1 AND $2
         GROUP BY 1 ORDER BY 1",
        key = query.group.key(),
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[&query.from, &query.to, &query.user])
        .await?
        .iter()
        .map(|row| {
            Ok(UsageRow {
                key: row.try_get("key")?,
                cost_micros: row.try_get("cost_micros")?,
                input_tokens: row.try_get("input_tokens")?,
                output_tokens: row.try_get("output_tokens")?,
                turns: row.try_get("turns")?,
            })
        })
        .collect()
}
