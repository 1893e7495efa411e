//! `/chats`: create, list, read, change, delete, interrupt.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chatd_shared::{
    api::{self, ChatList, CreateChat, UpdateChat, content::user_content},
    db::chats::ChatWithQueue,
    ids::ChatId,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, ApiQuery},
    messages::{content_error, idempotency_key},
};
use crate::operations::{
    ChatChanges, CreateOutcome, InterruptOutcome, ModelRefused, NewChatRequest,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_chat, list_chats))
        .routes(routes!(get_chat, update_chat, delete_chat))
        .routes(routes!(interrupt_chat))
}

/// Longest title.
const MAX_TITLE: usize = 200;
/// Longest system prompt (characters).
const MAX_SYSTEM_PROMPT: usize = 100_000;
/// Largest labels object (bytes of JSON).
const MAX_LABELS: usize = 16 * 1024;

/// The chat as clients see it.
fn chat_view((chat, queued): &ChatWithQueue) -> Json<api::Chat> {
    Json(api::Chat::from_row(chat, *queued))
}

/// A model that cannot be used: 422.
pub(super) fn model_error(refused: ModelRefused) -> ApiError {
    match refused {
        ModelRefused::Missing(id) => {
            ApiError::unprocessable("invalid_model", format!("model config {id} does not exist"))
        }
        ModelRefused::NoDefault => ApiError::unprocessable(
            "no_model",
            "no default model is configured; pass model_config_id or ask an admin",
        ),
        ModelRefused::Unavailable(name) => {
            ApiError::unprocessable("invalid_model", format!("model {name} is not available"))
        }
    }
}

fn check_labels(labels: &Value) -> ApiResult<()> {
    if !labels.is_object() {
        return Err(ApiError::unprocessable(
            "invalid_labels",
            "labels must be a JSON object",
        ));
    }
    if labels.to_string().len() > MAX_LABELS {
        return Err(ApiError::unprocessable(
            "invalid_labels",
            format!("labels must stay under {MAX_LABELS} bytes"),
        ));
    }
    Ok(())
}

fn check_title(title: &str) -> ApiResult<()> {
    if title.chars().count() > MAX_TITLE {
        return Err(ApiError::unprocessable(
            "invalid_title",
            format!("a title has at most {MAX_TITLE} characters"),
        ));
    }
    Ok(())
}

/// Create a chat; with `content` or `text` it starts running at once.
#[utoipa::path(
    post, path = "/chats", tag = "chats",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays return the original chat (200)")),
    request_body = CreateChat,
    responses(
        (status = 201, body = api::Chat, description = "Created"),
        (status = 200, body = api::Chat, description = "Replay of an idempotency key"),
        (status = 400, body = api::ErrorResponse), (status = 401, body = api::ErrorResponse),
        (status = 409, body = api::ErrorResponse, description = "With a first message, the caller's spend reached their limit (`spend_limit_exceeded`, `details`: `SpendLimitExceeded`)"),
        (status = 422, body = api::ErrorResponse),
    )
)]
async fn create_chat(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateChat>,
) -> ApiResult<(StatusCode, Json<api::Chat>)> {
    let key = idempotency_key(&headers)?;
    let first = match (&body.content, &body.text) {
        (None, None) => None,
        _ => Some(user_content(body.content, body.text).map_err(content_error)?),
    };
    let title = body.title.unwrap_or_default();
    check_title(&title)?;
    if body
        .system_prompt
        .as_ref()
        .is_some_and(|p| p.chars().count() > MAX_SYSTEM_PROMPT)
    {
        return Err(ApiError::unprocessable(
            "invalid_system_prompt",
            format!("a system prompt has at most {MAX_SYSTEM_PROMPT} characters"),
        ));
    }
    let labels = body
        .labels
        .unwrap_or_else(|| Value::Object(Default::default()));
    check_labels(&labels)?;
    let request = NewChatRequest {
        title: &title,
        system_prompt: body.system_prompt.as_deref(),
        labels: &labels,
        model: body.model_config_id,
        first: first.as_deref(),
        idempotency_key: key.as_deref(),
    };
    match state.ops.create(caller.access(), &request).await? {
        CreateOutcome::Created(chat) => {
            Ok((StatusCode::CREATED, Json(api::Chat::from_row(&chat, 0))))
        }
        CreateOutcome::Replayed(chat) => Ok((StatusCode::OK, Json(api::Chat::from_row(&chat, 0)))),
        CreateOutcome::Model(refused) => Err(model_error(refused)),
        CreateOutcome::SpendLimit(refusal) => Err(super::spend::spend_limit_exceeded(refusal)),
    }
}

