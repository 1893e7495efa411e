//! `/admin/providers`: the LLM endpoints that serve model configs. A stored
//! API key is never shown, only whether there is one. Every change tells the
//! replicas' model catalogs (`ModelsChanged`).

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{CreateProvider, ErrorResponse, Provider, UpdateProvider},
    db::{
        DbError, model_configs,
        providers::{self, NewProvider, ProviderChanges},
    },
    ids::ProviderId,
    status::ProviderKind,
};
use reqwest::Url;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Admin, is_foreign_key_violation, models_changed, text_field};
use crate::{
    api::{
        AppState,
        error::{ApiError, ApiResult},
        extract::{ApiJson, ApiPath},
    },
    llm::MockProvider,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
}

/// Longest provider name (the column's check).
const MAX_NAME: usize = 128;

/// How a provider is reached: checked together, since each rule involves
/// more than one field.
struct Connection<'a> {
    kind: ProviderKind,
    base_url: &'a str,
    api_key: Option<&'a str>,
    api_key_env: Option<&'a str>,
}

impl Connection<'_> {
    /// 422 unless every replica could build this provider (as far as can be
    /// told without its environment).
    fn check(&self, name: &str) -> ApiResult<()> {
        self.check_base_url(name)?;
        if self.api_key.is_some() && self.api_key_env.is_some() {
            return Err(ApiError::unprocessable(
                "invalid_api_key",
                "give api_key or api_key_env, not both",
            ));
        }
        if let Some(key) = self.api_key
            && (key.is_empty() || key.chars().any(char::is_control))
        {
            return Err(ApiError::unprocessable(
                "invalid_api_key",
                "api_key must be non-empty text without control characters (null removes it)",
            ));
        }
        if let Some(variable) = self.api_key_env
            && !is_variable_name(variable)
        {
            return Err(ApiError::unprocessable(
                "invalid_api_key_env",
                "api_key_env must be an environment variable name: letters, digits and _, \
                 not starting with a digit (null removes it)",
            ));
        }
        Ok(())
    }

    /// The base URL follows each vendor SDK's convention (DESIGN §10); a
    /// `mock` provider's holds its settings (`mock://?tokens=…`).
    fn check_base_url(&self, name: &str) -> ApiResult<()> {
        let invalid = |reason: String| ApiError::unprocessable("invalid_base_url", reason);
        match self.kind {
            ProviderKind::Mock => MockProvider::from_url(name, self.base_url)
                .map(drop)
                .map_err(|error| invalid(error.to_string())),
            ProviderKind::Openai | ProviderKind::Anthropic => {
                let example = match self.kind {
                    ProviderKind::Anthropic => "https://api.anthropic.com",
                    _ => "https://api.openai.com/v1",
                };
                let url = Url::parse(self.base_url).map_err(|error| {
                    invalid(format!(
                        "base_url is not a URL ({error}); expected one like {example}"
                    ))
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(format!(
                        "base_url must be an http or https URL like {example}, not {}",
                        url.scheme()
                    )));
                }
                Ok(())
            }
        }
    }
}

/// True for a portable environment variable name.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A write's error, with a taken name as the 409 it is.
fn name_taken(error: DbError, name: &str) -> ApiError {
    if error.is_unique_violation() {
        ApiError::conflict("name_taken", format!("a provider named {name:?} exists"))
    } else {
        error.into()
    }
}

/// Every provider, by name.
#[utoipa::path(
    get, path = "/admin/providers", tag = "admin",
    responses(
        (status = 200, body = Vec<Provider>),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    )
)]
async fn list_providers(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Vec<Provider>>> {
    let client = state.pool.get().await?;
    let rows = providers::list(&client).await?;
    Ok(Json(rows.iter().map(Provider::from).collect()))
}

/// Add a provider (enabled unless `enabled` is false).
#[utoipa::path(
    post, path = "/admin/providers", tag = "admin", request_body = CreateProvider,
    responses(
        (status = 201, body = Provider, description = "Created"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "The name is taken"),
        (status = 422, body = ErrorResponse),
    )
)]
async fn create_provider(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateProvider>,
) -> ApiResult<(StatusCode, Json<Provider>)> {
    let name = text_field(&body.name, "name", "invalid_name", 1..=MAX_NAME)?;
    let connection = Connection {
        kind: body.kind,
        base_url: body.base_url.trim(),
        api_key: body.api_key.as_deref().map(str::trim),
        api_key_env: body.api_key_env.as_deref().map(str::trim),
    };
    connection.check(name)?;
    let new = NewProvider {
        name,
        kind: connection.kind,
        base_url: connection.base_url,
        api_key: connection.api_key,
        api_key_env: connection.api_key_env,
        enabled: body.enabled.unwrap_or(true),
    };
    let client = state.pool.get().await?;
    let row = providers::insert(&client, &new)
        .await
        .map_err(|error| name_taken(error, name))?;
    drop(client);
    models_changed(&state);
    Ok((StatusCode::CREATED, Json(Provider::from(&row))))
}

