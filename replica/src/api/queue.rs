//! `/chats/{id}/queue`: messages waiting for a busy chat.

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{self, ErrorResponse, QueueList},
    db::queued_messages::QueuedMessage,
    ids::{ChatId, QueuedMessageId},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::ApiPath,
    request::{ChatPath, NO_CHAT},
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

/// The path of a queued message of a chat.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct QueuedPath {
    /// The chat.
    id: ChatId,
    /// The queued message.
    queued_id: QueuedMessageId,
}

/// The 404 of a queued message.
const NO_QUEUED: &str = "No such chat (or not the caller's), or no such message in its \
    queue (`not_found`)";

/// The queue, in the order it will run.
#[utoipa::path(
    get, path = "/chats/{id}/queue", tag = "queue", params(ChatPath),
    responses(
        (status = 200, body = QueueList, description = "The queue"),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
    )
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
    delete, path = "/chats/{id}/queue/{queued_id}", tag = "queue", params(QueuedPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = ErrorResponse, description = NO_QUEUED),
    )
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
    post, path = "/chats/{id}/queue/{queued_id}/promote", tag = "queue", params(QueuedPath),
    responses(
        (status = 202, body = QueueList, description = "Promoted: the queue as it is now"),
        (status = 404, body = ErrorResponse, description = NO_QUEUED),
    )
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
