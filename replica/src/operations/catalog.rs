//! The model catalog's transitions: providers and model configs, as admins
//! change them and as a replica's bootstrap makes sure of one. Every change
//! is announced as [`Change::ModelsChanged`], so each replica's model
//! catalog drops what it cached.

use chatd_shared::{
    db::{
        DbError, GenericClient, Pool, Transaction,
        model_configs::{self, ModelConfig, ModelConfigChanges, NewModelConfig},
        providers::{self, NewProvider, Provider, ProviderChanges},
    },
    ids::{ModelConfigId, ProviderId},
    pubsub::PubSub,
    status::ProviderKind,
};
use reqwest::Url;

use super::{Change, announce, is_foreign_key_violation};
use crate::llm::MockProvider;

/// Why a provider could not be reached as configured (its connection
/// fields, checked together since each rule involves more than one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    /// Both a stored key and a key variable.
    #[error("give api_key or api_key_env, not both")]
    TwoKeys,
    /// A stored key that is empty or has control characters.
    #[error("api_key must be non-empty text without control characters (null removes it)")]
    ApiKey,
    /// A key variable that is not a portable variable name.
    #[error(
        "api_key_env must be an environment variable name: letters, digits and _, \
         not starting with a digit (null removes it)"
    )]
    ApiKeyEnv,
    /// A base URL the provider kind cannot use (the sentence says why).
    #[error("{0}")]
    BaseUrl(String),
}

/// How a provider is reached.
struct Connection<'a> {
    kind: ProviderKind,
    base_url: &'a str,
    api_key: Option<&'a str>,
    api_key_env: Option<&'a str>,
}

impl Connection<'_> {
    /// Refused unless every replica could build provider `name` this way
    /// (as far as can be told without its environment).
    fn check(&self, name: &str) -> Result<(), ConnectionRefused> {
        self.check_base_url(name)?;
        if self.api_key.is_some() && self.api_key_env.is_some() {
            return Err(ConnectionRefused::TwoKeys);
        }
        if self
            .api_key
            .is_some_and(|key| key.is_empty() || key.chars().any(char::is_control))
        {
            return Err(ConnectionRefused::ApiKey);
        }
        if self
            .api_key_env
            .is_some_and(|variable| !is_variable_name(variable))
        {
            return Err(ConnectionRefused::ApiKeyEnv);
        }
        Ok(())
    }

    /// The base URL follows each vendor SDK's convention (ARCHITECTURE.md §10); a
    /// `mock` provider's holds its settings (`mock://?tokens=…`).
    fn check_base_url(&self, name: &str) -> Result<(), ConnectionRefused> {
        let example = match self.kind {
            ProviderKind::Mock => {
                return MockProvider::from_url(name, self.base_url)
                    .map(drop)
                    .map_err(|error| ConnectionRefused::BaseUrl(error.to_string()));
            }
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::Openai => "https://api.openai.com/v1",
        };
        let url = Url::parse(self.base_url).map_err(|error| {
            ConnectionRefused::BaseUrl(format!(
                "base_url is not a URL ({error}); expected one like {example}"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectionRefused::BaseUrl(format!(
                "base_url must be an http or https URL like {example}, not {}",
                url.scheme()
            )));
        }
        Ok(())
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

/// What [`Catalog::create_provider`] and [`Catalog::update_provider`] did.
#[derive(Debug, Clone)]
pub enum ProviderOutcome {
    /// Stored; the provider as it is now.
    Done(Box<Provider>),
    /// No such provider.
    NotFound,
    /// Another provider has this name.
    NameTaken(String),
    /// The provider could not be reached this way.
    Refused(ConnectionRefused),
}

/// What [`Catalog::delete_provider`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteProviderOutcome {
    /// Gone, with its deleted model configs.
    Deleted,
    /// No such provider.
    NotFound,
    /// Live model configs use it.
    InUse,
    /// Deleted model configs that old chats still name keep it.
    NamedByOldChats,
}

/// What [`Catalog::create_model_config`] and
/// [`Catalog::update_model_config`] did.
#[derive(Debug, Clone)]
pub enum ModelConfigOutcome {
    /// Stored; the model config as it is now.
    Done(Box<ModelConfig>),
    /// No such (live) model config.
    NotFound,
    /// The provider it names does not exist.
    ProviderMissing(ProviderId),
    /// Another model became the default at the same time.
    DefaultChanged,
    /// Another model became the title model at the same time.
    TitleModelChanged,
}

/// A provider and model a replica makes sure of at start (see
/// [`Catalog::ensure`]).
#[derive(Debug, Clone, Copy)]
pub struct EnsureModel<'a> {
    /// Provider name (unique).
    pub provider: &'a str,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL.
    pub base_url: &'a str,
    /// The variable holding the API key, if any.
    pub api_key_env: Option<&'a str>,
    /// The model name.
    pub model: &'a str,
    /// Its context window.
    pub context_limit: i32,
    /// Make it the default even when another model is; otherwise only when
    /// there is none.
    pub make_default: bool,
}

/// Key of the advisory lock that serialises bootstraps of replicas starting together.
const ENSURE_LOCK: i64 = 0x6368_6174_642d_6270; // "chatd-bp"

/// The transitions of providers and model configs, each announced. Cheap
/// to clone (a pool and a pubsub handle).
#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
    pubsub: PubSub,
}

