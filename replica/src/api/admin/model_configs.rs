//! `/admin/model-configs`: the models chats can use, their limits and
//! prices, and the one default. Deleting one is soft (the row stays for the
//! chats that name it); from then on it is a 404 here. The changes are
//! [`Catalog`](crate::operations::Catalog) operations.

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{CreateModelConfig, ErrorResponse, MAX_MODEL_NAME, ModelConfig, UpdateModelConfig},
    db::model_configs::{ModelConfigChanges, NewModelConfig},
    ids::ModelConfigId,
};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Admin, text_field};
use crate::{
    api::{
        AppState,
        error::{ApiError, ApiResult},
        extract::{ApiJson, ApiPath},
    },
    operations::ModelConfigOutcome,
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

/// The path of a model config.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ModelConfigPath {
    /// The model config.
    id: ModelConfigId,
}

const NO_MODEL_CONFIG: &str = "No such model config, or it was deleted (`not_found`)";
const DEFAULT_CHANGED: &str =
    "Another model became the default at the same time; try again (`default_changed`)";

/// What a model config change's outcome means to a client.
fn model_config_outcome(outcome: ModelConfigOutcome) -> ApiResult<Json<ModelConfig>> {
    match outcome {
        ModelConfigOutcome::Done(row) => Ok(Json(ModelConfig::from(row.as_ref()))),
        ModelConfigOutcome::NotFound => Err(ApiError::not_found("model config")),
        ModelConfigOutcome::ProviderMissing(id) => Err(ApiError::unprocessable(
            "invalid_provider",
            format!("provider {id} does not exist"),
        )),
        ModelConfigOutcome::TitleModelChanged => Err(ApiError::conflict(
            "title_model_changed",
            "another model became the title model at the same time; try again",
        )),
        ModelConfigOutcome::DefaultChanged => Err(ApiError::conflict(
            "default_changed",
            "another model became the default at the same time; try again",
        )),
    }
}

/// Every model config that is not deleted, by display name.
#[utoipa::path(
    get, path = "/admin/model-configs", tag = "admin",
    responses((status = 200, body = Vec<ModelConfig>, description = "The model configs"))
)]
async fn list_model_configs(
    State(state): State<AppState>,
    _: Admin,
) -> ApiResult<Json<Vec<ModelConfig>>> {
    let rows = state.catalog.model_configs().await?;
    Ok(Json(rows.iter().map(ModelConfig::from).collect()))
}

/// Add a model config. With `is_default: true` it becomes the default and
/// the previous default stops being one, in the same transaction.
#[utoipa::path(
    post, path = "/admin/model-configs", tag = "admin", request_body = CreateModelConfig,
    responses(
        (status = 201, body = ModelConfig, description = "Created"),
        (status = 409, body = ErrorResponse, description = DEFAULT_CHANGED),
        (status = 422, body = ErrorResponse, description = "No such provider \
            (`invalid_provider`), or a field breaks a rule its schema states (`invalid_model`, \
            `invalid_display_name`, `invalid_context_limit`, `invalid_max_output_tokens`, \
            `invalid_compaction_threshold_pct`, `invalid_price`, `invalid_options`)"),
    )
)]
async fn create_model_config(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateModelConfig>,
) -> ApiResult<(StatusCode, Json<ModelConfig>)> {
    let model = text_field(&body.model, "model", "invalid_model", 1..=MAX_MODEL_NAME)?;
    let display_name = match &body.display_name {
        Some(name) => text_field(
            name,
            "display_name",
            "invalid_display_name",
            1..=MAX_MODEL_NAME,
        )?,
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
        is_default: body.is_default == Some(true),
        context_limit: body.context_limit,
        compaction_threshold_pct: body
            .compaction_threshold_pct
            .unwrap_or(DEFAULT_COMPACTION_THRESHOLD_PCT),
        max_output_tokens: body.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
        prices,
        options,
    };
    let outcome = state
        .catalog
        .create_model_config(&new, body.use_for_titles == Some(true))
        .await?;
    let created = model_config_outcome(outcome)?;
    Ok((StatusCode::CREATED, created))
}

/// One model config (404 once deleted).
#[utoipa::path(
    get, path = "/admin/model-configs/{id}", tag = "admin", params(ModelConfigPath),
    responses(
        (status = 200, body = ModelConfig, description = "The model config"),
        (status = 404, body = ErrorResponse, description = NO_MODEL_CONFIG),
    )
)]
async fn get_model_config(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ModelConfigId>,
) -> ApiResult<Json<ModelConfig>> {
    match state.catalog.model_config(id).await? {
        Some(row) => Ok(Json(ModelConfig::from(&row))),
        None => Err(ApiError::not_found("model config")),
    }
}

/// Change a model config: fields left out stay; `null` clears a price.
/// `is_default: true` makes it the default (the previous one stops being
/// it); a default stops being one only when another takes over, so
/// `is_default: false` is refused.
#[utoipa::path(
    patch, path = "/admin/model-configs/{id}", tag = "admin", params(ModelConfigPath),
    request_body = UpdateModelConfig,
    responses(
        (status = 200, body = ModelConfig, description = "The model config as changed"),
        (status = 404, body = ErrorResponse, description = NO_MODEL_CONFIG),
        (status = 409, body = ErrorResponse, description = DEFAULT_CHANGED),
        (status = 422, body = ErrorResponse, description = "A field breaks a rule its schema \
            states (`invalid_is_default`, `invalid_display_name`, `invalid_context_limit`, \
            `invalid_max_output_tokens`, `invalid_compaction_threshold_pct`, `invalid_price`, \
            `invalid_options`)"),
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
        .map(|name| {
            text_field(
                name,
                "display_name",
                "invalid_display_name",
                1..=MAX_MODEL_NAME,
            )
        })
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
    let make_default = body.is_default == Some(true);
    let outcome = state
        .catalog
        .update_model_config(id, &changes, make_default, body.use_for_titles)
        .await?;
    model_config_outcome(outcome)
}

/// Delete a model config: it leaves the listings and no chat can run on it
/// any more, but the chats that name it keep their history. If it was the
/// default, there is none until another is picked.
#[utoipa::path(
    delete, path = "/admin/model-configs/{id}", tag = "admin", params(ModelConfigPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorResponse, description = NO_MODEL_CONFIG),
    )
)]
async fn delete_model_config(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ModelConfigId>,
) -> ApiResult<StatusCode> {
    if state.catalog.delete_model_config(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("model config"))
    }
}
