//! `chat_messages`: the committed history of every chat, in id order.

use chrono::{DateTime, Utc};
use postgres_types::Json;
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::{
    ids::{ChatId, Generation, MessageId, ModelConfigId, UserId},
    parts::{Part, Usage},
    status::{MessageRole, MessageVisibility},
};

/// A row of `chat_messages`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id; message order is id order.
    pub id: MessageId,
    /// Its chat.
    pub chat_id: ChatId,
    /// Who it is from.
    pub role: MessageRole,
    /// Who sees it.
    pub visibility: MessageVisibility,
    /// Its parts.
    pub content: Vec<Part>,
    /// The user who sent it (user messages).
    pub created_by: Option<UserId>,
    /// The model that wrote it (assistant messages).
    pub model_config_id: Option<ModelConfigId>,
    /// The run that wrote it.
    pub generation: Option<Generation>,
    /// The step of that run.
    pub step: Option<i32>,
    /// Token usage of the model call.
    pub usage: Usage,
    /// Cost in micro-dollars.
    pub cost_micros: Option<i64>,
    /// Wall time of the model call.
    pub runtime_ms: Option<i64>,
    /// Folded into a compaction summary.
    pub compacted: bool,
    /// Soft-deleted (by an edit).
    pub deleted: bool,
    /// The client's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// Maps a row holding every column of `chat_messages`.
    pub fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            chat_id: row.try_get("chat_id")?,
            role: row.try_get("role")?,
            visibility: row.try_get("visibility")?,
            content: row.try_get::<_, Json<Vec<Part>>>("content")?.0,
            created_by: row.try_get("created_by")?,
            model_config_id: row.try_get("model_config_id")?,
            generation: row.try_get("generation")?,
            step: row.try_get("step")?,
            usage: Usage {
                input_tokens: row.try_get("input_tokens")?,
                output_tokens: row.try_get("output_tokens")?,
                reasoning_tokens: row.try_get("reasoning_tokens")?,
                cache_read_tokens: row.try_get("cache_read_tokens")?,
                cache_write_tokens: row.try_get("cache_write_tokens")?,
            },
            cost_micros: row.try_get("cost_micros")?,
            runtime_ms: row.try_get("runtime_ms")?,
            compacted: row.try_get("compacted")?,
            deleted: row.try_get("deleted")?,
            idempotency_key: row.try_get("idempotency_key")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Every column of `chat_messages`, for `SELECT`/`RETURNING` lists.
pub const COLUMNS: &str = "id, chat_id, role, visibility, content, created_by, model_config_id,
    generation, step, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
    cache_write_tokens, cost_micros, runtime_ms, compacted, deleted, idempotency_key, created_at";

/// What [`insert`] stores.
#[derive(Debug, Clone, Default)]
pub struct NewMessage<'a> {
    /// Visibility (`both` when None).
    pub visibility: Option<MessageVisibility>,
    /// Parts.
    pub content: &'a [Part],
    /// Sender.
    pub created_by: Option<UserId>,
    /// Model.
    pub model_config_id: Option<ModelConfigId>,
    /// Writing run.
    pub generation: Option<Generation>,
    /// Step.
    pub step: Option<i32>,
    /// Usage.
    pub usage: Usage,
    /// Cost.
    pub cost_micros: Option<i64>,
    /// Model call wall time.
    pub runtime_ms: Option<i64>,
    /// Idempotency key.
    pub idempotency_key: Option<&'a str>,
}

/// Stores a message without any condition. Worker writes go through the
/// fenced statements instead.
pub async fn insert(
    db: &impl GenericClient,
    chat_id: ChatId,
    role: MessageRole,
    message: &NewMessage<'_>,
) -> DbResult<Message> {
    let sql = format!(
        "INSERT INTO chat_messages (chat_id, role, visibility, content, created_by, model_config_id,
             generation, step, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
             cache_write_tokens, cost_micros, runtime_ms, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let visibility = message.visibility.unwrap_or(MessageVisibility::Both);
    let usage = &message.usage;
    let row = db
        .query_one(
            &stmt,
            &[
                &chat_id,
                &role,
                &visibility,
                &Json(message.content),
                &message.created_by,
                &message.model_config_id,
                &message.generation,
                &message.step,
                &usage.input_tokens,
                &usage.output_tokens,
                &usage.reasoning_tokens,
                &usage.cache_read_tokens,
                &usage.cache_write_tokens,
                &message.cost_micros,
                &message.runtime_ms,
                &message.idempotency_key,
            ],
        )
        .await?;
    Message::from_row(&row)
}

/// Live (not deleted) messages of a chat with id > `after`, ascending, at most `limit`.
pub async fn list_after(
    db: &impl GenericClient,
    chat_id: ChatId,
    after: MessageId,
    limit: i64,
) -> DbResult<Vec<Message>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chat_messages
         WHERE chat_id = $1 AND id > $2 AND NOT deleted ORDER BY id LIMIT $3"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[&chat_id, &after, &limit])
        .await?
        .iter()
        .map(Message::from_row)
        .collect()
}