impl Catalog {
    /// Operations on `pool`'s database, announced through `pubsub`.
    pub fn new(pool: Pool, pubsub: PubSub) -> Self {
        Self { pool, pubsub }
    }

    fn models_changed(&self) {
        announce::announce(&self.pubsub, [Change::ModelsChanged]);
    }

    /// Commits `tx`, then announces the change (after the commit, so a
    /// replica that hears of it reads the new rows).
    async fn commit(&self, tx: Transaction<'_>) -> Result<(), DbError> {
        tx.commit().await?;
        self.models_changed();
        Ok(())
    }

    /// Every provider, by name.
    pub async fn providers(&self) -> Result<Vec<Provider>, DbError> {
        let client = self.pool.get().await?;
        providers::list(&client).await
    }

    /// Provider `id`, if it exists.
    pub async fn provider(&self, id: ProviderId) -> Result<Option<Provider>, DbError> {
        let client = self.pool.get().await?;
        providers::get(&client, id).await
    }

    /// Adds a provider, unless it could not be reached as given or its name
    /// is taken. Announces the change.
    pub async fn create_provider(&self, new: &NewProvider<'_>) -> Result<ProviderOutcome, DbError> {
        let connection = Connection {
            kind: new.kind,
            base_url: new.base_url,
            api_key: new.api_key,
            api_key_env: new.api_key_env,
        };
        if let Err(refused) = connection.check(new.name) {
            return Ok(ProviderOutcome::Refused(refused));
        }
        let inserted = {
            let client = self.pool.get().await?;
            providers::insert(&client, new).await
        };
        match inserted {
            Ok(row) => {
                self.models_changed();
                Ok(ProviderOutcome::Done(Box::new(row)))
            }
            Err(error) if error.is_unique_violation() => {
                Ok(ProviderOutcome::NameTaken(new.name.to_owned()))
            }
            Err(error) => Err(error),
        }
    }

