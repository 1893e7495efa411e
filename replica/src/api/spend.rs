//! Spend limits (ARCHITECTURE.md §17): `/admin/spend-limits` (the default limit and
//! its period), `/admin/users/{id}/spend-limit` (a user's override), and
//! `/users/me/spend` (the caller's spend). A send over the limit is a 409
//! `spend_limit_exceeded` ([`spend_limit_exceeded`]).

use axum::{Json, extract::State};
use chatd_shared::{
    api::{
        ErrorResponse, Spend, SpendLimitExceeded, SpendLimits, UserSpendLimit, UserSpendLimitSet,
    },
    db::spend::SpendSettings,
    ids::UserId,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    admin::Admin,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath},
};
use crate::operations::SpendRefusal;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_spend_limits, put_spend_limits))
        .routes(routes!(put_user_spend_limit))
        .routes(routes!(get_my_spend))
}

/// The 409 of a send refused at the spend limit, with what was spent, the
/// limit and when it resets in `details`.
pub(super) fn spend_limit_exceeded(refusal: SpendRefusal) -> ApiError {
    let details = SpendLimitExceeded {
        spent_micros: refusal.spent_micros,
        limit_micros: refusal.limit_micros,
        resets_at: refusal.resets_at,
    };
    ApiError::conflict(SpendRefusal::CODE, refusal.message())
        .with_details(serde_json::to_value(details).unwrap_or_default())
}

/// A limit that is not negative; a 422 naming `field` otherwise.
fn check_limit(limit: Option<i64>, field: &str) -> ApiResult<()> {
    if limit.is_some_and(|limit| limit < 0) {
        return Err(ApiError::unprocessable(
            "invalid_limit",
            format!("{field} must not be negative"),
        ));
    }
    Ok(())
}

/// The default spend limit and the period limits count over.
#[utoipa::path(
    get, path = "/admin/spend-limits", tag = "admin",
    responses((status = 200, body = SpendLimits, description = "The default limit and its period"))
)]
async fn get_spend_limits(State(state): State<AppState>, _: Admin) -> ApiResult<Json<SpendLimits>> {
    let settings = state.settings.spend_limits().await?;
    Ok(Json(SpendLimits {
        default_limit_micros: settings.default_limit_micros,
        period: settings.period,
    }))
}

/// Replace the default spend limit (per user and period; `null`: none) and
/// the period. Sends and turns on every replica hold to it from then on.
#[utoipa::path(
    put, path = "/admin/spend-limits", tag = "admin", request_body = SpendLimits,
    responses(
        (status = 200, body = SpendLimits, description = "The new settings"),
        (status = 422, body = ErrorResponse, description = "A negative limit (`invalid_limit`)"),
    )
)]
async fn put_spend_limits(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<SpendLimits>,
) -> ApiResult<Json<SpendLimits>> {
    check_limit(body.default_limit_micros, "default_limit_micros")?;
    let settings = SpendSettings {
        default_limit_micros: body.default_limit_micros,
        period: body.period,
    };
    state.settings.set_spend_limits(&settings).await?;
    Ok(Json(body))
}

/// The path of a user.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UserPath {
    /// The user.
    id: UserId,
}

/// Set a user's own spend limit per period (`null` removes it: the default
/// applies again).
#[utoipa::path(
    put, path = "/admin/users/{id}/spend-limit", tag = "admin", params(UserPath),
    request_body = UserSpendLimit,
    responses(
        (status = 200, body = UserSpendLimitSet, description = "The user's override"),
        (status = 404, body = ErrorResponse, description = "No such user (`not_found`)"),
        (status = 422, body = ErrorResponse, description = "A negative limit (`invalid_limit`)"),
    )
)]
async fn put_user_spend_limit(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<UserSpendLimit>,
) -> ApiResult<Json<UserSpendLimitSet>> {
    check_limit(body.limit_micros, "limit_micros")?;
    if !state
        .settings
        .set_user_spend_limit(id, body.limit_micros)
        .await?
    {
        return Err(ApiError::not_found("user"));
    }
    Ok(Json(UserSpendLimitSet {
        user_id: id,
        limit_micros: body.limit_micros,
    }))
}

/// What the caller spent in the current period, what their turns in
/// flight reserved, and the limit that applies.
#[utoipa::path(
    get, path = "/users/me/spend", tag = "users",
    responses((status = 200, body = Spend, description = "The caller's spend and limit"))
)]
async fn get_my_spend(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Spend>> {
    let spend = state.settings.spend(caller.user_id).await?;
    Ok(Json(Spend {
        spent_micros: spend.spent_micros,
        reserved_micros: spend.reserved_micros,
        limit_micros: spend.limit_micros,
        period: spend.period,
        resets_at: spend.resets_at,
    }))
}
