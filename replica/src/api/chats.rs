//! `/chats`: create, list, read, change, delete, interrupt.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chatd_shared::{
    api::{
        self, ChatList, CreateChat, ErrorResponse, MAX_LABELS, MAX_SYSTEM_PROMPT, MAX_TITLE,
        UpdateChat, content::user_content, schema,
    },
    db::chats::{ChatTools, ChatWithQueue},
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
    request::{
        ChatPath, IdempotencyKey, NO_CHAT, content_error, idempotency_key, model_error, page_size,
    },
};
use crate::operations::{ChatChanges, CreateOutcome, InterruptOutcome, NewChatRequest};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_chat, list_chats))
        .routes(routes!(get_chat, update_chat, delete_chat))
        .routes(routes!(interrupt_chat))
}

/// The chat as clients see it.
fn chat_view((chat, queued): &ChatWithQueue) -> Json<api::Chat> {
    Json(api::Chat::from_row(chat, *queued))
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
    post, path = "/chats", tag = "chats", params(IdempotencyKey), request_body = CreateChat,
    responses(
        (status = 201, body = api::Chat, description = "Created"),
        (status = 200, body = api::Chat, description = "A replay of an `Idempotency-Key`: the chat it created"),
        (status = 409, body = ErrorResponse, description = "With a first message: the caller's \
            spend reached their limit (`spend_limit_exceeded`, `details` as `SpendLimitExceeded`)"),
        (status = 422, body = ErrorResponse, description = "The model cannot be used (`invalid_model`, \
            `no_model`), or the content, title, system prompt or labels break a rule their schema \
            states (`empty_message`, `invalid_content`, `invalid_title`, `invalid_system_prompt`, \
            `invalid_labels`)"),
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
    let mcp_servers = body.mcp_servers.unwrap_or_default();
    let client_tools = body.client_tools.unwrap_or_default();
    super::tools::check_chat_tools(&state, Some(&mcp_servers), Some(&client_tools)).await?;
    let request = NewChatRequest {
        title: &title,
        system_prompt: body.system_prompt.as_deref(),
        labels: &labels,
        model: body.model_config_id,
        first: first.as_deref(),
        idempotency_key: key.as_deref(),
        tools: ChatTools {
            mcp_servers: &mcp_servers,
            client_tools: &client_tools,
        },
    };
    match state.ops.create(caller.access(), &request).await? {
        CreateOutcome::Created(chat) => {
            Ok((StatusCode::CREATED, Json(api::Chat::from_row(&chat, 0))))
        }
        CreateOutcome::Replayed(chat) => Ok((StatusCode::OK, Json(api::Chat::from_row(&chat, 0)))),
        CreateOutcome::Model(refused) => Err(model_error(refused)),
        CreateOutcome::SpendLimit(refusal) => Err(super::spend::spend_limit_exceeded(refusal)),
        CreateOutcome::File(refused) => Err(super::request::file_error(refused)),
    }
}

/// Query of `GET /chats` (unknown parameters are refused).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Page size, 1–200 (default 50).
    #[schema(nullable = false, minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[schema(schema_with = cursor_schema)]
    cursor: Option<String>,
    /// List archived chats instead (default false).
    #[schema(nullable = false)]
    archived: Option<bool>,
}

/// A chat id, or empty (the first page).
fn cursor_schema() -> utoipa::openapi::Schema {
    utoipa::openapi::OneOfBuilder::new()
        .description(Some(
            "`next_cursor` of the previous page (empty: the first page).",
        ))
        .item(schema::uuid())
        .item(schema::text(Some(0)))
        .build()
        .into()
}

/// The caller's chats, newest first (admins: everyone's).
#[utoipa::path(
    get, path = "/chats", tag = "chats",
    params(("query" = inline(Option<ListQuery>), Query, style = Form, explode)),
    responses((status = 200, body = ChatList, description = "A page of chats"))
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
    get, path = "/chats/{id}", tag = "chats", params(ChatPath),
    responses(
        (status = 200, body = api::Chat, description = "The chat"),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
    )
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
    patch, path = "/chats/{id}", tag = "chats", params(ChatPath), request_body = UpdateChat,
    responses(
        (status = 200, body = api::Chat, description = "The chat as changed"),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
        (status = 422, body = ErrorResponse, description = "The title or labels break a rule \
            their schema states (`invalid_title`, `invalid_labels`)"),
    )
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
    super::tools::check_chat_tools(
        &state,
        body.mcp_servers.as_deref(),
        body.client_tools.as_deref(),
    )
    .await?;
    let changes = ChatChanges {
        title: body.title.as_deref(),
        archived: body.archived,
        labels: body.labels.as_ref(),
        mcp_servers: body.mcp_servers.as_deref(),
        client_tools: body.client_tools.as_deref(),
    };
    match state.ops.update(caller.access(), id, &changes).await? {
        Some(chat) => Ok(chat_view(&chat)),
        None => Err(ApiError::not_found("chat")),
    }
}

/// Delete a chat with its messages and queue. A turn in progress stops.
#[utoipa::path(
    delete, path = "/chats/{id}", tag = "chats", params(ChatPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
    )
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
    post, path = "/chats/{id}/interrupt", tag = "chats", params(ChatPath),
    responses(
        (status = 202, body = api::Chat, description = "Asked: the chat as it is now"),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
    )
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
