//! `model_configs`: the models users can pick, with limits and prices.

use chrono::{DateTime, Utc};
use postgres_types::Json;
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::ids::{ModelConfigId, ProviderId};

/// A row of `model_configs`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Its id.
    pub id: ModelConfigId,
    /// The provider that serves it.
    pub provider_id: ProviderId,
    /// The provider's model name.
    pub model: String,
    /// What users see.
    pub display_name: String,
    /// Disabled models cannot be picked.
    pub enabled: bool,
    /// The model of chats that name none (at most one).
    pub is_default: bool,
    /// The model titles are generated with (at most one; without one, each
    /// chat's own model writes its title).
    pub use_for_titles: bool,
    /// Context window in tokens.
    pub context_limit: i32,
    /// Compact the history past this % of the context window.
    pub compaction_threshold_pct: i16,
    /// Output token cap per call.
    pub max_output_tokens: i32,
    /// Price of a million input tokens, in micro-dollars.
    pub price_input_micros_per_mtok: Option<i64>,
    /// Price of a million output tokens.
    pub price_output_micros_per_mtok: Option<i64>,
    /// Price of a million cache-read tokens.
    pub price_cache_read_micros_per_mtok: Option<i64>,
    /// Price of a million cache-write tokens.
    pub price_cache_write_micros_per_mtok: Option<i64>,
    /// Provider-specific request options (temperature, reasoning effort, …).
    pub options: serde_json::Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Soft-deleted: kept for old chats, hidden from new ones.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl ModelConfig {
    fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            provider_id: row.try_get("provider_id")?,
            model: row.try_get("model")?,
            display_name: row.try_get("display_name")?,
            enabled: row.try_get("enabled")?,
            is_default: row.try_get("is_default")?,
            use_for_titles: row.try_get("use_for_titles")?,
            context_limit: row.try_get("context_limit")?,
            compaction_threshold_pct: row.try_get("compaction_threshold_pct")?,
            max_output_tokens: row.try_get("max_output_tokens")?,
            price_input_micros_per_mtok: row.try_get("price_input_micros_per_mtok")?,
            price_output_micros_per_mtok: row.try_get("price_output_micros_per_mtok")?,
            price_cache_read_micros_per_mtok: row.try_get("price_cache_read_micros_per_mtok")?,
            price_cache_write_micros_per_mtok: row.try_get("price_cache_write_micros_per_mtok")?,
            options: row.try_get::<_, Json<serde_json::Value>>("options")?.0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }
}

const COLUMNS: &str = "id, provider_id, model, display_name, enabled, is_default, use_for_titles,
    context_limit,
    compaction_threshold_pct, max_output_tokens, price_input_micros_per_mtok,
    price_output_micros_per_mtok, price_cache_read_micros_per_mtok,
    price_cache_write_micros_per_mtok, options, created_at, updated_at, deleted_at";

/// What [`insert`] stores.
#[derive(Debug, Clone)]
pub struct NewModelConfig<'a> {
    /// Serving provider.
    pub provider_id: ProviderId,
    /// Provider's model name.
    pub model: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// Enabled?
    pub enabled: bool,
    /// Default?
    pub is_default: bool,
    /// Context window.
    pub context_limit: i32,
    /// Compaction threshold %.
    pub compaction_threshold_pct: i16,
    /// Output cap.
    pub max_output_tokens: i32,
    /// Prices (input, output, cache read, cache write) in micro-dollars per million tokens.
    pub prices: [Option<i64>; 4],
    /// Options.
    pub options: serde_json::Value,
}

/// Stores a model config.
pub async fn insert(db: &impl GenericClient, config: &NewModelConfig<'_>) -> DbResult<ModelConfig> {
    let sql = format!(
        "INSERT INTO model_configs (id, provider_id, model, display_name, enabled, is_default,
             context_limit, compaction_threshold_pct, max_output_tokens, price_input_micros_per_mtok,
             price_output_micros_per_mtok, price_cache_read_micros_per_mtok,
             price_cache_write_micros_per_mtok, options)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &ModelConfigId::new_random(),
                &config.provider_id,
                &config.model,
                &config.display_name,
                &config.enabled,
                &config.is_default,
                &config.context_limit,
                &config.compaction_threshold_pct,
                &config.max_output_tokens,
                &config.prices[0],
                &config.prices[1],
                &config.prices[2],
                &config.prices[3],
                &Json(&config.options),
            ],
        )
        .await?;
    ModelConfig::from_row(&row)
}