/// One provider.
#[utoipa::path(
    get, path = "/admin/providers/{id}", tag = "admin", params(("id" = ProviderId, Path)),
    responses(
        (status = 200, body = Provider),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
    )
)]
async fn get_provider(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ProviderId>,
) -> ApiResult<Json<Provider>> {
    let client = state.pool.get().await?;
    let row = providers::get(&client, id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider"))?;
    Ok(Json(Provider::from(&row)))
}

/// Change a provider: fields left out stay; `null` removes `api_key` or
/// `api_key_env`. The result must still be a usable provider.
#[utoipa::path(
    patch, path = "/admin/providers/{id}", tag = "admin", params(("id" = ProviderId, Path)),
    request_body = UpdateProvider,
    responses(
        (status = 200, body = Provider),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "The name is taken"),
        (status = 422, body = ErrorResponse),
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
        .map(|name| text_field(name, "name", "invalid_name", 1..=MAX_NAME))
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
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    // Locked, so the combination checked is the one written.
    let current = providers::get_for_update(&tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider"))?;
    let reconnects = changes.kind.is_some()
        || changes.base_url.is_some()
        || changes.api_key.is_some()
        || changes.api_key_env.is_some();
    if reconnects {
        let connection = Connection {
            kind: changes.kind.unwrap_or(current.kind),
            base_url: changes.base_url.unwrap_or(&current.base_url),
            api_key: changes.api_key.unwrap_or(current.api_key.as_deref()),
            api_key_env: changes
                .api_key_env
                .unwrap_or(current.api_key_env.as_deref()),
        };
        connection.check(name.unwrap_or(&current.name))?;
    }
    let row = providers::update(&tx, id, &changes)
        .await
        .map_err(|error| name_taken(error, name.unwrap_or(&current.name)))?
        .ok_or_else(|| ApiError::not_found("provider"))?;
    tx.commit().await.map_err(DbError::from)?;
    drop(client);
    models_changed(&state);
    Ok(Json(Provider::from(&row)))
}

/// Delete a provider no live model config uses. Its deleted model configs
/// go with it, unless old chats still name them: then it stays (409), and
/// disabling it is the way to retire it.
#[utoipa::path(
    delete, path = "/admin/providers/{id}", tag = "admin", params(("id" = ProviderId, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "Model configs still use it"),
    )
)]
async fn delete_provider(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<ProviderId>,
) -> ApiResult<StatusCode> {
    let mut client = state.pool.get().await?;
    if model_configs::provider_has_live(&client, id).await? {
        return Err(ApiError::conflict(
            "provider_in_use",
            "model configs use this provider: delete them first, or disable the provider",
        ));
    }
    let tx = client.transaction().await.map_err(DbError::from)?;
    model_configs::purge_deleted_unused(&tx, id).await?;
    // The foreign key has the last word: a config created meanwhile, or a
    // deleted one that old chats still name, keeps the provider.
    let deleted = match providers::delete(&tx, id).await {
        Ok(deleted) => deleted,
        Err(error) if is_foreign_key_violation(&error) => {
            return Err(ApiError::conflict(
                "provider_in_use",
                "model configs still name this provider (deleted ones that old chats use \
                 count too): disable it instead",
            ));
        }
        Err(error) => return Err(error.into()),
    };
    if !deleted {
        return Err(ApiError::not_found("provider"));
    }
    tx.commit().await.map_err(DbError::from)?;
    drop(client);
    models_changed(&state);
    Ok(StatusCode::NO_CONTENT)
}
