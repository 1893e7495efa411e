//! Usage analytics (ARCHITECTURE.md §17, "Cost"): `/users/me/usage` (the caller's)
//! and `/admin/usage` (everyone's), read from the daily usage rollup, never
//! from the messages.

use axum::{Json, extract::State};
use chatd_shared::{
    api::{ErrorResponse, UsageReport, UsageRow},
    db::usage::{UsageGroup, UsageQuery},
    ids::UserId,
};
use chrono::{Days, NaiveDate, Utc};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    admin::Admin,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::ApiQuery,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_usage))
        .routes(routes!(admin_usage))
}

/// Days a range spans at most.
const MAX_DAYS: u64 = 366;
/// Days a range spans when `from` is left out.
const DEFAULT_DAYS: u64 = 30;

/// How a user's usage is grouped.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum UserGroupBy {
    /// One row per day (UTC).
    Day,
    /// One row per model config.
    Model,
}

/// How everyone's usage is grouped.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum AdminGroupBy {
    /// One row per user.
    User,
    /// One row per model config.
    Model,
    /// One row per day (UTC).
    Day,
}

/// Query of `GET /users/me/usage` (unknown parameters are refused).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserUsageQuery {
    /// First day counted (`YYYY-MM-DD`, UTC; default: 29 days before `to`).
    #[schema(nullable = false)]
    from: Option<NaiveDate>,
    /// Last day counted, inclusive (default: today, UTC).
    #[schema(nullable = false)]
    to: Option<NaiveDate>,
    /// Rows per `day` (default) or per `model`.
    #[schema(nullable = false, inline)]
    group_by: Option<UserGroupBy>,
}

/// Query of `GET /admin/usage` (unknown parameters are refused).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminUsageQuery {
    /// First day counted (`YYYY-MM-DD`, UTC; default: 29 days before `to`).
    #[schema(nullable = false)]
    from: Option<NaiveDate>,
    /// Last day counted, inclusive (default: today, UTC).
    #[schema(nullable = false)]
    to: Option<NaiveDate>,
    /// Rows per `user` (default), per `model` or per `day`.
    #[schema(nullable = false, inline)]
    group_by: Option<AdminGroupBy>,
}

/// The range of days asked for: `to` (default today) back to `from`
/// (default 30 days in all); a 422 when it is reversed or over a year.
fn range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> ApiResult<(NaiveDate, NaiveDate)> {
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let from = match from {
        Some(from) => from,
        None => to
            .checked_sub_days(Days::new(DEFAULT_DAYS - 1))
            .unwrap_or(NaiveDate::MIN),
    };
    if from > to {
        return Err(ApiError::unprocessable(
            "invalid_range",
            "from must not be after to",
        ));
    }
    if (to - from).num_days() >= MAX_DAYS as i64 {
        return Err(ApiError::unprocessable(
            "invalid_range",
            format!("a range spans at most {MAX_DAYS} days"),
        ));
    }
    Ok((from, to))
}

async fn report(
    state: &AppState,
    user: Option<UserId>,
    (from, to): (NaiveDate, NaiveDate),
    group: UsageGroup,
) -> ApiResult<Json<UsageReport>> {
    let query = UsageQuery {
        user,
        from,
        to,
        group,
    };
    let report = state.settings.usage(&query).await?;
    Ok(Json(UsageReport {
        total_cost_micros: report.total_cost_micros,
        input_tokens: report.input_tokens,
        output_tokens: report.output_tokens,
        rows: report
            .rows
            .into_iter()
            .map(|row| UsageRow {
                key: row.key,
                cost_micros: row.cost_micros,
                input_tokens: row.input_tokens,
                output_tokens: row.output_tokens,
                turns: row.turns,
            })
            .collect(),
    }))
}

/// The caller's cost, tokens and turns per day or per model over a range
/// of days (UTC).
#[utoipa::path(
    get, path = "/users/me/usage", tag = "users",
    params(("query" = inline(Option<UserUsageQuery>), Query, style = Form, explode)),
    responses(
        (status = 200, body = UsageReport, description = "Totals and one row per group"),
        (status = 422, body = ErrorResponse, description = "`from` after `to`, or over 366 days (`invalid_range`)"),
    )
)]
async fn my_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UserUsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let group = match query.group_by.unwrap_or(UserGroupBy::Day) {
        UserGroupBy::Day => UsageGroup::Day,
        UserGroupBy::Model => UsageGroup::Model,
    };
    let range = range(query.from, query.to)?;
    report(&state, Some(caller.user_id), range, group).await
}

/// Everyone's cost, tokens and turns per user, model or day over a range
/// of days (UTC).
#[utoipa::path(
    get, path = "/admin/usage", tag = "admin",
    params(("query" = inline(Option<AdminUsageQuery>), Query, style = Form, explode)),
    responses(
        (status = 200, body = UsageReport, description = "Totals and one row per group"),
        (status = 422, body = ErrorResponse, description = "`from` after `to`, or over 366 days (`invalid_range`)"),
    )
)]
async fn admin_usage(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<AdminUsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let group = match query.group_by.unwrap_or(AdminGroupBy::User) {
        AdminGroupBy::User => UsageGroup::User,
        AdminGroupBy::Model => UsageGroup::Model,
        AdminGroupBy::Day => UsageGroup::Day,
    };
    let range = range(query.from, query.to)?;
    report(&state, None, range, group).await
}
