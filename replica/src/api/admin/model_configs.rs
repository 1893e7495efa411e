//! `/admin/model-configs`: the models chats can use, their limits and
//! prices, and the one default. Deleting one is soft (the row stays for the
//! chats that name it); from then on it is a 404 here. Every change tells the replicas'
//! model catalogs (`ModelsChanged`).

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{CreateModelConfig, ErrorResponse, ModelConfig, UpdateModelConfig},
    db::{
        DbError, GenericClient,
        model_configs::{self, ModelConfigChanges, NewModelConfig},
    },
    ids::ModelConfigId,
};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Admin, is_foreign_key_violation, models_changed, text_field};
use crate::api::{
    AppState,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_model_configs, create_model_config))
        .routes(routes!(
            get_model_config,
            update_model_config,
            delete_model_config
        ))
}

/// Longest model or display name.
const MAX_NAME: usize = 200;
/// Compaction threshold when none is given (the column's default).
const DEFAULT_COMPACTION_THRESHOLD_PCT: i16 = 70;
/// Output cap when none is given (the column's default).
const DEFAULT_MAX_OUTPUT_TOKENS: i32 = 4096;
/// The price fields, in the order of [`NewModelConfig::prices`].
const PRICE_FIELDS: [&str; 4] = [
    "price_input_micros_per_mtok",
    "price_output_micros_per_mtok",
    "price_cache_read_micros_per_mtok",
    "price_cache_write_micros_per_mtok",
];

/// The numbers and options of a new or changed config (`None`: not given).
#[derive(Default)]
struct Values<'a> {
    context_limit: Option<i32>,
    max_output_tokens: Option<i32>,
    compaction_threshold_pct: Option<i16>,
    prices: [Option<i64>; 4],
    options: Option<&'a Value>,
}

impl Values<'_> {
    /// 422 naming the first field out of range.
    fn check(&self) -> ApiResult<()> {
        if self.context_limit.is_some_and(|limit| limit <= 0) {
            return Err(ApiError::unprocessable(
                "invalid_context_limit",
                "context_limit must be positive",
            ));
        }
        if self.max_output_tokens.is_some_and(|cap| cap <= 0) {
            return Err(ApiError::unprocessable(
                "invalid_max_output_tokens",
                "max_output_tokens must be positive",
            ));
        }
        if self
            .compaction_threshold_pct
            .is_some_and(|pct| !(1..=100).contains(&pct))
        {
            return Err(ApiError::unprocessable(
                "invalid_compaction_threshold_pct",
                "compaction_threshold_pct must be between 1 and 100",
            ));
        }
        for (field, price) in PRICE_FIELDS.iter().zip(self.prices) {
            if price.is_some_and(|price| price < 0) {
                return Err(ApiError::unprocessable(
                    "invalid_price",
                    format!("{field} must not be negative"),
                ));
            }
        }
        if self.options.is_some_and(|options| !options.is_object()) {
            return Err(ApiError::unprocessable(
                "invalid_options",
                "options must be a JSON object",
            ));
        }
        Ok(())
    }
}

/// The live model config `id`, or a 404.
async fn live(db: &impl GenericClient, id: ModelConfigId) -> ApiResult<model_configs::ModelConfig> {
    model_configs::get(db, id)
        .await?
        .filter(|row| row.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("model config"))
}

/// Makes `id` the default (inside the caller's transaction, so the old
/// default gives way in the same commit) and returns it.
async fn make_default(
    tx: &impl GenericClient,
    id: ModelConfigId,
) -> ApiResult<model_configs::ModelConfig> {
    match model_configs::set_default(tx, id).await {
        Ok(_) => live(tx, id).await,
        // Another model became the default meanwhile: the single-default
        // index refused this one.
        Err(error) if error.is_unique_violation() => Err(ApiError::conflict(
            "default_changed",
            "another model became the default at the same time; try again",
        )),
        Err(error) => Err(error.into()),
    }
}

/// Every model config that is not deleted, by display name.
#[utoipa::path(
    get, path = "/admin/model-configs", tag = "admin",
    responses(
        (status = 200, body = Vec<ModelConfig>),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    )
)]
async fn list_model_configs(
    State(state): State<AppState>,
    _: Admin,
) -> ApiResult<Json<Vec<ModelConfig>>> {
    let client = state.pool.get().await?;
    let rows = model_configs::list(&client).await?;
    Ok(Json(rows.iter().map(ModelConfig::from).collect()))
}

