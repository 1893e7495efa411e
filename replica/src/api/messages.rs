//! `/chats/{id}/messages`: read the history, send, edit and re-run.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chatd_shared::{
    api::{
        self, EditMessage, ErrorResponse, MessageList, SendMessage, SendResult,
        content::user_content,
    },
    db::queued_messages::MAX_QUEUED_PER_CHAT,
    ids::{ChatId, MessageId},
};
use serde::Deserialize;
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
use crate::operations::{EditOutcome, SendOutcome, SendRequest};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages, send_message))
        .routes(routes!(edit_message))
}

/// Query of `GET /chats/{id}/messages` (unknown parameters are refused).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// Only messages with a smaller id (the first id of the previous page).
    #[schema(nullable = false)]
    before_id: Option<i64>,
    /// Page size, 1–200 (default 50).
    #[schema(nullable = false, minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// A page of a chat's messages (ascending ids; the newest page without `before_id`).
#[utoipa::path(
    get, path = "/chats/{id}/messages", tag = "messages",
    params(ChatPath, ("query" = inline(Option<PageQuery>), Query, style = Form, explode)),
    responses(
        (status = 200, body = MessageList, description = "A page of messages"),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
    )
)]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<MessageList>> {
    let limit = page_size(query.limit)?;
    let page = state
        .ops
        .messages(caller.access(), id, query.before_id.map(MessageId), limit)
        .await?;
    let Some((rows, has_more)) = page else {
        return Err(ApiError::not_found("chat"));
    };
    Ok(Json(MessageList {
        messages: rows.iter().map(api::Message::from).collect(),
        has_more,
    }))
}

/// Send a message. Idle chat: committed, a turn starts (201). Busy chat:
/// per `busy_behavior`, queued (202), queued and the turn interrupted
/// (202), or refused (409). A replayed `Idempotency-Key` answers 200 with
/// the original result.
#[utoipa::path(
    post, path = "/chats/{id}/messages", tag = "messages",
    params(ChatPath, IdempotencyKey), request_body = SendMessage,
    responses(
        (status = 201, body = SendResult, description = "Committed: {\"message\": …}"),
        (status = 202, body = SendResult, description = "Queued: {\"queued\": …}"),
        (status = 200, body = SendResult, description = "A replay of an `Idempotency-Key`: the original result"),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
        (status = 409, body = ErrorResponse, description = "The chat is busy and `busy_behavior` \
            is `reject` (`chat_busy`), it is archived (`chat_archived`), or the caller's spend \
            reached their limit (`spend_limit_exceeded`, `details` as `SpendLimitExceeded`)"),
        (status = 422, body = ErrorResponse, description = "The model cannot be used \
            (`invalid_model`), or the content breaks a rule its schema states (`empty_message`, \
            `invalid_content`)"),
        (status = 429, body = ErrorResponse, description = "The chat's queue is full (`queue_full`)"),
    )
)]
async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> ApiResult<(StatusCode, Json<SendResult>)> {
    let key = idempotency_key(&headers)?;
    let content = user_content(body.content, body.text).map_err(content_error)?;
    super::tools::check_chat_tools(&state, None, body.client_tools.as_deref()).await?;
    let request = SendRequest {
        content: &content,
        behavior: body.busy_behavior.unwrap_or_default(),
        model: body.model_config_id,
        idempotency_key: key.as_deref(),
        client_tools: body.client_tools.as_deref(),
    };
    let sent = |message: &chatd_shared::db::messages::Message| {
        Json(SendResult::Sent {
            message: api::Message::from(message),
        })
    };
    let queued = |queued: &chatd_shared::db::queued_messages::QueuedMessage| {
        Json(SendResult::Queued {
            queued: api::QueuedMessage::from(queued),
        })
    };
    match state.ops.send(caller.access(), id, &request).await? {
        SendOutcome::Sent(message) => Ok((StatusCode::CREATED, sent(&message))),
        SendOutcome::Queued(message) => Ok((StatusCode::ACCEPTED, queued(&message))),
        SendOutcome::ReplayedMessage(message) => Ok((StatusCode::OK, sent(&message))),
        SendOutcome::ReplayedQueued(message) => Ok((StatusCode::OK, queued(&message))),
        SendOutcome::Busy => Err(ApiError::conflict(
            "chat_busy",
            "the chat is busy and busy_behavior is reject",
        )),
        SendOutcome::QueueFull => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("the chat's queue is full ({MAX_QUEUED_PER_CHAT} messages)"),
        )),
        SendOutcome::Archived => Err(ApiError::conflict(
            "chat_archived",
            "the chat is archived; restore it to send",
        )),
        SendOutcome::NotFound => Err(ApiError::not_found("chat")),
        SendOutcome::Model(refused) => Err(model_error(refused)),
        SendOutcome::SpendLimit(refusal) => Err(super::spend::spend_limit_exceeded(refusal)),
        SendOutcome::File(refused) => Err(super::request::file_error(refused)),
    }
}

/// The path of a message of a chat.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct MessagePath {
    /// The chat.
    id: ChatId,
    /// The message.
    message_id: MessageId,
}

/// Replace a user message and re-run the chat from it: later messages are
/// hidden, the queue is cleared, a turn in progress is abandoned.
#[utoipa::path(
    patch, path = "/chats/{id}/messages/{message_id}", tag = "messages",
    params(MessagePath), request_body = EditMessage,
    responses(
        (status = 200, body = api::Message, description = "The replacement message"),
        (status = 404, body = ErrorResponse, description = "No such chat (or not the caller's), \
            or no such message in it (`not_found`)"),
        (status = 409, body = ErrorResponse, description = "The chat is archived \
            (`chat_archived`), or the message is not a user's (`not_a_user_message`)"),
        (status = 422, body = ErrorResponse, description = "The content breaks a rule its schema \
            states (`empty_message`, `invalid_content`)"),
    )
)]
async fn edit_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, message_id)): ApiPath<(ChatId, i64)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> ApiResult<Json<api::Message>> {
    let content = user_content(body.content, body.text).map_err(content_error)?;
    let edited = state
        .ops
        .edit(caller.access(), id, MessageId(message_id), &content)
        .await?;
    match edited {
        EditOutcome::Edited(message) => Ok(Json(api::Message::from(message.as_ref()))),
        EditOutcome::ChatNotFound => Err(ApiError::not_found("chat")),
        EditOutcome::MessageNotFound => Err(ApiError::not_found("message")),
        // The message exists but is not one a user may replace: the
        // request conflicts with what the message is, as with an archived chat.
        EditOutcome::NotUserMessage => Err(ApiError::conflict(
            "not_a_user_message",
            "only user messages can be edited",
        )),
        EditOutcome::Archived => Err(ApiError::conflict(
            "chat_archived",
            "the chat is archived; restore it to edit",
        )),
        EditOutcome::File(refused) => Err(super::request::file_error(refused)),
    }
}