/// A message a worker writes as part of a step (assistant or tool).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepMessage {
    /// `assistant` or `tool`.
    pub role: MessageRole,
    /// Parts.
    pub content: Vec<Part>,
    /// The model that produced it.
    pub model_config_id: Option<ModelConfigId>,
    /// The step number within the run.
    pub step: i32,
    /// Usage of the model call (assistant messages).
    #[serde(flatten)]
    pub usage: Usage,
    /// Cost in micro-dollars.
    pub cost_micros: Option<i64>,
    /// Wall time of the model call.
    pub runtime_ms: Option<i64>,
}

/// Inserts a step's messages, in order, in one statement fenced on
/// `fence` (DESIGN §3): nothing is written unless the chat is still running
/// under this worker and generation. `None` means ownership was lost.
///
/// The fence is an `UPDATE` of the chat row, so it takes the row lock: a
/// concurrent recovery or edit either commits first (and the fence fails) or
/// waits until these messages are committed.
pub async fn insert_step(
    db: &impl GenericClient,
    fence: &super::chats::Fence,
    step_messages: &[StepMessage],
) -> DbResult<Option<Vec<Message>>> {
    let sql = format!(
        "WITH owned AS (
             UPDATE chats SET updated_at = now()
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'
             RETURNING id
         )
         INSERT INTO chat_messages (chat_id, role, visibility, content, model_config_id, generation, step,
             input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens,
             cost_micros, runtime_ms)
         SELECT owned.id, m.role, 'both', m.content, m.model_config_id, $3, m.step,
             m.input_tokens, m.output_tokens, m.reasoning_tokens, m.cache_read_tokens,
             m.cache_write_tokens, m.cost_micros, m.runtime_ms
         FROM owned, ROWS FROM (jsonb_to_recordset($4::jsonb) AS (
             role message_role, content jsonb, model_config_id uuid, step int,
             input_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
             cache_read_tokens bigint, cache_write_tokens bigint, cost_micros bigint, runtime_ms bigint
         )) WITH ORDINALITY AS m(role, content, model_config_id, step, input_tokens, output_tokens,
             reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms, ord)
         ORDER BY m.ord
         RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &Json(step_messages),
            ],
        )
        .await?;
    if rows.is_empty() && !step_messages.is_empty() {
        return Ok(None);
    }
    let mut messages: Vec<Message> = rows
        .iter()
        .map(Message::from_row)
        .collect::<DbResult<_>>()?;
    messages.sort_by_key(|m| m.id);
    Ok(Some(messages))
}

/// What the model sees of a chat, in id order: live messages visible to the
/// model (`model` or `both`) that were not folded into a compaction summary.
pub async fn list_for_prompt(db: &impl GenericClient, chat_id: ChatId) -> DbResult<Vec<Message>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chat_messages
         WHERE chat_id = $1 AND NOT deleted AND NOT compacted AND visibility <> 'user'
         ORDER BY id"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[&chat_id])
        .await?
        .iter()
        .map(Message::from_row)
        .collect()
}

/// A send to an idle chat, in one statement (DESIGN §3): inserts the user
/// message and makes the chat `pending`, but only if the chat is `waiting`
/// or `error`, not archived, and (when `only_owner` is given) owned by that
/// user. `None` otherwise: busy, archived, someone else's, or gone.
pub async fn send_to_idle(
    db: &impl GenericClient,
    chat_id: ChatId,
    content: &[Part],
    created_by: Option<UserId>,
    idempotency_key: Option<&str>,
    only_owner: Option<UserId>,
) -> DbResult<Option<(Message, super::chats::BecamePending)>> {
    let sql = format!(
        "WITH chat AS (
             UPDATE chats SET status = 'pending', last_error = NULL, updated_at = now()
             WHERE id = $1 AND status IN ('waiting', 'error') AND NOT archived
               AND ($5::uuid IS NULL OR owner_id = $5)
             RETURNING id, owner_id, generation
         ), inserted AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, created_by, idempotency_key)
             SELECT id, 'user', 'both', $2, $3, $4 FROM chat
             RETURNING {COLUMNS}
         )
         SELECT inserted.*, chat.owner_id AS chat_owner_id, chat.generation AS chat_generation
         FROM inserted, chat"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let Some(row) = db
        .query_opt(
            &stmt,
            &[
                &chat_id,
                &Json(content),
                &created_by,
                &idempotency_key,
                &only_owner,
            ],
        )
        .await?
    else {
        return Ok(None);
    };
    let pending = super::chats::BecamePending {
        chat_id,
        owner_id: row.try_get("chat_owner_id")?,
        generation: row.try_get("chat_generation")?,
    };
    Ok(Some((Message::from_row(&row)?, pending)))
}

