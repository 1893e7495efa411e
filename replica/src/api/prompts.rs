//! System prompts (ARCHITECTURE.md §17): `/admin/system-prompt` (the deployment's,
//! admins only) and `/users/me/prompt` (the caller's own). Changes are
//! [`Settings`](crate::operations::Settings) operations.

use axum::{Json, extract::State};
use chatd_shared::api::{
    CustomPrompt, ErrorResponse, MAX_CUSTOM_PROMPT, MAX_DEPLOYMENT_PROMPT, SystemPrompt,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    admin::Admin,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::ApiJson,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_system_prompt, put_system_prompt))
        .routes(routes!(get_my_prompt, put_my_prompt))
}

/// A prompt of at most `max` characters (NUL is refused by the body's
/// extractor); a 422 with `code` naming `field` otherwise.
fn check_prompt(prompt: &str, field: &str, code: &'static str, max: usize) -> ApiResult<()> {
    if prompt.chars().count() > max {
        return Err(ApiError::unprocessable(
            code,
            format!("{field} has at most {max} characters"),
        ));
    }
    Ok(())
}

/// The deployment's system prompt: the first of the three system prompts
/// every model call gets (then the user's, then the chat's).
#[utoipa::path(
    get, path = "/admin/system-prompt", tag = "admin",
    responses((status = 200, body = SystemPrompt, description = "The deployment's system prompt"))
)]
async fn get_system_prompt(
    State(state): State<AppState>,
    _: Admin,
) -> ApiResult<Json<SystemPrompt>> {
    let system_prompt = state.settings.deployment_prompt().await?;
    Ok(Json(SystemPrompt { system_prompt }))
}

/// Replace the deployment's system prompt ("" removes it). Every replica's
/// next model call gets the new one.
#[utoipa::path(
    put, path = "/admin/system-prompt", tag = "admin", request_body = SystemPrompt,
    responses(
        (status = 200, body = SystemPrompt, description = "The new system prompt"),
        (status = 422, body = ErrorResponse, description = "Over 100,000 characters (`invalid_system_prompt`)"),
    )
)]
async fn put_system_prompt(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<SystemPrompt>,
) -> ApiResult<Json<SystemPrompt>> {
    check_prompt(
        &body.system_prompt,
        "system_prompt",
        "invalid_system_prompt",
        MAX_DEPLOYMENT_PROMPT,
    )?;
    state
        .settings
        .set_deployment_prompt(&body.system_prompt)
        .await?;
    Ok(Json(body))
}

/// The caller's own system prompt: every model call of their chats gets it
/// after the deployment's and before the chat's.
#[utoipa::path(
    get, path = "/users/me/prompt", tag = "users",
    responses((status = 200, body = CustomPrompt, description = "The caller's own system prompt"))
)]
async fn get_my_prompt(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<CustomPrompt>> {
    let custom_prompt = state.settings.user_prompt(caller.user_id).await?;
    Ok(Json(CustomPrompt { custom_prompt }))
}

/// Replace the caller's own system prompt ("" removes it). Their chats'
/// next model calls get it, on every replica.
#[utoipa::path(
    put, path = "/users/me/prompt", tag = "users", request_body = CustomPrompt,
    responses(
        (status = 200, body = CustomPrompt, description = "The new prompt"),
        (status = 422, body = ErrorResponse, description = "Over 20,000 characters (`invalid_custom_prompt`)"),
    )
)]
async fn put_my_prompt(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CustomPrompt>,
) -> ApiResult<Json<CustomPrompt>> {
    check_prompt(
        &body.custom_prompt,
        "custom_prompt",
        "invalid_custom_prompt",
        MAX_CUSTOM_PROMPT,
    )?;
    if !state
        .settings
        .set_user_prompt(caller.user_id, &body.custom_prompt)
        .await?
    {
        return Err(ApiError::unauthorized("the token's user no longer exists"));
    }
    Ok(Json(body))
}
