//! `/chats/{id}/queue`: messages waiting for a busy chat.

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{self, QueueList},
    db::queued_messages::QueuedMessage,
    ids::{ChatId, QueuedMessageId},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::ApiPath,
};
use crate::operations::QueuedOutcome;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queue))
        .routes(routes!(delete_queued))
        .routes(routes!(promote_queued))
}

fn queue_list(rows: &[QueuedMessage]) -> Json<QueueList> {
    Json(QueueList {
        queued: rows.iter().map(api::QueuedMessage::from).collect(),
    })
}

/// What a queue operation's outcome means to a client.
fn queued_outcome<T>(outcome: QueuedOutcome<T>) -> ApiResult<T> {
    match outcome {
        QueuedOutcome::Done(value) => Ok(value),
        QueuedOutcome::ChatNotFound => Err(ApiError::not_found("chat")),
        QueuedOutcome::QueuedNotFound => Err(ApiError::not_found("queued message")),
    }
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
    match state.ops.queue(caller.access(), id).await? {
        Some(rows) => Ok(queue_list(&rows)),
        None => Err(ApiError::not_found("chat")),
    }
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
    let outcome = state
        .ops
        .delete_queued(caller.access(), id, QueuedMessageId(queued_id))
        .await?;
    queued_outcome(outcome)?;
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
    let outcome = state
        .ops
        .promote(caller.access(), id, QueuedMessageId(queued_id))
        .await?;
    let queue = queued_outcome(outcome)?;
    Ok((StatusCode::ACCEPTED, queue_list(&queue)))
}
