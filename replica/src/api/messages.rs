//! `/chats/{id}/messages`: read the history, send, edit and re-run.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chatd_shared::{
    api::{
        self, BusyBehavior, EditMessage, MessageList, SendMessage, SendResult,
        content::ContentError, content::user_content,
    },
    db::{
        DbError,
        chats::{self, EditRefused},
        messages::{self, Sent},
    },
    ids::{ChatId, MessageId},
    pubsub::{ChatEvent, OwnerEventKind},
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    chats::{interrupt, page_size, usable_model, visible_chat},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, ApiQuery},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages, send_message))
        .routes(routes!(edit_message))
}

/// Longest idempotency key.
const MAX_KEY: usize = 255;

/// The `Idempotency-Key` header, if sent (400 when unusable).
pub(super) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be printable ASCII",
            )
        })?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must have 1 to {MAX_KEY} characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Content problems: shape errors are 400, the rest 422.
pub(super) fn content_error(error: ContentError) -> ApiError {
    match error {
        ContentError::Shape => ApiError::bad_request("invalid_body", error.to_string()),
        ContentError::Empty => ApiError::unprocessable("empty_message", error.to_string()),
        _ => ApiError::unprocessable("invalid_content", error.to_string()),
    }
}

/// Announces committed messages (ascending ids) to every replica's streams.
pub(super) fn notify_messages(state: &AppState, chat_id: ChatId, committed: &[messages::Message]) {
    if let (Some(first), Some(last)) = (committed.first(), committed.last()) {
        let notice = ChatEvent::Message {
            after_id: MessageId(first.id.0 - 1),
            last_id: last.id,
        };
        let _ = state.pubsub.publish_chat(chat_id, notice);
    }
}

/// Query of `GET /chats/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// Only messages with a smaller id (the first id of the previous page).
    before_id: Option<i64>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// A page of a chat's messages (ascending ids; the newest page without `before_id`).