/// Query of `GET /chats`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// List archived chats instead (default false).
    archived: Option<bool>,
}

/// Page size from a `limit` parameter (1–200, default 50).
pub(super) fn page_size(limit: Option<i64>) -> ApiResult<i64> {
    match limit.unwrap_or(50) {
        limit @ 1..=200 => Ok(limit),
        other => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and 200, not {other}"),
        )),
    }
}

/// The caller's chats, newest first (admins: everyone's).
#[utoipa::path(
    get, path = "/chats", tag = "chats", params(ListQuery),
    responses((status = 200, body = ChatList), (status = 400, body = api::ErrorResponse), (status = 401, body = api::ErrorResponse))
)]
async fn list_chats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<ChatList>> {
    let limit = page_size(query.limit)?;
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(cursor) => Some(cursor.parse::<ChatId>().map_err(|_| {
            ApiError::bad_request("invalid_query", "cursor is not a cursor this API gave out")
        })?),
    };
    let rows = state
        .ops
        .list(
            caller.access(),
            query.archived.unwrap_or(false),
            before,
            limit + 1,
        )
        .await?;
    let has_more = rows.len() as i64 > limit;
    let chats: Vec<api::Chat> = rows
        .iter()
        .take(limit as usize)
        .map(|(chat, queued)| api::Chat::from_row(chat, *queued))
        .collect();
    let next_cursor = has_more
        .then(|| chats.last().map(|chat| chat.id.to_string()))
        .flatten();
    Ok(Json(ChatList { chats, next_cursor }))
}

/// One chat.
#[utoipa::path(
    get, path = "/chats/{id}", tag = "chats", params(("id" = ChatId, Path)),
    responses((status = 200, body = api::Chat), (status = 404, body = api::ErrorResponse))
)]
async fn get_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<Json<api::Chat>> {
    match state.ops.chat(caller.access(), id).await? {
        Some(chat) => Ok(chat_view(&chat)),
        None => Err(ApiError::not_found("chat")),
    }
}

/// Change the title, labels, or archive / restore.
#[utoipa::path(
    patch, path = "/chats/{id}", tag = "chats", params(("id" = ChatId, Path)), request_body = UpdateChat,
    responses((status = 200, body = api::Chat), (status = 404, body = api::ErrorResponse), (status = 422, body = api::ErrorResponse))
)]
async fn update_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
    ApiJson(body): ApiJson<UpdateChat>,
) -> ApiResult<Json<api::Chat>> {
    if let Some(title) = &body.title {
        check_title(title)?;
    }
    if let Some(labels) = &body.labels {
        check_labels(labels)?;
    }
    let changes = ChatChanges {
        title: body.title.as_deref(),
        archived: body.archived,
        labels: body.labels.as_ref(),
    };
    match state.ops.update(caller.access(), id, &changes).await? {
        Some(chat) => Ok(chat_view(&chat)),
        None => Err(ApiError::not_found("chat")),
    }
}

/// Delete a chat with its messages and queue. A turn in progress stops.
#[utoipa::path(
    delete, path = "/chats/{id}", tag = "chats", params(("id" = ChatId, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = api::ErrorResponse))
)]
async fn delete_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<StatusCode> {
    if state.ops.delete(caller.access(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("chat"))
    }
}

/// Stop the turn in progress (its partial output is kept). On a pending
/// chat the turn never starts (the next queued message runs instead, if any).
#[utoipa::path(
    post, path = "/chats/{id}/interrupt", tag = "chats", params(("id" = ChatId, Path)),
    responses((status = 202, body = api::Chat), (status = 404, body = api::ErrorResponse))
)]
async fn interrupt_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<(StatusCode, Json<api::Chat>)> {
    match state.ops.interrupt(caller.access(), id).await? {
        InterruptOutcome::Done(_, chat) => Ok((StatusCode::ACCEPTED, chat_view(&chat))),
        InterruptOutcome::NotFound => Err(ApiError::not_found("chat")),
    }
}
