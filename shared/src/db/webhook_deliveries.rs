//! `webhook_deliveries`: the outbox of webhook events (ARCHITECTURE.md §17,
//! invariant 17). A row is written by the statement that ends a turn
//! ([`OUTBOX_CTE`] inside [`super::lifecycle::finish_turn`]), claimed by any
//! replica's sender with `SKIP LOCKED` ([`claim_due`]), and settled by
//! [`record`]: delivered, due again after a backoff, or failed for good.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::ids::{DeliveryId, WebhookId};

/// The outbox rows of a turn end, as a CTE named `webhook_outbox` for a
/// statement that ends a turn. That statement must also have the CTEs
/// `released` (the chat after the turn's end: `chat_id`, `chat_status`,
/// `chat_owner_id`, `chat_generation`, `chat_title`) and `inserted` (the
/// messages it wrote, possibly none); the fragment uses no parameter. One
/// row per webhook of the chat's owner that wants the event the new status
/// means (`waiting`: `turn.completed`, `error`: `turn.failed`,
/// `requires_action`: `turn.requires_action`; a chat that goes on `running`
/// with a queued message has not ended its turn), with the exact body every
/// attempt will send. With no such webhook it writes nothing and the turn's
/// facts are never computed: the cost of a turn end without webhooks is one
/// index probe, and no statement.
///
/// The body: `{id, event, created_at, chat: {id, title, status, generation},
/// message_id, usage}`, `message_id` the turn's last assistant message and
/// `usage` the token counts summed over the turn's assistant messages (those
/// after the last user message, whichever generation wrote them; zeros, and
/// a null `message_id`, for a turn stopped before any model call).
pub const OUTBOX_CTE: &str = "webhook_outbox AS (
         INSERT INTO webhook_deliveries (id, webhook_id, event, payload)
         SELECT d.id, d.webhook_id, d.event, jsonb_build_object(
                    'id', d.id, 'event', d.event, 'created_at', now(),
                    'chat', jsonb_build_object('id', d.chat_id, 'title', d.title,
                        'status', d.status, 'generation', d.generation),
                    'message_id', turn.message_id, 'usage', turn.usage)
         FROM (SELECT gen_random_uuid() AS id, w.id AS webhook_id, e.event, r.chat_id,
                      r.chat_title AS title, r.chat_status::text AS status,
                      r.chat_generation AS generation
               FROM released r
               CROSS JOIN LATERAL (SELECT CASE r.chat_status::text
                   WHEN 'waiting' THEN 'turn.completed' WHEN 'error' THEN 'turn.failed'
                   WHEN 'requires_action' THEN 'turn.requires_action' END AS event) e
               JOIN webhooks w ON w.owner_id = r.chat_owner_id AND e.event = ANY (w.events)
                              AND (w.chat_id IS NULL OR w.chat_id = r.chat_id)) d
         -- Correlated on d.chat_id: computed per webhook row, so never without one.
         CROSS JOIN LATERAL (
             SELECT max(t.id) AS message_id, jsonb_build_object(
                        'input_tokens', coalesce(sum(t.input_tokens), 0),
                        'output_tokens', coalesce(sum(t.output_tokens), 0),
                        'reasoning_tokens', coalesce(sum(t.reasoning_tokens), 0),
                        'cache_read_tokens', coalesce(sum(t.cache_read_tokens), 0),
                        'cache_write_tokens', coalesce(sum(t.cache_write_tokens), 0)) AS usage
             FROM (SELECT m.id, m.input_tokens, m.output_tokens, m.reasoning_tokens,
                          m.cache_read_tokens, m.cache_write_tokens
                   FROM chat_messages m
                   WHERE m.chat_id = d.chat_id AND m.role = 'assistant' AND NOT m.deleted
                     AND m.id > COALESCE((SELECT max(u.id) FROM chat_messages u
                                          WHERE u.chat_id = d.chat_id AND u.role = 'user'
                                            AND NOT u.deleted), 0)
                   UNION ALL
                   SELECT i.id, i.input_tokens, i.output_tokens, i.reasoning_tokens,
                          i.cache_read_tokens, i.cache_write_tokens
                   FROM inserted i WHERE i.role = 'assistant') t
         ) turn
         RETURNING id
     )";

/// A delivery a sender claimed: what to POST, where, signed with what.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery id (sent in a header and in the body).
    pub id: DeliveryId,
    /// Its webhook.
    pub webhook_id: WebhookId,
    /// The event name.
    pub event: String,
    /// The exact body, the same on every attempt.
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// The target URL.
    pub url: String,
    /// The webhook's signing secret.
    pub secret: String,
}

/// Claims up to `limit` due deliveries, oldest due first, skipping rows
/// other senders hold: each gets its attempt counted and is pushed
/// `lease` into the future, so if this sender dies mid-attempt the row
/// comes due again for any replica then.
pub async fn claim_due(
    db: &impl GenericClient,
    limit: i64,
    lease: Duration,
) -> DbResult<Vec<DueDelivery>> {
    let stmt = db
        .prepare_cached(
            "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(),
                    next_attempt_at = now() + make_interval(secs => $2)
             FROM (SELECT id FROM webhook_deliveries
                   WHERE status = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at FOR UPDATE SKIP LOCKED LIMIT $1) due, webhooks w
             WHERE d.id = due.id AND w.id = d.webhook_id
             RETURNING d.id, d.webhook_id, d.event, d.payload::text AS payload, d.attempts,
                       w.url, w.secret",
        )
        .await?;
    db.query(&stmt, &[&limit, &lease.as_secs_f64()])
        .await?
        .iter()
        .map(|row| {
            Ok(DueDelivery {
                id: row.try_get("id")?,
                webhook_id: row.try_get("webhook_id")?,
                event: row.try_get("event")?,
                payload: row.try_get("payload")?,
                attempts: row.try_get("attempts")?,
                url: row.try_get("url")?,
                secret: row.try_get("secret")?,
            })
        })
        .collect()
}

