//! `chat_queued_messages`: messages sent while a chat was busy, FIFO by id.

use chrono::{DateTime, Utc};
use postgres_types::Json;
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::{
    ids::{ChatId, QueuedMessageId, UserId},
    parts::Part,
};

/// At most this many messages wait in one chat's queue.
pub const MAX_QUEUED_PER_CHAT: i64 = 20;

/// A row of `chat_queued_messages`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    /// Its id; the queue is FIFO by id.
    pub id: QueuedMessageId,
    /// Its chat.
    pub chat_id: ChatId,
    /// The parts of the message to send.
    pub content: Vec<Part>,
    /// The sender.
    pub created_by: Option<UserId>,
    /// The client's idempotency key, carried to the message when popped.
    pub idempotency_key: Option<String>,
    /// Queued at.
    pub created_at: DateTime<Utc>,
}

impl QueuedMessage {
    /// Maps a row holding every column of `chat_queued_messages`.
    pub fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            chat_id: row.try_get("chat_id")?,
            content: row.try_get::<_, Json<Vec<Part>>>("content")?.0,
            created_by: row.try_get("created_by")?,
            idempotency_key: row.try_get("idempotency_key")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Every column of `chat_queued_messages`.
pub const COLUMNS: &str = "id, chat_id, content, created_by, idempotency_key, created_at";

/// Appends to a chat's queue unless it already holds [`MAX_QUEUED_PER_CHAT`]
/// messages; None when full. Callers that need the limit to hold under
/// concurrent sends lock the chat row first, in the same transaction.
pub async fn push(
    db: &impl GenericClient,
    chat_id: ChatId,
    content: &[Part],
    created_by: Option<UserId>,
    idempotency_key: Option<&str>,
) -> DbResult<Option<QueuedMessage>> {
    let sql = format!(
        "INSERT INTO chat_queued_messages (chat_id, content, created_by, idempotency_key)
         SELECT $1, $2, $3, $4
         WHERE (SELECT count(*) FROM chat_queued_messages WHERE chat_id = $1) < $5
         RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(
        &stmt,
        &[
            &chat_id,
            &Json(content),
            &created_by,
            &idempotency_key,
            &MAX_QUEUED_PER_CHAT,
        ],
    )
    .await?
    .as_ref()
    .map(QueuedMessage::from_row)
    .transpose()
}

/// A chat's queue, oldest first.
pub async fn list(db: &impl GenericClient, chat_id: ChatId) -> DbResult<Vec<QueuedMessage>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chat_queued_messages WHERE chat_id = $1 ORDER BY priority DESC, id"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[&chat_id])
        .await?
        .iter()
        .map(QueuedMessage::from_row)
        .collect()
}

/// The queued message a client sent with `key` on this chat, if any.
pub async fn find_by_idempotency_key(
    db: &impl GenericClient,
    chat_id: ChatId,
    key: &str,
) -> DbResult<Option<QueuedMessage>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chat_queued_messages WHERE chat_id = $1 AND idempotency_key = $2"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&chat_id, &key])
        .await?
        .as_ref()
        .map(QueuedMessage::from_row)
        .transpose()
}

/// Removes a queued message; false when it was not in this chat's queue.
pub async fn delete(
    db: &impl GenericClient,
    chat_id: ChatId,
    id: QueuedMessageId,
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("DELETE FROM chat_queued_messages WHERE chat_id = $1 AND id = $2")
        .await?;
    Ok(db.execute(&stmt, &[&chat_id, &id]).await? == 1)
}

/// Moves a queued message to the front (above every other); false when it
/// is not in this chat's queue.
pub async fn promote(
    db: &impl GenericClient,
    chat_id: ChatId,
    id: QueuedMessageId,
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "UPDATE chat_queued_messages SET priority =
                 (SELECT coalesce(max(priority), 0) + 1 FROM chat_queued_messages WHERE chat_id = $1)
             WHERE chat_id = $1 AND id = $2",
        )
        .await?;
    Ok(db.execute(&stmt, &[&chat_id, &id]).await? == 1)
}
