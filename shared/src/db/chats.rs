//! `chats`: one row per conversation, with its lifecycle state and fencing token.

use chrono::{DateTime, Utc};
use postgres_types::Json;
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::{
    ids::{ChatId, Generation, ModelConfigId, ReplicaId, UserId},
    status::ChatStatus,
};

/// A row of `chats`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    /// UUIDv7 id.
    pub id: ChatId,
    /// Its owner.
    pub owner_id: UserId,
    /// The chat that spawned this one (subagents).
    pub parent_chat_id: Option<ChatId>,
    /// The top of its spawn tree.
    pub root_chat_id: Option<ChatId>,
    /// Title ("" until set or generated).
    pub title: String,
    /// Lifecycle state.
    pub status: ChatStatus,
    /// The model it runs with (None: the default model at run time).
    pub model_config_id: Option<ModelConfigId>,
    /// The system prompt, if any.
    pub system_prompt: Option<String>,
    /// Free-form labels (a JSON object).
    pub labels: serde_json::Value,
    /// Archived chats are hidden from listings and never acquired.
    pub archived: bool,
    /// Why the last turn failed.
    pub last_error: Option<String>,
    /// The replica running it (only while `running`).
    pub worker_id: Option<ReplicaId>,
    /// The fencing token.
    pub generation: Generation,
    /// Set by an interrupt; the worker acts on it and clears it on release.
    pub interrupt_requested: bool,
    /// When the current run was acquired.
    pub started_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Chat {
    /// Maps a row holding every column of `chats`.
    pub fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            parent_chat_id: row.try_get("parent_chat_id")?,
            root_chat_id: row.try_get("root_chat_id")?,
            title: row.try_get("title")?,
            status: row.try_get("status")?,
            model_config_id: row.try_get("model_config_id")?,
            system_prompt: row.try_get("system_prompt")?,
            labels: row.try_get::<_, Json<serde_json::Value>>("labels")?.0,
            archived: row.try_get("archived")?,
            last_error: row.try_get("last_error")?,
            worker_id: row.try_get("worker_id")?,
            generation: row.try_get("generation")?,
            interrupt_requested: row.try_get("interrupt_requested")?,
            started_at: row.try_get("started_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Every column of `chats`, for `SELECT`/`RETURNING` lists.
pub const COLUMNS: &str =
    "id, owner_id, parent_chat_id, root_chat_id, title, status, model_config_id,
    system_prompt, labels, archived, last_error, worker_id, generation, interrupt_requested,
    started_at, created_at, updated_at";

/// What [`insert`] stores.
#[derive(Debug, Clone)]
pub struct NewChat<'a> {
    /// Id (UUIDv7).
    pub id: ChatId,
    /// Owner.
    pub owner_id: UserId,
    /// Parent chat.
    pub parent_chat_id: Option<ChatId>,
    /// Root chat.
    pub root_chat_id: Option<ChatId>,
    /// Title.
    pub title: &'a str,
    /// Initial status (`pending` when created with a first message).
    pub status: ChatStatus,
    /// Model.
    pub model_config_id: Option<ModelConfigId>,
    /// System prompt.
    pub system_prompt: Option<&'a str>,
    /// Labels (a JSON object).
    pub labels: &'a serde_json::Value,
}

/// Stores a chat. A chat is never inserted as `running` (only acquire does that).
pub async fn insert(db: &impl GenericClient, chat: &NewChat<'_>) -> DbResult<Chat> {
    let sql = format!(
        "INSERT INTO chats (id, owner_id, parent_chat_id, root_chat_id, title, status,
             model_config_id, system_prompt, labels)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &chat.id,
                &chat.owner_id,
                &chat.parent_chat_id,
                &chat.root_chat_id,
                &chat.title,
                &chat.status,
                &chat.model_config_id,
                &chat.system_prompt,
                &Json(chat.labels),
            ],
        )
        .await?;
    Chat::from_row(&row)
}

/// One chat.
pub async fn get(db: &impl GenericClient, id: ChatId) -> DbResult<Option<Chat>> {
    let sql = format!("SELECT {COLUMNS} FROM chats WHERE id = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(Chat::from_row)
        .transpose()
}