/// How an attempt went, for [`record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: i32,
    },
    /// It did not: try again after `retry_in`, unless the delivery is
    /// older than `give_up_after` by then (then it failed for good).
    Failed {
        /// The receiver's status, if it answered.
        status: Option<i32>,
        /// What went wrong, for the deliveries listing.
        error: String,
        /// The backoff before the next attempt.
        retry_in: Duration,
        /// How long a delivery is retried at most.
        give_up_after: Duration,
    },
}

/// What [`record`] made of a delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Settled {
    /// Delivered; seconds from the turn's end to now (database clock).
    Delivered(f64),
    /// Due again later.
    Retrying,
    /// Given up.
    Failed,
    /// Nothing changed: it was settled already, or (for a failure) another
    /// sender claimed it since.
    Stale,
}

/// Settles attempt `attempts` of delivery `id`. A success is recorded
/// whoever holds the row now (the receiver has it); a failure only while
/// the row is still this attempt's, so a slow sender cannot reschedule a
/// row another one is trying.
pub async fn record(
    db: &impl GenericClient,
    id: DeliveryId,
    attempts: i32,
    attempt: &Attempt,
) -> DbResult<Settled> {
    match attempt {
        Attempt::Delivered { status } => {
            let stmt = db
                .prepare_cached(
                    "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(),
                            last_status = $2, last_error = NULL
                     WHERE id = $1 AND status = 'pending'
                     RETURNING extract(epoch FROM now() - created_at)::float8",
                )
                .await?;
            Ok(match db.query_opt(&stmt, &[&id, status]).await? {
                Some(row) => Settled::Delivered(row.try_get(0)?),
                None => Settled::Stale,
            })
        }
        Attempt::Failed {
            status,
            error,
            retry_in,
            give_up_after,
        } => {
            let stmt = db
                .prepare_cached(
                    "UPDATE webhook_deliveries SET last_status = $3, last_error = $4,
                            status = CASE WHEN created_at + make_interval(secs => $6)
                                               < now() + make_interval(secs => $5)
                                          THEN 'failed' ELSE 'pending' END,
                            next_attempt_at = now() + make_interval(secs => $5)
                     WHERE id = $1 AND attempts = $2 AND status = 'pending'
                     RETURNING status",
                )
                .await?;
            let row = db
                .query_opt(
                    &stmt,
                    &[
                        &id,
                        &attempts,
                        status,
                        error,
                        &retry_in.as_secs_f64(),
                        &give_up_after.as_secs_f64(),
                    ],
                )
                .await?;
            Ok(match row {
                Some(row) if row.try_get::<_, &str>(0)? == "failed" => Settled::Failed,
                Some(_) => Settled::Retrying,
                None => Settled::Stale,
            })
        }
    }
}

/// Makes deliveries `ids` due at once again (a sender stopping with
/// attempts in flight hands them back rather than letting their claim
/// lapse).
pub async fn release(db: &impl GenericClient, ids: &[DeliveryId]) -> DbResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let stmt = db
        .prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_at = now()
             WHERE id = ANY($1) AND status = 'pending'",
        )
        .await?;
    Ok(db.execute(&stmt, &[&ids]).await?)
}

/// Deletes up to `limit` settled deliveries older than `retention`; returns
/// how many.
pub async fn prune(db: &impl GenericClient, retention: Duration, limit: i64) -> DbResult<u64> {
    let stmt = db
        .prepare_cached(
            "DELETE FROM webhook_deliveries WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
        )
        .await?;
    Ok(db
        .execute(&stmt, &[&retention.as_secs_f64(), &limit])
        .await?)
}

/// A delivery as the deliveries listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id.
    pub id: DeliveryId,
    /// The event.
    pub event: String,
    /// The body sent on every attempt.
    pub payload: serde_json::Value,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the turn ended.
    pub created_at: DateTime<Utc>,
    /// When the last attempt began.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's status at the last attempt, if it answered.
    pub last_status: Option<i32>,
    /// What went wrong at the last attempt.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Delivery {
    fn from_row(row: &Row) -> DbResult<Self> {
        let status: String = row.try_get("status")?;
        let next: DateTime<Utc> = row.try_get("next_attempt_at")?;
        Ok(Self {
            id: row.try_get("id")?,
            event: row.try_get("event")?,
            payload: row.try_get("payload")?,
            attempts: row.try_get("attempts")?,
            created_at: row.try_get("created_at")?,
            last_attempt_at: row.try_get("last_attempt_at")?,
            last_status: row.try_get("last_status")?,
            last_error: row.try_get("last_error")?,
            next_attempt_at: (status == "pending").then_some(next),
            delivered_at: row.try_get("delivered_at")?,
            status,
        })
    }
}

const LIST: &str =
    "SELECT id, event, payload, status, attempts, created_at, last_attempt_at, last_status,
            last_error, next_attempt_at, delivered_at
     FROM webhook_deliveries WHERE webhook_id = $1
     ORDER BY created_at DESC, id DESC LIMIT $2";

/// Webhook `id`'s `limit` most recent deliveries, newest first.
pub async fn list(db: &impl GenericClient, id: WebhookId, limit: i64) -> DbResult<Vec<Delivery>> {
    let stmt = db.prepare_cached(LIST).await?;
    db.query(&stmt, &[&id, &limit])
        .await?
        .iter()
        .map(Delivery::from_row)
        .collect()
}