#[utoipa::path(
    get, path = "/chats/{id}/messages", tag = "messages", params(("id" = ChatId, Path), PageQuery),
    responses((status = 200, body = MessageList), (status = 400, body = api::ErrorResponse), (status = 404, body = api::ErrorResponse))
)]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<MessageList>> {
    let limit = page_size(query.limit)?;
    visible_chat(&state, &caller, id).await?;
    let client = state.pool.get().await?;
    let (rows, has_more) =
        messages::page(&client, id, query.before_id.map(MessageId), limit).await?;
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
    params(("id" = ChatId, Path), ("Idempotency-Key" = Option<String>, Header, description = "Replays return the original result (200)")),
    request_body = SendMessage,
    responses(
        (status = 201, body = SendResult, description = "Committed: {\"message\": …}"),
        (status = 202, body = SendResult, description = "Queued: {\"queued\": …}"),
        (status = 200, body = SendResult, description = "Replay of an idempotency key"),
        (status = 404, body = api::ErrorResponse), (status = 409, body = api::ErrorResponse),
        (status = 422, body = api::ErrorResponse), (status = 429, body = api::ErrorResponse),
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
    let behavior = body.busy_behavior.unwrap_or_default();
    let owner_filter = (!caller.is_admin()).then_some(caller.user_id);
    if let Some(model) = body.model_config_id {
        let model = usable_model(&state, Some(model)).await?;
        visible_chat(&state, &caller, id).await?;
        let client = state.pool.get().await?;
        client
            .execute(
                "UPDATE chats SET model_config_id = $2 WHERE id = $1",
                &[&id, &model],
            )
            .await
            .map_err(DbError::from)?;
    }
    // The usual case, one statement: an idle chat, no idempotency key.
    if key.is_none() {
        let client = state.pool.get().await?;
        if let Some((message, pending)) = messages::send_to_idle(
            &client,
            id,
            &content,
            Some(caller.user_id),
            None,
            owner_filter,
        )
        .await?
        {
            drop(client);
            notify_messages(&state, id, std::slice::from_ref(&message));
            state.pubsub.announce_pending(&[pending]);
            return Ok((
                StatusCode::CREATED,
                Json(SendResult::Sent {
                    message: api::Message::from(&message),
                }),
            ));
        }
    }
    let queue_if_busy = behavior != BusyBehavior::Reject;
    let sent = {
        let mut client = state.pool.get().await?;
        messages::send_locked(
            &mut client,
            id,
            &content,
            Some(caller.user_id),
            key.as_deref(),
            owner_filter,
            queue_if_busy,
        )
        .await?
    };
    match sent {
        Sent::Committed(message, pending) => {
            notify_messages(&state, id, std::slice::from_ref(&message));
            state.pubsub.announce_pending(&[pending]);
            Ok((
                StatusCode::CREATED,
                Json(SendResult::Sent {
                    message: api::Message::from(message.as_ref()),
                }),
            ))
        }
        Sent::Queued(queued) => {
            let _ = state.pubsub.publish_chat(id, ChatEvent::Queue);
            if behavior == BusyBehavior::Interrupt {
                interrupt(&state, id).await?;
            }
            Ok((
                StatusCode::ACCEPTED,
                Json(SendResult::Queued {
                    queued: api::QueuedMessage::from(&queued),
                }),
            ))
        }
        Sent::ReplayedMessage(message) => Ok((
            StatusCode::OK,
            Json(SendResult::Sent {
                message: api::Message::from(message.as_ref()),
            }),
        )),
        Sent::ReplayedQueued(queued) => Ok((
            StatusCode::OK,
            Json(SendResult::Queued {
                queued: api::QueuedMessage::from(&queued),
            }),
        )),
        Sent::Busy => Err(ApiError::conflict(
            "chat_busy",
            "the chat is busy and busy_behavior is reject",
        )),
        Sent::QueueFull => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "the chat's queue is full ({} messages)",
                chatd_shared::db::queued_messages::MAX_QUEUED_PER_CHAT
            ),
        )),
        Sent::Archived => Err(ApiError::conflict(
            "chat_archived",
            "the chat is archived; restore it to send",
        )),
        Sent::Missing => Err(ApiError::not_found("chat")),
    }
}

/// Replace a user message and re-run the chat from it: later messages are
/// hidden, the queue is cleared, a turn in progress is abandoned.
#[utoipa::path(
    patch, path = "/chats/{id}/messages/{message_id}", tag = "messages",
    params(("id" = ChatId, Path), ("message_id" = i64, Path)), request_body = EditMessage,
    responses((status = 200, body = api::Message), (status = 404, body = api::ErrorResponse), (status = 422, body = api::ErrorResponse))
)]
async fn edit_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, message_id)): ApiPath<(ChatId, i64)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> ApiResult<Json<api::Message>> {
    let content = user_content(body.content, body.text).map_err(content_error)?;
    let (chat, _) = visible_chat(&state, &caller, id).await?;
    if chat.archived {
        return Err(ApiError::conflict(
            "chat_archived",
            "the chat is archived; restore it to edit",
        ));
    }
    let edited = {
        let mut client = state.pool.get().await?;
        chats::edit_and_rerun(
            &mut client,
            id,
            MessageId(message_id),
            &content,
            caller.user_id,
        )
        .await?
    };
    let edited = match edited {
        Ok(edited) => edited,
        Err(EditRefused::NotFound) => return Err(ApiError::not_found("message")),
        Err(EditRefused::NotUserMessage) => {
            return Err(ApiError::unprocessable(
                "not_a_user_message",
                "only user messages can be edited",
            ));
        }
    };
    let _ = state.pubsub.publish_chat(id, ChatEvent::Refresh);
    let _ = state.pubsub.publish_chat(id, ChatEvent::Queue);
    let _ = state
        .pubsub
        .publish_owner(edited.chat.owner_id, id, OwnerEventKind::Status);
    state.pubsub.announce_pending(&[edited.pending]);
    Ok(Json(api::Message::from(&edited.message)))
}
