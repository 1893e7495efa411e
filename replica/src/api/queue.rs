//! `/chats/{id}/queue`: messages waiting for a busy chat.

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{self, QueueList},
    db::queued_messages,
    ids::{ChatId, QueuedMessageId},
    pubsub::ChatEvent,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    chats::{interrupt, visible_chat},
    error::{ApiError, ApiResult},
    extract::ApiPath,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queue))
        .routes(routes!(delete_queued))
        .routes(routes!(promote_queued))
}

async fn queue_of(state: &AppState, id: ChatId) -> ApiResult<QueueList> {
    let client = state.pool.get().await?;
    let rows = queued_messages::list(&client, id).await?;
    Ok(QueueList {
        queued: rows.iter().map(api::QueuedMessage::from).collect(),
    })
}

/// The queue, in the order it will run.
#[utoipa::path(
    get, path = "/chats/{id}/queue", tag = "queue", params(("id" = ChatId, Path)),
    responses((status = 200, body = QueueList), (status = 404, body = api::ErrorResponse))
)]
async fn list_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<Json<QueueList>> {
    visible_chat(&state, &caller, id).await?;
    Ok(Json(queue_of(&state, id).await?))
}

/// Remove a queued message.
#[utoipa::path(
    delete, path = "/chats/{id}/queue/{queued_id}", tag = "queue",
    params(("id" = ChatId, Path), ("queued_id" = i64, Path)),
    responses((status = 204, description = "Removed"), (status = 404, body = api::ErrorResponse))
)]
async fn delete_queued(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, queued_id)): ApiPath<(ChatId, i64)>,
) -> ApiResult<StatusCode> {
    visible_chat(&state, &caller, id).await?;
    let client = state.pool.get().await?;
    if !queued_messages::delete(&client, id, QueuedMessageId(queued_id)).await? {
        return Err(ApiError::not_found("queued message"));
    }
    let _ = state.pubsub.publish_chat(id, ChatEvent::Queue);
    Ok(StatusCode::NO_CONTENT)
}

/// Run this queued message next: it moves to the front of the queue and the
/// turn in progress is interrupted.
#[utoipa::path(
    post, path = "/chats/{id}/queue/{queued_id}/promote", tag = "queue",
    params(("id" = ChatId, Path), ("queued_id" = i64, Path)),
    responses((status = 202, body = QueueList), (status = 404, body = api::ErrorResponse))
)]
async fn promote_queued(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, queued_id)): ApiPath<(ChatId, i64)>,
) -> ApiResult<(StatusCode, Json<QueueList>)> {
    visible_chat(&state, &caller, id).await?;
    {
        let client = state.pool.get().await?;
        if !queued_messages::promote(&client, id, QueuedMessageId(queued_id)).await? {
            return Err(ApiError::not_found("queued message"));
        }
    }
    let _ = state.pubsub.publish_chat(id, ChatEvent::Queue);
    interrupt(&state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(queue_of(&state, id).await?)))
}
