//! `chat_messages`: the committed history of every chat, in id order.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use postgres_types::Json;
use tokio_postgres::Row;

use super::{DbError, DbResult, GenericClient};
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
    /// Maps a row holding every column of `chat_messages` in the order of
    /// [`COLUMNS`], from its `id` on (other columns may come before or
    /// after). Read by position: looking each column up by name scans the
    /// row's columns and was ~9 % of a replica's CPU reading long histories.
    pub fn from_row(row: &Row) -> DbResult<Self> {
        let columns = row.columns();
        let base = columns
            .iter()
            .position(|column| column.name() == "id")
            .ok_or(DbError::Unexpected("a message row without an id column"))?;
        let named = columns
            .get(base..base + COLUMN_NAMES.len())
            .is_some_and(|found| {
                found
                    .iter()
                    .zip(COLUMN_NAMES.iter())
                    .all(|(column, name)| column.name() == *name)
            });
        if !named {
            return Err(DbError::Unexpected(
                "a message row whose columns are not those of COLUMNS, in order",
            ));
        }
        let at = |offset: usize| base + offset;
        Ok(Self {
            id: row.try_get(at(0))?,
            chat_id: row.try_get(at(1))?,
            role: row.try_get(at(2))?,
            visibility: row.try_get(at(3))?,
            content: row.try_get::<_, Json<Vec<Part>>>(at(4))?.0,
            created_by: row.try_get(at(5))?,
            model_config_id: row.try_get(at(6))?,
            generation: row.try_get(at(7))?,
            step: row.try_get(at(8))?,
            usage: Usage {
                input_tokens: row.try_get(at(9))?,
                output_tokens: row.try_get(at(10))?,
                reasoning_tokens: row.try_get(at(11))?,
                cache_read_tokens: row.try_get(at(12))?,
                cache_write_tokens: row.try_get(at(13))?,
            },
            cost_micros: row.try_get(at(14))?,
            runtime_ms: row.try_get(at(15))?,
            compacted: row.try_get(at(16))?,
            deleted: row.try_get(at(17))?,
            idempotency_key: row.try_get(at(18))?,
            created_at: row.try_get(at(19))?,
        })
    }
}

/// The names of [`COLUMNS`], in order: what [`Message::from_row`] reads by
/// position, checked on every row.
static COLUMN_NAMES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| COLUMNS.split(',').map(str::trim).collect());

/// Every column of `chat_messages`, for `SELECT`/`RETURNING` lists.
pub const COLUMNS: &str = "id, chat_id, role, visibility, content, created_by, model_config_id,
    generation, step, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
    cache_write_tokens, cost_micros, runtime_ms, compacted, deleted, idempotency_key, created_at";

/// The columns a new message is written with (the rest take their
/// defaults), in the order every `INSERT INTO chat_messages` lists them.
pub const INSERT_COLUMNS: &str = "chat_id, role, visibility, content, created_by, model_config_id,
    generation, step, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
    cache_write_tokens, cost_micros, runtime_ms, idempotency_key";

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
/// fenced statements of [`super::lifecycle`] instead.
pub async fn insert(
    db: &impl GenericClient,
    chat_id: ChatId,
    role: MessageRole,
    message: &NewMessage<'_>,
) -> DbResult<Message> {
    let sql = format!(
        "INSERT INTO chat_messages ({INSERT_COLUMNS})
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

/// [`visible_after`] for several chats in one statement: for each
/// `(chat, after)` of `wants`, what users see of that chat after `after`,
/// ascending, at most `limit`; one list per want, in the order of `wants`.
/// A replica's stream feeds catch up on many chats at once this way (one
/// round trip for a burst of notices instead of one each).
///
/// The range is a row comparison on `(chat_id, id)` because only the
/// per-chat index can serve it: written as `id > w.after_id`, the planner
/// (which cannot see a lateral cursor's value and guesses a third of the
/// table) may walk the primary key from the cursor and filter by chat, which
/// with few distinct chats it did: a chat quiet for a while then read every
/// message of every chat written since (200,000 rows and 105 ms for one new
/// message, against 0.2 ms through the per-chat index).
pub async fn visible_after_each(
    db: &impl GenericClient,
    wants: &[(ChatId, MessageId)],
    limit: i64,
) -> DbResult<Vec<Vec<Message>>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT w.want, m.* FROM {wants} AS w(chat_id, after_id, want)
             CROSS JOIN LATERAL (
                 SELECT {COLUMNS} FROM chat_messages
                 WHERE chat_id = w.chat_id AND (chat_id, id) > (w.chat_id, w.after_id)
                   AND NOT deleted
                   AND visibility <> 'model'
                 ORDER BY id LIMIT $3
             ) m",
            wants = super::batched::numbered_wants(&["$1::uuid[]", "$2::bigint[]"]),
        )
    });
    let mut read = vec![Vec::new(); wants.len()];
    if wants.is_empty() {
        return Ok(read);
    }
    let chats: Vec<ChatId> = wants.iter().map(|(chat, _)| *chat).collect();
    let afters: Vec<MessageId> = wants.iter().map(|(_, after)| *after).collect();
    let stmt = db.prepare_cached(&SQL).await?;
    for row in db.query(&stmt, &[&chats, &afters, &limit]).await? {
        if let Some(list) = super::batched::answer_of(&mut read, &row)? {
            list.push(Message::from_row(&row)?);
        }
    }
    // In id order without a sort of every row in the server.
    for list in &mut read {
        list.sort_unstable_by_key(|message| message.id);
    }
    Ok(read)
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