/// One model config (also a soft-deleted one: old chats still name it).
pub async fn get(db: &impl GenericClient, id: ModelConfigId) -> DbResult<Option<ModelConfig>> {
    let sql = format!("SELECT {COLUMNS} FROM model_configs WHERE id = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(ModelConfig::from_row)
        .transpose()
}

/// The live default model, if one is set.
pub async fn get_default(db: &impl GenericClient) -> DbResult<Option<ModelConfig>> {
    get_flagged(db, "is_default").await
}

/// The live model config with boolean column `flag` set (at most one has).
async fn get_flagged(db: &impl GenericClient, flag: &str) -> DbResult<Option<ModelConfig>> {
    let sql = format!("SELECT {COLUMNS} FROM model_configs WHERE {flag} AND deleted_at IS NULL");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[])
        .await?
        .as_ref()
        .map(ModelConfig::from_row)
        .transpose()
}

/// Every model config that is not deleted, by display name.
pub async fn list(db: &impl GenericClient) -> DbResult<Vec<ModelConfig>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM model_configs WHERE deleted_at IS NULL ORDER BY display_name, id"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[])
        .await?
        .iter()
        .map(ModelConfig::from_row)
        .collect()
}

/// The live (not deleted) config of `model` on `provider_id`, if any.
pub async fn find_live(
    db: &impl GenericClient,
    provider_id: ProviderId,
    model: &str,
) -> DbResult<Option<ModelConfig>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM model_configs
         WHERE provider_id = $1 AND model = $2 AND deleted_at IS NULL ORDER BY created_at LIMIT 1"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&provider_id, &model])
        .await?
        .as_ref()
        .map(ModelConfig::from_row)
        .transpose()
}

/// Makes `id` the default model. Two statements (clear, then set), so call
/// it inside a transaction: the single-default index is checked per row.
pub async fn set_default(db: &impl GenericClient, id: ModelConfigId) -> DbResult<bool> {
    let clear = db
        .prepare_cached("UPDATE model_configs SET is_default = false, updated_at = now() WHERE is_default AND id <> $1")
        .await?;
    db.execute(&clear, &[&id]).await?;
    let set = db
        .prepare_cached(
            "UPDATE model_configs SET is_default = true, updated_at = now() WHERE id = $1 AND deleted_at IS NULL",
        )
        .await?;
    Ok(db.execute(&set, &[&id]).await? == 1)
}

/// Makes `id` the model titles are generated with (`use_for_titles`), or
/// with `false` stops it being that model. Two statements when setting
/// (clear, then set), so call it inside a transaction, as for the default.
pub async fn set_use_for_titles(
    db: &impl GenericClient,
    id: ModelConfigId,
    use_for_titles: bool,
) -> DbResult<bool> {
    if use_for_titles {
        let clear = db
            .prepare_cached(
                "UPDATE model_configs SET use_for_titles = false, updated_at = now()
                 WHERE use_for_titles AND id <> $1",
            )
            .await?;
        db.execute(&clear, &[&id]).await?;
    }
    let set = db
        .prepare_cached(
            "UPDATE model_configs SET use_for_titles = $2, updated_at = now()
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .await?;
    Ok(db.execute(&set, &[&id, &use_for_titles]).await? == 1)
}

/// The live model config flagged `use_for_titles`, if any.
pub async fn get_title_model(db: &impl GenericClient) -> DbResult<Option<ModelConfig>> {
    get_flagged(db, "use_for_titles").await
}

/// The models users can pick: enabled, not deleted, on an enabled provider;
/// the default first, then by display name.
pub async fn list_available(db: &impl GenericClient) -> DbResult<Vec<ModelConfig>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM model_configs m
         WHERE enabled AND deleted_at IS NULL
           AND EXISTS (SELECT 1 FROM providers p WHERE p.id = m.provider_id AND p.enabled)
         ORDER BY is_default DESC, display_name, id"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[])
        .await?
        .iter()
        .map(ModelConfig::from_row)
        .collect()
}

