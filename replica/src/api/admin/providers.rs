//! `/admin/providers`: the LLM endpoints that serve model configs. A stored
//! API key is never shown, only whether there is one. The changes are
//! [`Catalog`](crate::operations::Catalog) operations.

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{CreateProvider, ErrorResponse, MAX_PROVIDER_NAME, Provider, UpdateProvider},
    db::providers::{NewProvider, ProviderChanges},
    ids::ProviderId,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Admin, text_field};
use crate::{
    api::{
        AppState,
        error::{ApiError, ApiResult},
        extract::{ApiJson, ApiPath},
    },
    operations::{ConnectionRefused, DeleteProviderOutcome, ProviderOutcome},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
}

/// The path of a provider.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ProviderPath {
    /// The provider.
    id: ProviderId,
}

const NO_PROVIDER: &str = "No such provider (`not_found`)";
const NAME_TAKEN: &str = "Another provider has this name (`name_taken`)";
const UNREACHABLE: &str = "The provider could not be used as given: a base URL its kind cannot \
    use, both `api_key` and `api_key_env`, or a field that breaks a rule its schema states \
    (`invalid_base_url`, `invalid_api_key`, `invalid_api_key_env`, `invalid_name`)";

/// A refused connection: 422 with the code of the field at fault.
fn connection_error(refused: ConnectionRefused) -> ApiError {
    let code = match refused {
        ConnectionRefused::TwoKeys | ConnectionRefused::ApiKey => "invalid_api_key",
        ConnectionRefused::ApiKeyEnv => "invalid_api_key_env",
        ConnectionRefused::BaseUrl(_) => "invalid_base_url",
    };
    ApiError::unprocessable(code, refused.to_string())
}

/// What a provider change's outcome means to a client.
fn provider_outcome(outcome: ProviderOutcome) -> ApiResult<Json<Provider>> {
    match outcome {
        ProviderOutcome::Done(row) => Ok(Json(Provider::from(row.as_ref()))),
        ProviderOutcome::NotFound => Err(ApiError::not_found("provider")),
        ProviderOutcome::NameTaken(name) => Err(ApiError::conflict(
            "name_taken",
            format!("a provider named {name:?} exists"),
        )),
        ProviderOutcome::Refused(refused) => Err(connection_error(refused)),
    }
}

/// Every provider, by name.
#[utoipa::path(
    get, path = "/admin/providers", tag = "admin",
    responses((status = 200, body = Vec<Provider>, description = "The providers"))
)]
async fn list_providers(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Vec<Provider>>> {
    let rows = state.catalog.providers().await?;
    Ok(Json(rows.iter().map(Provider::from).collect()))
}

/// Add a provider (enabled unless `enabled` is false).
#[utoipa::path(
    post, path = "/admin/providers", tag = "admin", request_body = CreateProvider,
    responses(
        (status = 201, body = Provider, description = "Created"),
        (status = 409, body = ErrorResponse, description = NAME_TAKEN),
        (status = 422, body = ErrorResponse, description = UNREACHABLE),
    )
)]
async fn create_provider(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateProvider>,
) -> ApiResult<(StatusCode, Json<Provider>)> {
    let name = text_field(&body.name, "name", "invalid_name", 1..=MAX_PROVIDER_NAME)?;
    let new = NewProvider {
        name,
        kind: body.kind,
        base_url: body.base_url.trim(),
        api_key: body.api_key.as_deref().map(str::trim),
        api_key_env: body.api_key_env.as_deref().map(str::trim),
        enabled: body.enabled.unwrap_or(true),
    };
    let created = provider_outcome(state.catalog.create_provider(&new).await?)?;
    Ok((StatusCode::CREATED, created))
}

/// One provider.
#[utoipa::path(
    get, path = "/admin/providers/{id}", tag = "admin", params(ProviderPath),
    responses(
        (status = 200, body = Provider, description = "The provider"),
        (status = 404, body = ErrorResponse, description = NO_PROVIDER),
    )
)]
async fn get_provider(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ProviderId>,
) -> ApiResult<Json<Provider>> {
    match state.catalog.provider(id).await? {
        Some(row) => Ok(Json(Provider::from(&row))),
        None => Err(ApiError::not_found("provider")),
    }
}

/// Change a provider: fields left out stay; `null` removes `api_key` or
/// `api_key_env`. The result must still be a usable provider.
#[utoipa::path(
    patch, path = "/admin/providers/{id}", tag = "admin", params(ProviderPath),
    request_body = UpdateProvider,
    responses(
        (status = 200, body = Provider, description = "The provider as changed"),
        (status = 404, body = ErrorResponse, description = NO_PROVIDER),
        (status = 409, body = ErrorResponse, description = NAME_TAKEN),
        (status = 422, body = ErrorResponse, description = UNREACHABLE),
    )
)]
async fn update_provider(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ProviderId>,
    ApiJson(body): ApiJson<UpdateProvider>,
) -> ApiResult<Json<Provider>> {
    let name = body
        .name
        .as_deref()
        .map(|name| text_field(name, "name", "invalid_name", 1..=MAX_PROVIDER_NAME))
        .transpose()?;
    let changes = ProviderChanges {
        name,
        kind: body.kind,
        base_url: body.base_url.as_deref().map(str::trim),
        api_key: body
            .api_key
            .as_ref()
            .map(|key| key.as_deref().map(str::trim)),
        api_key_env: body
            .api_key_env
            .as_ref()
            .map(|variable| variable.as_deref().map(str::trim)),
        enabled: body.enabled,
    };
    provider_outcome(state.catalog.update_provider(id, &changes).await?)
}

/// Delete a provider no live model config uses. Its deleted model configs
/// go with it, unless old chats still name them: then it stays (409), and
/// disabling it is the way to retire it.
#[utoipa::path(
    delete, path = "/admin/providers/{id}", tag = "admin", params(ProviderPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorResponse, description = NO_PROVIDER),
        (status = 409, body = ErrorResponse, description = "Model configs use it, or deleted ones \
            that old chats name (`provider_in_use`)"),
    )
)]
async fn delete_provider(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ProviderId>,
) -> ApiResult<StatusCode> {
    match state.catalog.delete_provider(id).await? {
        DeleteProviderOutcome::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteProviderOutcome::NotFound => Err(ApiError::not_found("provider")),
        DeleteProviderOutcome::InUse => Err(ApiError::conflict(
            "provider_in_use",
            "model configs use this provider: delete them first, or disable the provider",
        )),
        DeleteProviderOutcome::NamedByOldChats => Err(ApiError::conflict(
            "provider_in_use",
            "model configs still name this provider (deleted ones that old chats use \
             count too): disable it instead",
        )),
    }
}