/// Add a model config. With `is_default: true` it becomes the default and
/// the previous default stops being one, in the same transaction.
#[utoipa::path(
    post, path = "/admin/model-configs", tag = "admin", request_body = CreateModelConfig,
    responses(
        (status = 201, body = ModelConfig, description = "Created"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "Another model became the default meanwhile"),
        (status = 422, body = ErrorResponse),
    )
)]
async fn create_model_config(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateModelConfig>,
) -> ApiResult<(StatusCode, Json<ModelConfig>)> {
    let model = text_field(&body.model, "model", "invalid_model", 1..=MAX_NAME)?;
    let display_name = match &body.display_name {
        Some(name) => text_field(name, "display_name", "invalid_display_name", 1..=MAX_NAME)?,
        None => model,
    };
    let options = body
        .options
        .unwrap_or_else(|| Value::Object(Default::default()));
    let prices = [
        body.price_input_micros_per_mtok,
        body.price_output_micros_per_mtok,
        body.price_cache_read_micros_per_mtok,
        body.price_cache_write_micros_per_mtok,
    ];
    Values {
        context_limit: Some(body.context_limit),
        max_output_tokens: body.max_output_tokens,
        compaction_threshold_pct: body.compaction_threshold_pct,
        prices,
        options: Some(&options),
    }
    .check()?;
    let new = NewModelConfig {
        provider_id: body.provider_id,
        model,
        display_name,
        enabled: body.enabled.unwrap_or(true),
        is_default: false,
        context_limit: body.context_limit,
        compaction_threshold_pct: body
            .compaction_threshold_pct
            .unwrap_or(DEFAULT_COMPACTION_THRESHOLD_PCT),
        max_output_tokens: body.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
        prices,
        options,
    };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let mut row = match model_configs::insert(&tx, &new).await {
        Ok(row) => row,
        Err(error) if is_foreign_key_violation(&error) => {
            return Err(ApiError::unprocessable(
                "invalid_provider",
                format!("provider {} does not exist", body.provider_id),
            ));
        }
        Err(error) => return Err(error.into()),
    };
    if body.is_default == Some(true) {
        row = make_default(&tx, row.id).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    drop(client);
    models_changed(&state);
    Ok((StatusCode::CREATED, Json(ModelConfig::from(&row))))
}

/// One model config (404 once deleted).
#[utoipa::path(
    get, path = "/admin/model-configs/{id}", tag = "admin", params(("id" = ModelConfigId, Path)),
    responses(
        (status = 200, body = ModelConfig),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
    )
)]
async fn get_model_config(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ModelConfigId>,
) -> ApiResult<Json<ModelConfig>> {
    let client = state.pool.get().await?;
    Ok(Json(ModelConfig::from(&live(&client, id).await?)))
}

/// Change a model config: fields left out stay; `null` clears a price.
/// `is_default: true` makes it the default (the previous one stops being
/// it); a default stops being one only when another takes over, so
/// `is_default: false` is refused.
#[utoipa::path(
    patch, path = "/admin/model-configs/{id}", tag = "admin", params(("id" = ModelConfigId, Path)),
    request_body = UpdateModelConfig,
    responses(
        (status = 200, body = ModelConfig),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "Another model became the default meanwhile"),
        (status = 422, body = ErrorResponse),
    )
)]
async fn update_model_config(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ModelConfigId>,
    ApiJson(body): ApiJson<UpdateModelConfig>,
) -> ApiResult<Json<ModelConfig>> {
    if body.is_default == Some(false) {
        return Err(ApiError::unprocessable(
            "invalid_is_default",
            "a model stops being the default when another becomes it: pick another default",
        ));
    }
    let display_name = body
        .display_name
        .as_deref()
        .map(|name| text_field(name, "display_name", "invalid_display_name", 1..=MAX_NAME))
        .transpose()?;
    let prices = [
        body.price_input_micros_per_mtok,
        body.price_output_micros_per_mtok,
        body.price_cache_read_micros_per_mtok,
        body.price_cache_write_micros_per_mtok,
    ];
    Values {
        context_limit: body.context_limit,
        max_output_tokens: body.max_output_tokens,
        compaction_threshold_pct: body.compaction_threshold_pct,
        prices: prices.map(Option::flatten),
        options: body.options.as_ref(),
    }
    .check()?;
    let changes = ModelConfigChanges {
        display_name,
        enabled: body.enabled,
        context_limit: body.context_limit,
        compaction_threshold_pct: body.compaction_threshold_pct,
        max_output_tokens: body.max_output_tokens,
        prices,
        options: body.options.as_ref(),
    };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let mut row = model_configs::update(&tx, id, &changes)
        .await?
        .ok_or_else(|| ApiError::not_found("model config"))?;
    if body.is_default == Some(true) && !row.is_default {
        row = make_default(&tx, id).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    drop(client);
    models_changed(&state);
    Ok(Json(ModelConfig::from(&row)))
}

/// Delete a model config: it leaves the listings and no chat can run on it
/// any more, but the chats that name it keep their history. If it was the
/// default, there is none until another is picked.
#[utoipa::path(
    delete, path = "/admin/model-configs/{id}", tag = "admin", params(("id" = ModelConfigId, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
    )
)]
async fn delete_model_config(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ModelConfigId>,
) -> ApiResult<StatusCode> {
    let client = state.pool.get().await?;
    if !model_configs::soft_delete(&client, id).await? {
        return Err(ApiError::not_found("model config"));
    }
    drop(client);
    models_changed(&state);
    Ok(StatusCode::NO_CONTENT)
}
