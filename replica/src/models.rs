//! The model catalog: model configs and their providers, cached in memory so
//! a turn costs no statement to find its model, and dropped whenever a
//! `chatd_control` notice says they changed (or the listener resynced).

use std::{collections::HashMap, sync::Arc};

use chatd_shared::{
    db::{
        DbError, Pool, model_configs, model_configs::ModelConfig, providers, providers::Provider,
    },
    ids::ModelConfigId,
    pubsub::PubSub,
    sync::lock,
};
use tokio_util::sync::CancellationToken;

use crate::llm::{ProviderConfigError, SharedProvider};

/// Builds a provider client from its row ([`crate::llm::build`], or a
/// test's stand-in).
pub type ProviderFactory =
    Arc<dyn Fn(&Provider) -> Result<SharedProvider, ProviderConfigError> + Send + Sync>;

/// A model ready to call.
pub struct ResolvedModel {
    /// Its configuration (limits, prices, options).
    pub config: ModelConfig,
    /// Its provider's row.
    pub provider_row: Provider,
    /// The client.
    pub provider: SharedProvider,
}

/// Why a chat's model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The chat names no model and none is the default.
    #[error("no model is configured: set a default model (or CHATD_PROVIDER_KIND and CHATD_MODEL)")]
    NoDefault,
    /// The model config does not exist (any more).
    #[error("model config {0} does not exist")]
    Missing(ModelConfigId),
    /// The model config is disabled or deleted.
    #[error("model {0} is disabled")]
    Disabled(String),
    /// Its provider is missing or disabled.
    #[error("provider {name}: {reason}")]
    Provider {
        /// The provider.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Its provider's row cannot be turned into a client (the error names
    /// the provider).
    #[error(transparent)]
    Build(#[from] ProviderConfigError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Model configs and provider clients, by id.
pub struct ModelCatalog {
    pool: Pool,
    factory: ProviderFactory,
    cache: std::sync::Mutex<Cache>,
    /// Held while loading from the database: the runs that miss together
    /// (every run right after start or an invalidation) wait for one load
    /// instead of each reading the same rows.
    loading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    models: HashMap<ModelConfigId, Arc<ResolvedModel>>,
    default: Option<ModelConfigId>,
    /// The model flagged `use_for_titles` (`Some(None)`: none is).
    title: Option<Option<ModelConfigId>>,
    /// Bumped on every invalidation, so a lookup that raced one is not cached.
    epoch: u64,
}

impl ModelCatalog {
    /// An empty catalog.
    pub fn new(pool: Pool, factory: ProviderFactory) -> Arc<Self> {
        Arc::new(Self {
            pool,
            factory,
            cache: std::sync::Mutex::new(Cache::default()),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    /// Forgets everything cached.
    pub fn invalidate(&self) {
        let mut cache = self.cache();
        cache.models.clear();
        cache.default = None;
        cache.title = None;
        cache.epoch += 1;
    }

    /// The cached model `id` (or the default), and the cache's epoch.
    fn cached(&self, id: Option<ModelConfigId>) -> (Option<Arc<ResolvedModel>>, u64) {
        let cache = self.cache();
        let key = id.or(cache.default);
        (
            key.and_then(|key| cache.models.get(&key).cloned()),
            cache.epoch,
        )
    }

    /// The model `id`, or the default model when `None`.
    pub async fn resolve(
        &self,
        id: Option<ModelConfigId>,
    ) -> Result<Arc<ResolvedModel>, ModelError> {
        if let (Some(model), _) = self.cached(id) {
            return Ok(model);
        }
        let _loading = self.loading.lock().await;
        // Whoever held the lock before us may have loaded it.
        let (cached, epoch) = self.cached(id);
        if let Some(model) = cached {
            return Ok(model);
        }
        let client = self.pool.get().await.map_err(DbError::from)?;
        let config = match id {
            Some(id) => model_configs::get(&client, id)
                .await?
                .ok_or(ModelError::Missing(id))?,
            None => model_configs::get_default(&client)
                .await?
                .ok_or(ModelError::NoDefault)?,
        };
        if !config.enabled || config.deleted_at.is_some() {
            return Err(ModelError::Disabled(config.display_name));
        }
        let provider_row = providers::get(&client, config.provider_id)
            .await?
            .ok_or_else(|| ModelError::Provider {
                name: config.provider_id.to_string(),
                reason: "does not exist",
            })?;
        drop(client);
        if !provider_row.enabled {
            return Err(ModelError::Provider {
                name: provider_row.name,
                reason: "is disabled",
            });
        }
        let provider = (self.factory)(&provider_row)?;
        let model = Arc::new(ResolvedModel {
            config,
            provider_row,
            provider,
        });
        let mut cache = self.cache();
        if cache.epoch == epoch {
            cache.models.insert(model.config.id, model.clone());
            if id.is_none() {
                cache.default = Some(model.config.id);
            }
        }
        Ok(model)
    }

    /// The model titles are generated with (flagged `use_for_titles`), if
    /// one is and it can be used.
    pub async fn resolve_title_model(&self) -> Result<Option<Arc<ResolvedModel>>, ModelError> {
        let (known, epoch) = {
            let cache = self.cache();
            (cache.title, cache.epoch)
        };
        let id = match known {
            Some(id) => id,
            None => {
                let client = self.pool.get().await.map_err(DbError::from)?;
                let id = model_configs::get_title_model(&client)
                    .await?
                    .map(|config| config.id);
                let mut cache = self.cache();
                if cache.epoch == epoch {
                    cache.title = Some(id);
                }
                id
            }
        };
        match id {
            Some(id) => self.resolve(Some(id)).await.map(Some),
            None => Ok(None),
        }
    }

    /// Drops the cache on every control notice and resync, until `stop`.
    pub async fn watch(self: Arc<Self>, pubsub: PubSub, stop: CancellationToken) {
        pubsub.on_control_change(stop, || self.invalidate()).await;
    }
}
