//! `webhooks`: a user's subscriptions to turn ends (ARCHITECTURE.md §17). Deliveries
//! are [`super::webhook_deliveries`].

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::ids::{ChatId, UserId, WebhookId};

/// A row of `webhooks`, without its secret (which is shown once, when the
/// webhook is made, and read again only by the sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Whose turn ends it hears of.
    pub owner_id: UserId,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The events it wants (`turn.completed`, `turn.failed`, `turn.requires_action`).
    pub events: Vec<String>,
    /// Only this chat's turn ends (`None`: every chat of the owner's).
    pub chat_id: Option<ChatId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl Webhook {
    fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            url: row.try_get("url")?,
            events: row.try_get("events")?,
            chat_id: row.try_get("chat_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The columns of [`Webhook`] (never the secret).
pub const COLUMNS: &str = "id, owner_id, url, events, chat_id, created_at";

/// What [`insert`] stores.
#[derive(Debug, Clone)]
pub struct NewWebhook<'a> {
    /// Its id.
    pub id: WebhookId,
    /// The subscriber.
    pub owner_id: UserId,
    /// Target URL (checked by the caller).
    pub url: &'a str,
    /// Events wanted (checked by the caller and the table).
    pub events: &'a [String],
    /// One chat only, which must be the owner's.
    pub chat_id: Option<ChatId>,
    /// The signing secret.
    pub secret: &'a str,
}

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO webhooks (id, owner_id, url, events, chat_id, secret)
         SELECT $1, $2, $3, $4, $5, $6
         WHERE $5::uuid IS NULL OR EXISTS (SELECT 1 FROM chats WHERE id = $5 AND owner_id = $2)
         RETURNING {COLUMNS}"
    )
});

/// Stores a webhook; `None` when `chat_id` names a chat that is not the
/// owner's (or none at all).
pub async fn insert(
    db: &impl GenericClient,
    webhook: &NewWebhook<'_>,
) -> DbResult<Option<Webhook>> {
    let stmt = db.prepare_cached(&INSERT).await?;
    db.query_opt(
        &stmt,
        &[
            &webhook.id,
            &webhook.owner_id,
            &webhook.url,
            &webhook.events,
            &webhook.chat_id,
            &webhook.secret,
        ],
    )
    .await?
    .map(|row| Webhook::from_row(&row))
    .transpose()
}

static LIST: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM webhooks WHERE owner_id = $1 ORDER BY created_at, id")
});

/// `owner`'s webhooks, oldest first.
pub async fn list(db: &impl GenericClient, owner: UserId) -> DbResult<Vec<Webhook>> {
    let stmt = db.prepare_cached(&LIST).await?;
    db.query(&stmt, &[&owner])
        .await?
        .iter()
        .map(Webhook::from_row)
        .collect()
}

static GET: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)")
});

/// Webhook `id`, if it exists and (when `only_owner` is given) is theirs.
pub async fn get(
    db: &impl GenericClient,
    id: WebhookId,
    only_owner: Option<UserId>,
) -> DbResult<Option<Webhook>> {
    let stmt = db.prepare_cached(&GET).await?;
    db.query_opt(&stmt, &[&id, &only_owner])
        .await?
        .map(|row| Webhook::from_row(&row))
        .transpose()
}

/// Deletes webhook `id` (and its deliveries, pending ones included) if it
/// exists and (when `only_owner` is given) is theirs.
pub async fn delete(
    db: &impl GenericClient,
    id: WebhookId,
    only_owner: Option<UserId>,
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "DELETE FROM webhooks WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)",
        )
        .await?;
    Ok(db.execute(&stmt, &[&id, &only_owner]).await? == 1)
}