/// Changes to a model config; `None` leaves a field as it is (for prices,
/// `Some(None)` clears them). Making it the default is [`set_default`].
#[derive(Debug, Clone, Default)]
pub struct ModelConfigChanges<'a> {
    /// New display name.
    pub display_name: Option<&'a str>,
    /// Enabled?
    pub enabled: Option<bool>,
    /// New context window.
    pub context_limit: Option<i32>,
    /// New compaction threshold %.
    pub compaction_threshold_pct: Option<i16>,
    /// New output cap.
    pub max_output_tokens: Option<i32>,
    /// New prices (input, output, cache read, cache write), each set, cleared or kept.
    pub prices: [Option<Option<i64>>; 4],
    /// New options (replacing the old ones).
    pub options: Option<&'a serde_json::Value>,
}

/// Applies `changes` to a live model config; `None` when it does not exist
/// or is deleted.
pub async fn update(
    db: &impl GenericClient,
    id: ModelConfigId,
    changes: &ModelConfigChanges<'_>,
) -> DbResult<Option<ModelConfig>> {
    let sql = format!(
        "UPDATE model_configs SET
             display_name = COALESCE($2, display_name),
             enabled = COALESCE($3, enabled),
             context_limit = COALESCE($4, context_limit),
             compaction_threshold_pct = COALESCE($5, compaction_threshold_pct),
             max_output_tokens = COALESCE($6, max_output_tokens),
             price_input_micros_per_mtok =
                 CASE WHEN $7 THEN $8 ELSE price_input_micros_per_mtok END,
             price_output_micros_per_mtok =
                 CASE WHEN $9 THEN $10 ELSE price_output_micros_per_mtok END,
             price_cache_read_micros_per_mtok =
                 CASE WHEN $11 THEN $12 ELSE price_cache_read_micros_per_mtok END,
             price_cache_write_micros_per_mtok =
                 CASE WHEN $13 THEN $14 ELSE price_cache_write_micros_per_mtok END,
             options = COALESCE($15, options),
             updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let [input, output, cache_read, cache_write] = changes.prices;
    let row = db
        .query_opt(
            &stmt,
            &[
                &id,
                &changes.display_name,
                &changes.enabled,
                &changes.context_limit,
                &changes.compaction_threshold_pct,
                &changes.max_output_tokens,
                &input.is_some(),
                &input.flatten(),
                &output.is_some(),
                &output.flatten(),
                &cache_read.is_some(),
                &cache_read.flatten(),
                &cache_write.is_some(),
                &cache_write.flatten(),
                &changes.options.map(Json),
            ],
        )
        .await?;
    row.as_ref().map(ModelConfig::from_row).transpose()
}

/// Soft-deletes a model config (old chats keep naming it) and takes the
/// default away from it. Returns false when it did not exist or was deleted
/// already.
pub async fn soft_delete(db: &impl GenericClient, id: ModelConfigId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "UPDATE model_configs SET deleted_at = now(), is_default = false,
                 use_for_titles = false, updated_at = now()
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// True when a live (not deleted) model config is served by `provider_id`.
pub async fn provider_has_live(db: &impl GenericClient, provider_id: ProviderId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "SELECT EXISTS (
                 SELECT 1 FROM model_configs WHERE provider_id = $1 AND deleted_at IS NULL
             )",
        )
        .await?;
    Ok(db.query_one(&stmt, &[&provider_id]).await?.try_get(0)?)
}

/// Removes `provider_id`'s deleted model configs that no chat and no message
/// names any more (so the provider itself can go); returns how many. The
/// ones still named stay, and keep the provider.
///
/// `chat_messages.model_config_id` has no index: this scans the messages,
/// which is fine for an admin deleting a provider and for nothing frequent.
pub async fn purge_deleted_unused(
    db: &impl GenericClient,
    provider_id: ProviderId,
) -> DbResult<u64> {
    let stmt = db
        .prepare_cached(
            "DELETE FROM model_configs m
             WHERE m.provider_id = $1 AND m.deleted_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.model_config_id = m.id)
               AND NOT EXISTS (SELECT 1 FROM chat_messages cm WHERE cm.model_config_id = m.id)",
        )
        .await?;
    Ok(db.execute(&stmt, &[&provider_id]).await?)
}