    /// Changes provider `id`; the result must still be reachable (checked
    /// against the locked row, so the combination checked is the one
    /// written). Announces the change.
    pub async fn update_provider(
        &self,
        id: ProviderId,
        changes: &ProviderChanges<'_>,
    ) -> Result<ProviderOutcome, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(current) = providers::get_for_update(&tx, id).await? else {
            return Ok(ProviderOutcome::NotFound);
        };
        let name = changes.name.unwrap_or(&current.name);
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
            if let Err(refused) = connection.check(name) {
                return Ok(ProviderOutcome::Refused(refused));
            }
        }
        let row = match providers::update(&tx, id, changes).await {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(ProviderOutcome::NotFound),
            Err(error) if error.is_unique_violation() => {
                return Ok(ProviderOutcome::NameTaken(name.to_owned()));
            }
            Err(error) => return Err(error),
        };
        self.commit(tx).await?;
        Ok(ProviderOutcome::Done(Box::new(row)))
    }

    /// Deletes provider `id` if no live model config uses it; its deleted
    /// model configs go with it, unless old chats still name them. Announces
    /// the change.
    pub async fn delete_provider(&self, id: ProviderId) -> Result<DeleteProviderOutcome, DbError> {
        let mut client = self.pool.get().await?;
        if model_configs::provider_has_live(&client, id).await? {
            return Ok(DeleteProviderOutcome::InUse);
        }
        let tx = client.transaction().await?;
        model_configs::purge_deleted_unused(&tx, id).await?;
        // The foreign key has the last word: a config created meanwhile, or a
        // deleted one that old chats still name, keeps the provider.
        match providers::delete(&tx, id).await {
            Ok(true) => {}
            Ok(false) => return Ok(DeleteProviderOutcome::NotFound),
            Err(error) if is_foreign_key_violation(&error) => {
                return Ok(DeleteProviderOutcome::NamedByOldChats);
            }
            Err(error) => return Err(error),
        }
        self.commit(tx).await?;
        Ok(DeleteProviderOutcome::Deleted)
    }

    /// Every model config that is not deleted, by display name.
    pub async fn model_configs(&self) -> Result<Vec<ModelConfig>, DbError> {
        let client = self.pool.get().await?;
        model_configs::list(&client).await
    }

    /// Model config `id`, unless it does not exist or was deleted.
    pub async fn model_config(&self, id: ModelConfigId) -> Result<Option<ModelConfig>, DbError> {
        let client = self.pool.get().await?;
        live(&client, id).await
    }

    /// The models users can pick, the default first (see
    /// [`model_configs::list_available`]).
    pub async fn available_models(&self) -> Result<Vec<ModelConfig>, DbError> {
        let client = self.pool.get().await?;
        model_configs::list_available(&client).await
    }

    /// Adds a model config; with `is_default` it becomes the default and the
    /// previous default stops being one, and with `use_for_titles` the same
    /// for the title model, in the same transaction. Announces the change.
    pub async fn create_model_config(
        &self,
        new: &NewModelConfig<'_>,
        use_for_titles: bool,
    ) -> Result<ModelConfigOutcome, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Inserted as a plain model first: the single-default index would
        // refuse a second default before the old one gives way.
        let plain = NewModelConfig {
            is_default: false,
            ..new.clone()
        };
        let mut row = match model_configs::insert(&tx, &plain).await {
            Ok(row) => row,
            Err(error) if is_foreign_key_violation(&error) => {
                return Ok(ModelConfigOutcome::ProviderMissing(new.provider_id));
            }
            Err(error) => return Err(error),
        };
        if new.is_default {
            row = match become_default(&tx, row.id).await? {
                Ok(row) => row,
                Err(outcome) => return Ok(outcome),
            };
        }
        if use_for_titles {
            row = match title_model(&tx, row.id, true).await? {
                Ok(row) => row,
                Err(outcome) => return Ok(outcome),
            };
        }
        self.commit(tx).await?;
        Ok(ModelConfigOutcome::Done(Box::new(row)))
    }

    /// Changes live model config `id`; with `make_default` it becomes the
    /// default (the previous one stops being it); with `use_for_titles`
    /// it becomes the title model (the previous one stops being it) or stops
    /// being it. Announces the change.
    pub async fn update_model_config(
        &self,
        id: ModelConfigId,
        changes: &ModelConfigChanges<'_>,
        make_default: bool,
        use_for_titles: Option<bool>,
    ) -> Result<ModelConfigOutcome, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(mut row) = model_configs::update(&tx, id, changes).await? else {
            return Ok(ModelConfigOutcome::NotFound);
        };
        if make_default && !row.is_default {
            row = match become_default(&tx, id).await? {
                Ok(row) => row,
                Err(outcome) => return Ok(outcome),
            };
        }
        if let Some(wanted) = use_for_titles.filter(|&wanted| wanted != row.use_for_titles) {
            row = match title_model(&tx, id, wanted).await? {
                Ok(row) => row,
                Err(outcome) => return Ok(outcome),
            };
        }
        self.commit(tx).await?;
        Ok(ModelConfigOutcome::Done(Box::new(row)))
    }

    /// Deletes model config `id` softly: it leaves the listings and no chat
    /// can run on it, but the chats that name it keep their history. False
    /// when it did not exist or was deleted already. Announces the change.
    pub async fn delete_model_config(&self, id: ModelConfigId) -> Result<bool, DbError> {
        let deleted = {
            let client = self.pool.get().await?;
            model_configs::soft_delete(&client, id).await?
        };
        if deleted {
            self.models_changed();
        }
        Ok(deleted)
    }

    /// Makes sure `wanted`'s provider and model exist (creating or updating
    /// them) and that some model (this one, with `make_default`) is the
    /// default; replicas starting together take turns. Returns the model's
    /// id. Announces the change, if there was one.
    pub async fn ensure(&self, wanted: &EnsureModel<'_>) -> Result<ModelConfigId, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ENSURE_LOCK])
            .await?;
        let (provider, mut changed) = ensure_provider(&tx, wanted).await?;
        let model = match model_configs::find_live(&tx, provider.id, wanted.model).await? {
            Some(model) => model,
            None => {
                changed = true;
                let new = NewModelConfig {
                    provider_id: provider.id,
                    model: wanted.model,
                    display_name: wanted.model,
                    enabled: true,
                    is_default: false,
                    context_limit: wanted.context_limit,
                    compaction_threshold_pct: 70,
                    max_output_tokens: 4096,
                    prices: [None; 4],
                    options: serde_json::json!({}),
                };
                model_configs::insert(&tx, &new).await?
            }
        };
        let default = model_configs::get_default(&tx).await?;
        if default.is_none() || (wanted.make_default && !model.is_default) {
            changed = true;
            model_configs::set_default(&tx, model.id).await?;
        }
        tx.commit().await?;
        drop(client);
        if changed {
            tracing::info!(provider = %wanted.provider, model = %wanted.model, "provider bootstrap applied");
            self.models_changed();
        }
        Ok(model.id)
    }
}

