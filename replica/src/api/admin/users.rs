//! `/admin/users`: users and their tokens. A token's secret is in the answer
//! that creates it and nowhere else; revoking one reaches every replica's
//! token cache. The changes are [`Accounts`](crate::operations::Accounts)
//! operations.

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{
        CreateToken, CreateUser, ErrorResponse, MAX_TOKEN_NAME, MAX_USERNAME, Token, TokenCreated,
        User,
    },
    ids::{TokenId, UserId},
    status::UserRole,
};
use chrono::Utc;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Admin, text_field};
use crate::{
    api::{
        AppState,
        error::{ApiError, ApiResult},
        extract::{ApiJson, ApiPath},
    },
    operations::{CreateTokenOutcome, CreateUserOutcome},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// The path of a user.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UserPath {
    /// The user.
    id: UserId,
}

/// The path of a user's token.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct TokenPath {
    /// The user.
    id: UserId,
    /// The token.
    token_id: TokenId,
}

const NO_USER: &str = "No such user (`not_found`)";

/// Every user, by username.
#[utoipa::path(
    get, path = "/admin/users", tag = "admin",
    responses((status = 200, body = Vec<User>, description = "The users"))
)]
async fn list_users(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Vec<User>>> {
    let rows = state.accounts.users().await?;
    Ok(Json(rows.iter().map(User::from).collect()))
}

/// Create a user (a member unless `role` says otherwise). It has no token
/// yet: create one with `POST /admin/users/{id}/tokens`.
#[utoipa::path(
    post, path = "/admin/users", tag = "admin", request_body = CreateUser,
    responses(
        (status = 201, body = User, description = "Created"),
        (status = 409, body = ErrorResponse, description = "The username is taken (`username_taken`)"),
        (status = 422, body = ErrorResponse, description = "The username breaks a rule its schema \
            states (`invalid_username`)"),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let username = text_field(
        &body.username,
        "username",
        "invalid_username",
        1..=MAX_USERNAME,
    )?;
    let role = body.role.unwrap_or(UserRole::Member);
    match state.accounts.create_user(username, role).await? {
        CreateUserOutcome::Created(row) => Ok((StatusCode::CREATED, Json(User::from(&row)))),
        CreateUserOutcome::UsernameTaken => Err(ApiError::conflict(
            "username_taken",
            format!("the username {username:?} is taken"),
        )),
    }
}

/// One user.
#[utoipa::path(
    get, path = "/admin/users/{id}", tag = "admin", params(UserPath),
    responses(
        (status = 200, body = User, description = "The user"),
        (status = 404, body = ErrorResponse, description = NO_USER),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<User>> {
    match state.accounts.user(id).await? {
        Some(user) => Ok(Json(User::from(&user))),
        None => Err(ApiError::not_found("user")),
    }
}

/// A user's tokens, newest first, revoked ones included (never the secrets).
#[utoipa::path(
    get, path = "/admin/users/{id}/tokens", tag = "admin", params(UserPath),
    responses(
        (status = 200, body = Vec<Token>, description = "The user's tokens"),
        (status = 404, body = ErrorResponse, description = NO_USER),
    )
)]
async fn list_tokens(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<Vec<Token>>> {
    match state.accounts.tokens(id).await? {
        Some(rows) => Ok(Json(rows.iter().map(Token::from).collect())),
        None => Err(ApiError::not_found("user")),
    }
}

/// Create a token for a user. The answer holds the secret, which is shown
/// this once: only its hash is stored.
#[utoipa::path(
    post, path = "/admin/users/{id}/tokens", tag = "admin", params(UserPath),
    request_body = CreateToken,
    responses(
        (status = 201, body = TokenCreated, description = "Created; `token` is the secret"),
        (status = 404, body = ErrorResponse, description = NO_USER),
        (status = 422, body = ErrorResponse, description = "`expires_at` is not in the future \
            (`invalid_expires_at`), or the name breaks a rule its schema states (`invalid_name`)"),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(user_id): ApiPath<UserId>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let name = text_field(
        body.name.as_deref().unwrap_or_default(),
        "name",
        "invalid_name",
        0..=MAX_TOKEN_NAME,
    )?;
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::unprocessable(
            "invalid_expires_at",
            "expires_at must be in the future",
        ));
    }
    match state
        .accounts
        .create_token(user_id, name, body.expires_at)
        .await?
    {
        CreateTokenOutcome::Created { secret, token } => {
            let created = TokenCreated {
                token: secret,
                details: Token::from(token.as_ref()),
            };
            Ok((StatusCode::CREATED, Json(created)))
        }
        CreateTokenOutcome::UserNotFound => Err(ApiError::not_found("user")),
    }
}

/// Revoke a token. The replica that answers refuses it at once, the others
/// as soon as the `TokensChanged` notice reaches them (within their token
/// cache's minute if it is lost).
#[utoipa::path(
    delete, path = "/admin/users/{id}/tokens/{token_id}", tag = "admin", params(TokenPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, body = ErrorResponse, description = "No such token of this user, or revoked \
            already (`not_found`)"),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    _: Admin,
    ApiPath((user_id, token_id)): ApiPath<(UserId, TokenId)>,
) -> ApiResult<StatusCode> {
    if !state.accounts.revoke_token(user_id, token_id).await? {
        return Err(ApiError::not_found("token"));
    }
    // This replica's cache forgets at once; the others when the
    // announcement reaches them.
    state.tokens.clear();
    Ok(StatusCode::NO_CONTENT)
}
