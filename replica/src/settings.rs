//! The deployment's settings (its system prompt, the default spend limit
//! and period) and users' spend-limit overrides, cached per replica so a
//! turn or a send costs no statement to know them (ARCHITECTURE.md §17). Every
//! `chatd_control` notice and every resync drops the cache (the notice an
//! admin's change sends, or one missed while the listener was down).
//!
//! A cache nobody watches never caches: it reads every time, so code that
//! builds chat operations without a replica (tests) is never stale.

use std::{collections::HashMap, sync::Arc};

use chatd_shared::{
    db::{
        DbError, Pool,
        spend::{self, SpendSettings},
        system_prompts,
    },
    ids::UserId,
    pubsub::PubSub,
    sync::lock,
};
use tokio_util::sync::CancellationToken;

/// Users whose override is kept at most; past it the map starts over.
const OVERRIDES_CAPACITY: usize = 100_000;

/// The deployment's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The first system prompt of every model call ("" for none).
    pub system_prompt: String,
    /// The default spend limit and its period.
    pub spend: SpendSettings,
}

/// Cached settings; see the module docs.
pub struct SettingsCache {
    pool: Pool,
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set once a watcher runs: only then may anything be kept.
    watched: bool,
    deployment: Option<Arc<Deployment>>,
    overrides: HashMap<UserId, Option<i64>>,
    /// Bumped on every invalidation, so a read that raced one is not kept.
    epoch: u64,
}

impl SettingsCache {
    /// A cache over `pool`'s database; it caches once [`Self::watch`] runs.
    pub fn new(pool: Pool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            state: std::sync::Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Forgets everything cached.
    pub fn invalidate(&self) {
        let mut state = self.state();
        state.deployment = None;
        state.overrides.clear();
        state.epoch += 1;
    }

    /// Drops the cache on every control notice and resync, until `stop`;
    /// caching starts with it.
    pub async fn watch(self: Arc<Self>, pubsub: PubSub, stop: CancellationToken) {
        let mut control = pubsub.subscribe_control();
        self.state().watched = true;
        // Anything read before the subscription may be stale already.
        self.invalidate();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                delivery = control.recv() => match delivery {
                    Some(_) => self.invalidate(),
                    None => break,
                },
            }
        }
        self.state().watched = false;
        self.invalidate();
    }

    /// The deployment's settings.
    pub async fn deployment(&self) -> Result<Arc<Deployment>, DbError> {
        let epoch = {
            let state = self.state();
            if let Some(deployment) = &state.deployment {
                return Ok(deployment.clone());
            }
            state.epoch
        };
        let deployment = {
            let client = self.pool.get().await?;
            Arc::new(Deployment {
                system_prompt: system_prompts::deployment(&client).await?,
                spend: spend::settings(&client).await?,
            })
        };
        let mut state = self.state();
        if state.watched && state.epoch == epoch {
            state.deployment = Some(deployment.clone());
        }
        Ok(deployment)
    }

    /// `user`'s spend limit override, if they have one.
    pub async fn user_limit(&self, user: UserId) -> Result<Option<i64>, DbError> {
        let epoch = {
            let state = self.state();
            if let Some(limit) = state.overrides.get(&user) {
                return Ok(*limit);
            }
            state.epoch
        };
        let limit = {
            let client = self.pool.get().await?;
            spend::user_limit(&client, user).await?
        };
        let mut state = self.state();
        if state.watched && state.epoch == epoch {
            if state.overrides.len() >= OVERRIDES_CAPACITY {
                state.overrides.clear();
            }
            state.overrides.insert(user, limit);
        }
        Ok(limit)
    }
}
