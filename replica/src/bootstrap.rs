//! Provider bootstrap (ARCHITECTURE.md §10): with `CHATD_PROVIDER_KIND` and
//! `CHATD_MODEL` set, a replica makes sure that provider and a default model
//! exist at start, so a fresh deployment works without admin calls.
//!
//! Keys never land in the database: the provider row names the environment
//! variable that holds the key (`CHATD_PROVIDER_API_KEY`, or the one
//! `CHATD_PROVIDER_API_KEY_ENV` names), which every replica has.

use chatd_shared::{
    db::{DbError, Pool},
    ids::ModelConfigId,
    pubsub::PubSub,
    status::ProviderKind,
};

use crate::operations::{Catalog, EnsureModel};

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
/// that some model (this one, with `make_default`) is the default; a change
/// is announced like an admin's ([`Catalog::ensure`]). Returns the model's id.
pub async fn ensure(
    pool: &Pool,
    pubsub: &PubSub,
    wanted: &ProviderBootstrap,
) -> Result<ModelConfigId, DbError> {
    let catalog = Catalog::new(pool.clone(), pubsub.clone());
    catalog
        .ensure(&EnsureModel {
            provider: &wanted.name,
            kind: wanted.kind,
            base_url: &wanted.base_url,
            api_key_env: wanted.api_key_env.as_deref(),
            model: &wanted.model,
            context_limit: wanted.context_limit,
            make_default: wanted.make_default,
        })
        .await
}
