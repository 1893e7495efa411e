//! `/admin/*`: users and their tokens, providers, model configs, MCP
//! servers (ARCHITECTURE.md §2, §9, §17), and the operators' diagnosis (§11). Admins
//! only: every handler takes [`Admin`], so anyone else gets a 403 before
//! their request is looked at.

mod diagnosis;
mod mcp_servers;
mod model_configs;
mod providers;
mod users;

use std::ops::RangeInclusive;

use axum::{extract::FromRequestParts, http::request::Parts};
use utoipa_axum::router::OpenApiRouter;

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(users::routes())
        .merge(providers::routes())
        .merge(model_configs::routes())
        .merge(mcp_servers::routes())
        .merge(diagnosis::routes())
}

/// A caller with the admin role: 401 without a valid token, 403 for members.
pub(super) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Caller::from_request_parts(parts, state)
            .await?
            .require_admin()?;
        Ok(Self)
    }
}

/// `value` trimmed, if it has a length in `chars` and no control
/// characters; a 422 with `code` naming `field` otherwise.
fn text_field<'a>(
    value: &'a str,
    field: &str,
    code: &'static str,
    chars: RangeInclusive<usize>,
) -> ApiResult<&'a str> {
    let value = value.trim();
    if !chars.contains(&value.chars().count()) {
        let message = match (*chars.start(), *chars.end()) {
            (0, max) => format!("{field} must have at most {max} characters"),
            (min, max) => format!("{field} must have {min} to {max} characters"),
        };
        return Err(ApiError::unprocessable(code, message));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            code,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(value)
}
