//! Provider bootstrap (DESIGN §10): with `CHATD_PROVIDER_KIND` and
//! `CHATD_MODEL` set, a replica makes sure that provider and a default model
//! exist at start, so a fresh deployment works without admin calls.
//!
//! Keys never land in the database: the provider row names the environment
//! variable that holds the key (`CHATD_PROVIDER_API_KEY`, or the one
//! `CHATD_PROVIDER_API_KEY_ENV` names), which every replica has.

use chatd_shared::{
    db::{
        DbError, Pool,
        model_configs::{self, NewModelConfig},
        providers::{self, NewProvider, ProviderChanges},
    },
    ids::ModelConfigId,
    pubsub::{ControlNotice, PubSub},
    status::ProviderKind,
};

/// Key of the advisory lock that serialises bootstraps of replicas starting together.
const BOOTSTRAP_LOCK: i64 = 0x6368_6174_642d_6270; // "chatd-bp"

/// The provider and model to make sure of.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderBootstrap {
    /// Provider name (unique).
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL (vendor SDK convention).
    pub base_url: String,
    /// The variable holding the API key, if any.
    pub api_key_env: Option<String>,
    /// The model name.
    pub model: String,
    /// Its context window.
    pub context_limit: i32,
    /// Make this model the default even when another one is (`chatd dev`:
    /// the provider chosen for this run is the one chats use). Otherwise it
    /// becomes the default only when there is none.
    pub make_default: bool,
}

impl ProviderBootstrap {
    /// The default base URL of a provider kind.
    pub fn default_base_url(kind: ProviderKind) -> &'static str {
        match kind {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::Mock => "mock://",
        }
    }
}

/// Makes sure the provider and model exist (creating or updating them) and
/// that some model (this one, with `make_default`) is the default. Returns the model's id.
pub async fn ensure(
    pool: &Pool,
    pubsub: &PubSub,
    wanted: &ProviderBootstrap,
) -> Result<ModelConfigId, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])
        .await?;
    let mut changed = false;
    let provider = match providers::get_by_name(&tx, &wanted.name).await? {
        Some(existing) => {
            let same = existing.kind == wanted.kind
                && existing.base_url == wanted.base_url
                && existing.api_key.is_none()
                && existing.api_key_env == wanted.api_key_env
                && existing.enabled;
            if same {
                existing
            } else {
                changed = true;
                let changes = ProviderChanges {
                    kind: Some(wanted.kind),
                    base_url: Some(&wanted.base_url),
                    api_key: Some(None),
                    api_key_env: Some(wanted.api_key_env.as_deref()),
                    enabled: Some(true),
                    ..Default::default()
                };
                providers::update(&tx, existing.id, &changes)
                    .await?
                    .unwrap_or(existing)
            }
        }
        None => {
            changed = true;
            let new = NewProvider {
                name: &wanted.name,
                kind: wanted.kind,
                base_url: &wanted.base_url,
                api_key: None,
                api_key_env: wanted.api_key_env.as_deref(),
                enabled: true,
            };
            providers::insert(&tx, &new).await?
        }
    };
    let model = match model_configs::find_live(&tx, provider.id, &wanted.model).await? {
        Some(model) => model,
        None => {
            changed = true;
            let new = NewModelConfig {
                provider_id: provider.id,
                model: &wanted.model,
                display_name: &wanted.model,
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
    let replace = default.is_none() || (wanted.make_default && !model.is_default);
    if replace {
        changed = true;
        model_configs::set_default(&tx, model.id).await?;
    }
    tx.commit().await?;
    if changed {
        tracing::info!(provider = %wanted.name, model = %wanted.model, "provider bootstrap applied");
        let _ = pubsub.publish_control(&ControlNotice::ModelsChanged);
    }
    Ok(model.id)
}
