//! `providers`: LLM endpoints and their credentials.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::{ids::ProviderId, status::ProviderKind};

/// A row of `providers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// Its id.
    pub id: ProviderId,
    /// Unique name.
    pub name: String,
    /// Which wire format it speaks.
    pub kind: ProviderKind,
    /// Base URL, following the vendor SDK's convention (ARCHITECTURE.md §10).
    pub base_url: String,
    /// The API key itself, when stored in the database.
    pub api_key: Option<String>,
    /// The environment variable holding the key, when not stored.
    pub api_key_env: Option<String>,
    /// Disabled providers serve no model.
    pub enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Provider {
    pub(crate) fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            base_url: row.try_get("base_url")?,
            api_key: row.try_get("api_key")?,
            api_key_env: row.try_get("api_key_env")?,
            enabled: row.try_get("enabled")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const COLUMNS: &str =
    "id, name, kind, base_url, api_key, api_key_env, enabled, created_at, updated_at";

/// What [`insert`] stores.
#[derive(Debug, Clone)]
pub struct NewProvider<'a> {
    /// Unique name.
    pub name: &'a str,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL.
    pub base_url: &'a str,
    /// Key stored in the database.
    pub api_key: Option<&'a str>,
    /// Or the variable that holds it.
    pub api_key_env: Option<&'a str>,
    /// Enabled?
    pub enabled: bool,
}

/// Stores a provider.
pub async fn insert(db: &impl GenericClient, provider: &NewProvider<'_>) -> DbResult<Provider> {
    let sql = format!(
        "INSERT INTO providers (id, name, kind, base_url, api_key, api_key_env, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &ProviderId::new_random(),
                &provider.name,
                &provider.kind,
                &provider.base_url,
                &provider.api_key,
                &provider.api_key_env,
                &provider.enabled,
            ],
        )
        .await?;
    Provider::from_row(&row)
}

/// One provider.
pub async fn get(db: &impl GenericClient, id: ProviderId) -> DbResult<Option<Provider>> {
    let sql = format!("SELECT {COLUMNS} FROM providers WHERE id = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(Provider::from_row)
        .transpose()
}

/// A provider by name.
pub async fn get_by_name(db: &impl GenericClient, name: &str) -> DbResult<Option<Provider>> {
    let sql = format!("SELECT {COLUMNS} FROM providers WHERE name = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&name])
        .await?
        .as_ref()
        .map(Provider::from_row)
        .transpose()
}

/// Every provider, by name.
pub async fn list(db: &impl GenericClient) -> DbResult<Vec<Provider>> {
    let sql = format!("SELECT {COLUMNS} FROM providers ORDER BY name");
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[])
        .await?
        .iter()
        .map(Provider::from_row)
        .collect()
}

/// Changes to a provider; `None` leaves a field as it is (for the nullable
/// key fields, `Some(None)` clears them).
#[derive(Debug, Clone, Default)]
pub struct ProviderChanges<'a> {
    /// New name.
    pub name: Option<&'a str>,
    /// New wire format.
    pub kind: Option<ProviderKind>,
    /// New base URL.
    pub base_url: Option<&'a str>,
    /// New stored key (or none).
    pub api_key: Option<Option<&'a str>>,
    /// New key variable (or none).
    pub api_key_env: Option<Option<&'a str>>,
    /// Enabled?
    pub enabled: Option<bool>,
}

/// Applies `changes`; `None` when the provider does not exist.
pub async fn update(
    db: &impl GenericClient,
    id: ProviderId,
    changes: &ProviderChanges<'_>,
) -> DbResult<Option<Provider>> {
    let sql = format!(
        "UPDATE providers SET
             name = COALESCE($2, name),
             kind = COALESCE($3, kind),
             base_url = COALESCE($4, base_url),
             api_key = CASE WHEN $5 THEN $6 ELSE api_key END,
             api_key_env = CASE WHEN $7 THEN $8 ELSE api_key_env END,
             enabled = COALESCE($9, enabled),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let row = db
        .query_opt(
            &stmt,
            &[
                &id,
                &changes.name,
                &changes.kind,
                &changes.base_url,
                &changes.api_key.is_some(),
                &changes.api_key.flatten(),
                &changes.api_key_env.is_some(),
                &changes.api_key_env.flatten(),
                &changes.enabled,
            ],
        )
        .await?;
    row.as_ref().map(Provider::from_row).transpose()
}

/// Deletes a provider that no model config uses; false when it did not exist.
pub async fn delete(db: &impl GenericClient, id: ProviderId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("DELETE FROM providers WHERE id = $1")
        .await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// One provider, locked until the transaction ends (so a change checked
/// against the current row cannot race another change).
pub async fn get_for_update(db: &impl GenericClient, id: ProviderId) -> DbResult<Option<Provider>> {
    let sql = format!("SELECT {COLUMNS} FROM providers WHERE id = $1 FOR UPDATE");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(Provider::from_row)
        .transpose()
}