/// A page of what users see of a chat (not deleted, not model-only), in
/// ascending id order: the `limit` newest messages before `before` (or the
/// newest overall), and whether older ones exist.
pub async fn page(
    db: &impl GenericClient,
    chat_id: ChatId,
    before: Option<MessageId>,
    limit: i64,
) -> DbResult<(Vec<Message>, bool)> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chat_messages
         WHERE chat_id = $1 AND NOT deleted AND visibility <> 'model' AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let mut rows: Vec<Message> = db
        .query(&stmt, &[&chat_id, &before, &(limit + 1)])
        .await?
        .iter()
        .map(Message::from_row)
        .collect::<DbResult<_>>()?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    rows.reverse();
    Ok((rows, has_more))
}

/// What users see of a chat after `after`, ascending, at most `limit`.
pub async fn visible_after(
    db: &impl GenericClient,
    chat_id: ChatId,
    after: MessageId,
    limit: i64,
) -> DbResult<Vec<Message>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chat_messages
         WHERE chat_id = $1 AND id > $2 AND NOT deleted AND visibility <> 'model'
         ORDER BY id LIMIT $3"
    );
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[&chat_id, &after, &limit])
        .await?
        .iter()
        .map(Message::from_row)
        .collect()
}

/// The message a client sent with `key` on this chat, if any.
pub async fn find_by_idempotency_key(
    db: &impl GenericClient,
    chat_id: ChatId,
    key: &str,
) -> DbResult<Option<Message>> {
    let sql =
        format!("SELECT {COLUMNS} FROM chat_messages WHERE chat_id = $1 AND idempotency_key = $2");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&chat_id, &key])
        .await?
        .as_ref()
        .map(Message::from_row)
        .transpose()
}

/// One message of a chat.
pub async fn get(
    db: &impl GenericClient,
    chat_id: ChatId,
    id: MessageId,
) -> DbResult<Option<Message>> {
    let sql = format!("SELECT {COLUMNS} FROM chat_messages WHERE chat_id = $1 AND id = $2");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&chat_id, &id])
        .await?
        .as_ref()
        .map(Message::from_row)
        .transpose()
}

/// What [`send_locked`] did.
#[derive(Debug, Clone)]
pub enum Sent {
    /// The chat was idle: the message is committed and the chat pending.
    Committed(Box<Message>, super::chats::BecamePending),
    /// The chat was busy: the message is queued.
    Queued(super::queued_messages::QueuedMessage),
    /// The idempotency key was used before for this message.
    ReplayedMessage(Box<Message>),
    /// The idempotency key was used before for this queued message.
    ReplayedQueued(super::queued_messages::QueuedMessage),
    /// The chat is busy and queueing was not wanted.
    Busy,
    /// The queue is full.
    QueueFull,
    /// The chat is archived.
    Archived,
    /// No such chat (or not `only_owner`'s).
    Missing,
}

/// A send in one transaction with the chat row locked (DESIGN §3): replays
/// an idempotency key used before (as a message or a queued message),
/// commits the message when the chat is idle, otherwise queues it (when
/// `queue_if_busy`). The lock orders it against a turn ending and against
/// other sends, so a key never yields two messages and a message is never
/// queued behind a chat that just went idle.
#[allow(clippy::too_many_arguments)]
pub async fn send_locked(
    db: &mut deadpool_postgres::Object,
    chat_id: ChatId,
    content: &[Part],
    created_by: Option<UserId>,
    idempotency_key: Option<&str>,
    only_owner: Option<UserId>,
    queue_if_busy: bool,
) -> DbResult<Sent> {
    let tx = db.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT status, archived, owner_id FROM chats WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&lock, &[&chat_id]).await? else {
        return Ok(Sent::Missing);
    };
    let status: crate::status::ChatStatus = row.try_get("status")?;
    let owner: UserId = row.try_get("owner_id")?;
    if only_owner.is_some_and(|caller| caller != owner) {
        return Ok(Sent::Missing);
    }
    if let Some(key) = idempotency_key {
        if let Some(message) = find_by_idempotency_key(&tx, chat_id, key).await? {
            return Ok(Sent::ReplayedMessage(Box::new(message)));
        }
        if let Some(queued) =
            super::queued_messages::find_by_idempotency_key(&tx, chat_id, key).await?
        {
            return Ok(Sent::ReplayedQueued(queued));
        }
    }
    if row.try_get::<_, bool>("archived")? {
        return Ok(Sent::Archived);
    }
    let sent = if !status.is_busy() {
        match send_to_idle(&tx, chat_id, content, created_by, idempotency_key, None).await? {
            Some((message, pending)) => Sent::Committed(Box::new(message), pending),
            None => return Ok(Sent::Missing),
        }
    } else if !queue_if_busy {
        return Ok(Sent::Busy);
    } else {
        match super::queued_messages::push(&tx, chat_id, content, created_by, idempotency_key)
            .await?
        {
            Some(queued) => Sent::Queued(queued),
            None => return Ok(Sent::QueueFull),
        }
    };
    tx.commit().await?;
    Ok(sent)
}
