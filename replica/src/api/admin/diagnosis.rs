//! `/admin/chats/{id}/diagnosis` and `/admin/replicas`: the operators'
//! questions of ARCHITECTURE.md §11, answered from the database (any replica answers
//! for every chat and every replica). Reads of
//! [`Diagnosis`](crate::operations::Diagnosis).

use axum::{Json, extract::State};
use chatd_shared::{
    api::{ChatDiagnosis, ErrorResponse, ReplicaList, ReplicaStatus},
    ids::ChatId,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::Admin;
use crate::api::{
    AppState,
    error::{ApiError, ApiResult},
    extract::ApiPath,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_diagnosis))
        .routes(routes!(list_replicas))
}

/// The path of a chat.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ChatPath {
    /// The chat (anyone's).
    id: ChatId,
}

/// Why a chat is (not) running: its status and since when, its place among
/// pending chats, its worker and that worker's lease, its generation, last
/// error, the current step's retries, a pending interrupt, its queue.
#[utoipa::path(
    get, path = "/admin/chats/{id}/diagnosis", tag = "admin", params(ChatPath),
    responses(
        (status = 200, body = ChatDiagnosis, description = "The chat's diagnosis"),
        (status = 404, body = ErrorResponse, description = "No such chat (`not_found`)"),
    )
)]
async fn chat_diagnosis(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<Json<ChatDiagnosis>> {
    match state.diagnosis.chat(id).await? {
        Some(diagnosis) => Ok(Json(ChatDiagnosis::from(&diagnosis))),
        None => Err(ApiError::not_found("chat")),
    }
}

/// Every registered replica: its lease, running chats, free slots,
/// whether it is draining, its version.
#[utoipa::path(
    get, path = "/admin/replicas", tag = "admin",
    responses((status = 200, body = ReplicaList, description = "The replicas, oldest first"))
)]
async fn list_replicas(State(state): State<AppState>, _: Admin) -> ApiResult<Json<ReplicaList>> {
    let rows = state.diagnosis.replicas().await?;
    Ok(Json(ReplicaList {
        replicas: rows.iter().map(ReplicaStatus::from).collect(),
    }))
}
