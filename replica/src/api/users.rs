//! `/users/me`: who the caller is.

use axum::{Json, extract::State};
use chatd_shared::api::{ErrorResponse, User};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_me))
}

/// The user the token belongs to.
#[utoipa::path(
    get, path = "/users/me", tag = "users",
    responses(
        (status = 200, body = User, description = "The caller"),
        (status = 401, body = ErrorResponse, description = "No token, or one that is \
            malformed, unknown, revoked or expired, or whose user is gone (`unauthorized`)"),
    )
)]
async fn get_me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<User>> {
    match state.accounts.user(caller.user_id).await? {
        Some(user) => Ok(Json(User::from(&user))),
        None => Err(ApiError::unauthorized("the token's user no longer exists")),
    }
}
