//! Spend limits (ARCHITECTURE.md §17): the deployment's default and period
//! (`/admin/spend-limits`), per-user overrides
//! (`/admin/users/{id}/spend-limit`), and a user's spend (`/users/me/spend`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::admin::optional_whole;
use crate::{ids::UserId, status::SpendPeriod};

/// `GET`/`PUT /admin/spend-limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendLimits {
    /// Every user's limit per period in micro-dollars unless they have an
    /// override; `null` (or left out): no limit.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 0)]
    pub default_limit_micros: Option<i64>,
    /// The period limits count over; periods start at midnight UTC (each
    /// day, each Monday, the first of each month).
    pub period: SpendPeriod,
}

/// `PUT /admin/users/{id}/spend-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpendLimit {
    /// The user's limit per period in micro-dollars; `null` (or left out)
    /// removes the override: the default applies again.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 0)]
    pub limit_micros: Option<i64>,
}

/// `PUT /admin/users/{id}/spend-limit`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserSpendLimitSet {
    /// The user.
    pub user_id: UserId,
    /// Their override (`null`: none, the default applies).
    pub limit_micros: Option<i64>,
}

/// `GET /users/me/spend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Spend {
    /// Spent in the current period, in micro-dollars.
    pub spent_micros: i64,
    /// Reserved by model calls in flight.
    pub reserved_micros: i64,
    /// The limit per period that applies (`null`: none).
    pub limit_micros: Option<i64>,
    /// The period.
    pub period: SpendPeriod,
    /// When the current period ends.
    pub resets_at: DateTime<Utc>,
}

/// The `details` of a `spend_limit_exceeded` error (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpendLimitExceeded {
    /// Spent in the current period, in micro-dollars.
    pub spent_micros: i64,
    /// The limit per period.
    pub limit_micros: i64,
    /// When the current period ends.
    pub resets_at: DateTime<Utc>,
}
