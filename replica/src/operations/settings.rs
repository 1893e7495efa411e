//! What admins and users set beside chats (ARCHITECTURE.md §17): the deployment's
//! system prompt and spend limits, a user's custom prompt and spend-limit
//! override; and what they read back: spend and usage. A change every
//! replica caches is announced as [`Change::SettingsChanged`], so each
//! replica's settings cache forgets it. A user's custom prompt is not
//! cached anywhere (a turn reads it with its history), so it needs no
//! notice.

use std::sync::Arc;

use chatd_shared::{
    db::{
        DbError, Pool,
        spend::{self, SpendSettings},
        system_prompts,
        usage::{self, UsageQuery, UsageRow},
    },
    ids::UserId,
    pubsub::PubSub,
    status::SpendPeriod,
};
use chrono::{DateTime, Utc};

use super::{Change, announce::announce};
use crate::settings::SettingsCache;

/// A user's spend in the current period and the limit that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendLimit {
    /// Spent in the period, in micro-dollars.
    pub spent_micros: i64,
    /// Reserved by model calls in flight.
    pub reserved_micros: i64,
    /// The limit per period (their override, else the default); `None`: none.
    pub limit_micros: Option<i64>,
    /// The period.
    pub period: SpendPeriod,
    /// When the period ends.
    pub resets_at: DateTime<Utc>,
}

/// Usage over a range: the totals and one row per group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Cost of everything in the range, in micro-dollars.
    pub total_cost_micros: i64,
    /// Input tokens of everything in the range.
    pub input_tokens: i64,
    /// Output tokens of everything in the range.
    pub output_tokens: i64,
    /// One row per group, by key.
    pub rows: Vec<UsageRow>,
}

/// The settings' changes and reads, changes announced. Cheap to clone (a
/// pool, a pubsub handle and the replica's settings cache).
#[derive(Clone)]
pub struct Settings {
    pool: Pool,
    pubsub: PubSub,
    cache: Arc<SettingsCache>,
}

impl Settings {
    /// Operations on `pool`'s database, announced through `pubsub`; this
    /// replica's `cache` forgets a change at once (the others when the
    /// notice arrives).
    pub fn new(pool: Pool, pubsub: PubSub, cache: Arc<SettingsCache>) -> Self {
        Self {
            pool,
            pubsub,
            cache,
        }
    }

    /// Tells every replica's settings cache, this one's first.
    fn changed(&self) {
        self.cache.invalidate();
        announce(&self.pubsub, [Change::SettingsChanged]);
    }

    /// The deployment's system prompt ("" when none).
    pub async fn deployment_prompt(&self) -> Result<String, DbError> {
        let client = self.pool.get().await?;
        system_prompts::deployment(&client).await
    }

    /// Replaces the deployment's system prompt. Announces the change.
    pub async fn set_deployment_prompt(&self, prompt: &str) -> Result<(), DbError> {
        {
            let client = self.pool.get().await?;
            system_prompts::set_deployment(&client, prompt).await?;
        }
        self.changed();
        Ok(())
    }

    /// `user`'s custom prompt ("" when none).
    pub async fn user_prompt(&self, user: UserId) -> Result<String, DbError> {
        let client = self.pool.get().await?;
        system_prompts::user(&client, user).await
    }

    /// Replaces `user`'s custom prompt; `false` when the user is gone.
    pub async fn set_user_prompt(&self, user: UserId, prompt: &str) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        system_prompts::set_user(&client, user, prompt).await
    }

    /// The default spend limit and its period.
    pub async fn spend_limits(&self) -> Result<SpendSettings, DbError> {
        let client = self.pool.get().await?;
        spend::settings(&client).await
    }

    /// Replaces the default spend limit and its period. Announces the change.
    pub async fn set_spend_limits(&self, settings: &SpendSettings) -> Result<(), DbError> {
        {
            let client = self.pool.get().await?;
            spend::set_settings(&client, settings).await?;
        }
        self.changed();
        Ok(())
    }

    /// Sets (`None`: removes) `user`'s spend-limit override; `false` when
    /// the user does not exist. Announces the change.
    pub async fn set_user_spend_limit(
        &self,
        user: UserId,
        limit_micros: Option<i64>,
    ) -> Result<bool, DbError> {
        let stored = {
            let client = self.pool.get().await?;
            spend::set_user_limit(&client, user, limit_micros).await?
        };
        if stored {
            self.changed();
        }
        Ok(stored)
    }

    /// `user`'s spend in the current period, and their limit.
    pub async fn spend(&self, user: UserId) -> Result<SpendLimit, DbError> {
        let client = self.pool.get().await?;
        let settings = spend::settings(&client).await?;
        let limit = spend::user_limit(&client, user)
            .await?
            .or(settings.default_limit_micros);
        let spend = spend::spend(&client, user, settings.period).await?;
        Ok(SpendLimit {
            spent_micros: spend.spent_micros,
            reserved_micros: spend.reserved_micros,
            limit_micros: limit,
            period: settings.period,
            resets_at: spend.resets_at,
        })
    }

    /// Usage per group over `query`'s range, with the totals.
    pub async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, DbError> {
        let rows = {
            let client = self.pool.get().await?;
            usage::usage(&client, query).await?
        };
        Ok(UsageReport {
            total_cost_micros: rows.iter().map(|row| row.cost_micros).sum(),
            input_tokens: rows.iter().map(|row| row.input_tokens).sum(),
            output_tokens: rows.iter().map(|row| row.output_tokens).sum(),
            rows,
        })
    }
}