/// `wanted`'s provider, created or brought in line; true when it changed.
async fn ensure_provider(
    tx: &impl GenericClient,
    wanted: &EnsureModel<'_>,
) -> Result<(Provider, bool), DbError> {
    let Some(existing) = providers::get_by_name(tx, wanted.provider).await? else {
        let new = NewProvider {
            name: wanted.provider,
            kind: wanted.kind,
            base_url: wanted.base_url,
            api_key: None,
            api_key_env: wanted.api_key_env,
            enabled: true,
        };
        return Ok((providers::insert(tx, &new).await?, true));
    };
    let same = existing.kind == wanted.kind
        && existing.base_url == wanted.base_url
        && existing.api_key.is_none()
        && existing.api_key_env.as_deref() == wanted.api_key_env
        && existing.enabled;
    if same {
        return Ok((existing, false));
    }
    let changes = ProviderChanges {
        kind: Some(wanted.kind),
        base_url: Some(wanted.base_url),
        api_key: Some(None),
        api_key_env: Some(wanted.api_key_env),
        enabled: Some(true),
        ..Default::default()
    };
    let updated = providers::update(tx, existing.id, &changes).await?;
    Ok((updated.unwrap_or(existing), true))
}

/// The live model config `id`, if there is one.
async fn live(db: &impl GenericClient, id: ModelConfigId) -> Result<Option<ModelConfig>, DbError> {
    Ok(model_configs::get(db, id)
        .await?
        .filter(|row| row.deleted_at.is_none()))
}

/// Makes `id` the title model (or, with `false`, stops it being that)
/// inside the caller's transaction and returns it; otherwise the outcome
/// that says why not.
async fn title_model(
    tx: &impl GenericClient,
    id: ModelConfigId,
    use_for_titles: bool,
) -> Result<Result<ModelConfig, ModelConfigOutcome>, DbError> {
    match model_configs::set_use_for_titles(tx, id, use_for_titles).await {
        Ok(_) => Ok(live(tx, id).await?.ok_or(ModelConfigOutcome::NotFound)),
        // Another model became the title model meanwhile: the single-title
        // index refused this one.
        Err(error) if error.is_unique_violation() => Ok(Err(ModelConfigOutcome::TitleModelChanged)),
        Err(error) => Err(error),
    }
}

/// Makes `id` the default inside the caller's transaction (so the old
/// default gives way in the same commit) and returns it; otherwise the
/// outcome that says why not.
async fn become_default(
    tx: &impl GenericClient,
    id: ModelConfigId,
) -> Result<Result<ModelConfig, ModelConfigOutcome>, DbError> {
    match model_configs::set_default(tx, id).await {
        Ok(_) => Ok(live(tx, id).await?.ok_or(ModelConfigOutcome::NotFound)),
        // Another model became the default meanwhile: the single-default
        // index refused this one.
        Err(error) if error.is_unique_violation() => Ok(Err(ModelConfigOutcome::DefaultChanged)),
        Err(error) => Err(error),
    }
}
