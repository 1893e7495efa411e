//! `/models`: the models a chat can use.

use axum::{Json, extract::State};
use chatd_shared::api::{Model, ModelList};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, auth::Caller, error::ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_models))
}

/// The models a chat can use (enabled, on an enabled provider): the
/// default first, then by display name.
#[utoipa::path(
    get, path = "/models", tag = "models",
    responses((status = 200, body = ModelList, description = "The models"))
)]
async fn list_models(State(state): State<AppState>, _: Caller) -> ApiResult<Json<ModelList>> {
    let rows = state.catalog.available_models().await?;
    let models = rows
        .iter()
        .map(|row| Model {
            id: row.id,
            display_name: row.display_name.clone(),
            model: row.model.clone(),
            context_limit: row.context_limit,
            is_default: row.is_default,
        })
        .collect();
    Ok(Json(ModelList { models }))
}
