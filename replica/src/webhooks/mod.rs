//! Webhooks (ARCHITECTURE.md §17, invariant 17): a user's subscriptions to turn
//! ends, delivered at least once from a durable outbox.
//!
//! - [`Webhooks`]: what the API calls: create (the secret shown once),
//!   list, delete, and a webhook's recent deliveries; owner-only.
//! - The outbox rows are written by the statement that ends a turn
//!   (`chatd_shared::db::webhook_deliveries::OUTBOX_CTE` in
//!   `lifecycle::finish_turn`): no turn end without its event.
//! - [`sender`]: every replica's sender (claims with `SKIP LOCKED`, signs,
//!   POSTs, retries with backoff for a day), run by the runtime.
//! - [`signature`]: the signing scheme receivers verify.
//! - [`target`]: which URLs webhooks may point at.

mod clock;
pub mod sender;
pub mod signature;
pub mod target;

use std::time::Duration;

use chatd_shared::{
    api::WebhookEvent,
    auth_token::random_base62,
    db::{
        DbError, Pool,
        webhook_deliveries::{self, Delivery},
        webhooks::{self, NewWebhook, Webhook},
    },
    ids::{ChatId, WebhookId},
};

pub use self::{
    sender::{Sender, SenderHint},
    target::{TargetPolicy, TargetRefused},
};
use crate::operations::Access;

/// Every webhook secret starts with this.
pub const SECRET_PREFIX: &str = "whsec_";

/// How webhooks are delivered (ARCHITECTURE.md §10 style defaults).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Allow targets on private, loopback and link-local addresses
    /// (`CHATD_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// Longest an attempt may take (connect, send, the receiver's answer).
    pub timeout: Duration,
    /// How long a claimed delivery is held before any sender may try it
    /// again: more than `timeout`, so only a sender that died (or could not
    /// record the outcome) leaves it to another.
    pub claim_lease: Duration,
    /// The backoff's first ceiling.
    pub retry_min: Duration,
    /// The backoff's largest ceiling.
    pub retry_max: Duration,
    /// How long a delivery is retried before it is failed for good.
    pub give_up_after: Duration,
    /// How often an idle sender looks for due deliveries (the fast path is
    /// a hint from a turn end on the same replica).
    pub poll_interval: Duration,
    /// Attempts in flight at once per replica.
    pub max_in_flight: usize,
    /// How long settled deliveries are kept for `GET …/deliveries`.
    pub retention: Duration,
    /// How often settled deliveries past their retention are deleted.
    pub prune_interval: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            claim_lease: Duration::from_secs(30),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(10),
            max_in_flight: 32,
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// A webhook to make.
#[derive(Debug, Clone)]
pub struct NewWebhookRequest<'a> {
    /// Target URL.
    pub url: &'a str,
    /// Events wanted.
    pub events: &'a [WebhookEvent],
    /// One of the caller's chats only.
    pub chat_id: Option<ChatId>,
}

/// What [`Webhooks::create`] did.
#[derive(Debug, Clone)]
pub enum CreateWebhookOutcome {
    /// Made: the webhook and its secret (shown this once).
    Created(Box<Webhook>, String),
    /// The URL may not be a target.
    Target(TargetRefused),
    /// No event was named.
    NoEvents,
    /// `chat_id` names no chat of the caller's.
    ChatNotFound,
}

/// The caller's webhooks. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    pool: Pool,
    policy: TargetPolicy,
}

impl Webhooks {
    /// Webhooks in `pool`'s database, targets checked with `policy`.
    pub fn new(pool: Pool, policy: TargetPolicy) -> Self {
        Self { pool, policy }
    }

    /// Makes a webhook for the caller, with a new secret.
    pub async fn create(
        &self,
        access: Access,
        request: &NewWebhookRequest<'_>,
    ) -> Result<CreateWebhookOutcome, DbError> {
        let mut events: Vec<String> = Vec::new();
        for event in request.events {
            if !events.iter().any(|known| known == event.as_str()) {
                events.push(event.as_str().to_owned());
            }
        }
        if events.is_empty() {
            return Ok(CreateWebhookOutcome::NoEvents);
        }
        let url = match self.policy.check(request.url).await {
            Ok(url) => url,
            Err(refused) => return Ok(CreateWebhookOutcome::Target(refused)),
        };
        let secret = format!("{SECRET_PREFIX}{}", random_base62(32));
        let new = NewWebhook {
            id: WebhookId::new_random(),
            owner_id: access.user_id,
            url: url.as_str(),
            events: &events,
            chat_id: request.chat_id,
            secret: &secret,
        };
        let client = self.pool.get().await?;
        Ok(match webhooks::insert(&client, &new).await? {
            Some(webhook) => CreateWebhookOutcome::Created(Box::new(webhook), secret),
            None => CreateWebhookOutcome::ChatNotFound,
        })
    }

    /// The caller's webhooks, oldest first.
    pub async fn list(&self, access: Access) -> Result<Vec<Webhook>, DbError> {
        let client = self.pool.get().await?;
        webhooks::list(&client, access.user_id).await
    }

    /// One of the caller's webhooks.
    pub async fn get(&self, access: Access, id: WebhookId) -> Result<Option<Webhook>, DbError> {
        let client = self.pool.get().await?;
        webhooks::get(&client, id, Some(access.user_id)).await
    }

    /// Deletes one of the caller's webhooks (its pending deliveries with
    /// it); false when there is no such webhook of theirs.
    pub async fn delete(&self, access: Access, id: WebhookId) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        webhooks::delete(&client, id, Some(access.user_id)).await
    }

    /// The `limit` most recent deliveries of one of the caller's webhooks,
    /// newest first; `None` when there is no such webhook of theirs.
    pub async fn deliveries(
        &self,
        access: Access,
        id: WebhookId,
        limit: i64,
    ) -> Result<Option<Vec<Delivery>>, DbError> {
        let client = self.pool.get().await?;
        if webhooks::get(&client, id, Some(access.user_id))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        Ok(Some(webhook_deliveries::list(&client, id, limit).await?))
    }
}
