//! `chats`: one row per conversation, with its lifecycle state and fencing token.

use chrono::{DateTime, Utc};
use std::sync::LazyLock;

use postgres_types::Json;
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::{
    ids::{ChatId, Generation, ModelConfigId, ReplicaId, UserId},
    status::ChatStatus,
    tools::ClientTool,
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
    /// The stable code of that failure (`spend_limit_exceeded`, …), when
    /// it has one.
    pub last_error_code: Option<String>,
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
    /// The MCP servers it opted into, by name.
    pub mcp_servers: Vec<String>,
    /// The tools its client runs.
    pub client_tools: Vec<ClientTool>,
    /// The W3C `traceparent` of the request that last made it pending (the
    /// run links its span to it); `None` when tracing was off.
    pub trace_parent: Option<String>,
    /// Retries of the model call of the step in progress (diagnosis).
    pub step_retries: i32,
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
            last_error_code: row.try_get("last_error_code")?,
            worker_id: row.try_get("worker_id")?,
            generation: row.try_get("generation")?,
            interrupt_requested: row.try_get("interrupt_requested")?,
            started_at: row.try_get("started_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            mcp_servers: row.try_get("mcp_servers")?,
            client_tools: row.try_get::<_, Json<Vec<ClientTool>>>("client_tools")?.0,
            trace_parent: row.try_get("trace_parent")?,
            step_retries: row.try_get("step_retries")?,
        })
    }
}

/// Every column of `chats`, for `SELECT`/`RETURNING` lists.
pub const COLUMNS: &str =
    "id, owner_id, parent_chat_id, root_chat_id, title, status, model_config_id,
    system_prompt, labels, archived, last_error, last_error_code, worker_id, generation,
    interrupt_requested, started_at, created_at, updated_at, mcp_servers, client_tools,
    trace_parent, step_retries";

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
    /// The creating request's trace context (a chat created with a first
    /// message is pending at once: its run links to it).
    pub trace_parent: Option<&'a str>,
    /// The MCP servers it opts into, and the tools its client runs.
    pub tools: ChatTools<'a>,
}

/// The tools a chat has beyond the built-in ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatTools<'a> {
    /// MCP servers, by name.
    pub mcp_servers: &'a [String],
    /// Tools its client runs.
    pub client_tools: &'a [ClientTool],
}

static GET: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM chats WHERE id = $1"));

/// One chat.
pub async fn get(db: &impl GenericClient, id: ChatId) -> DbResult<Option<Chat>> {
    let stmt = db.prepare_cached(&GET).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(Chat::from_row)
        .transpose()
}

/// A chat that just became `pending` (a send, an edit, recovery, a
/// hand-back). Whoever causes the transition must announce it (a wake-up
/// for the acquirers, and the status), hence `must_use`: the replica's chat
/// operations do.
#[must_use = "every transition to pending must publish a wake"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BecamePending {
    /// The chat.
    pub chat_id: ChatId,
    /// Its owner (for the owner's chat-list event).
    pub owner_id: UserId,
    /// Its generation after the transition.
    pub generation: Generation,
}

impl BecamePending {
    pub(crate) fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            chat_id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            generation: row.try_get("generation")?,
        })
    }
}

/// Number of pending, unarchived chats (the `chatd_pending_chats` gauge).
pub async fn count_pending(db: &impl GenericClient) -> DbResult<i64> {
    let stmt = db
        .prepare_cached("SELECT count(*) FROM chats WHERE status = 'pending' AND NOT archived")
        .await?;
    Ok(db.query_one(&stmt, &[]).await?.try_get(0)?)
}

/// A chat with the length of its queue (what the API shows).
pub type ChatWithQueue = (Chat, i64);

fn with_queue(row: &Row) -> DbResult<ChatWithQueue> {
    Ok((Chat::from_row(row)?, row.try_get("queued_count")?))
}

/// The columns of a chat and the length of its queue (`queued_count`).
fn with_queue_columns() -> String {
    format!(
        "{COLUMNS}, (SELECT count(*) FROM chat_queued_messages q WHERE q.chat_id = chats.id) AS queued_count"
    )
}

static GET_WITH_QUEUE: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM chats WHERE id = $1", with_queue_columns()));

static LIST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM chats
         WHERE ($1::uuid IS NULL OR owner_id = $1) AND archived = $2 AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        with_queue_columns()
    )
});

/// One chat with its queue length.
pub async fn get_with_queue(
    db: &impl GenericClient,
    id: ChatId,
) -> DbResult<Option<ChatWithQueue>> {
    let stmt = db.prepare_cached(&GET_WITH_QUEUE).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(with_queue)
        .transpose()
}

/// A page of chats, newest first (by id: UUIDv7 sorts by creation), of one
/// owner or of everyone (`owner = None`, for admins), archived or not.
pub async fn list(
    db: &impl GenericClient,
    owner: Option<UserId>,
    archived: bool,
    before: Option<ChatId>,
    limit: i64,
) -> DbResult<Vec<ChatWithQueue>> {
    let stmt = db.prepare_cached(&LIST).await?;
    db.query(&stmt, &[&owner, &archived, &before, &limit])
        .await?
        .iter()
        .map(with_queue)
        .collect()
}

static UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE chats SET title = COALESCE($2, title), archived = COALESCE($3, archived),
             labels = COALESCE($4, labels), mcp_servers = COALESCE($5, mcp_servers),
             client_tools = COALESCE($6, client_tools), updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )
});

/// What [`update`] changes (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatUpdate<'a> {
    /// A new title.
    pub title: Option<&'a str>,
    /// Archive or restore.
    pub archived: Option<bool>,
    /// New labels.
    pub labels: Option<&'a serde_json::Value>,
    /// New MCP servers.
    pub mcp_servers: Option<&'a [String]>,
    /// New client tools.
    pub client_tools: Option<&'a [ClientTool]>,
}

/// Changes title, archived flag, labels or tools; `None` when the chat is gone.
pub async fn update(
    db: &impl GenericClient,
    id: ChatId,
    changes: &ChatUpdate<'_>,
) -> DbResult<Option<Chat>> {
    let stmt = db.prepare_cached(&UPDATE).await?;
    db.query_opt(
        &stmt,
        &[
            &id,
            &changes.title,
            &changes.archived,
            &changes.labels.map(Json),
            &changes.mcp_servers,
            &changes.client_tools.map(Json),
        ],
    )
    .await?
    .as_ref()
    .map(Chat::from_row)
    .transpose()
}

/// Replaces the tools its client runs (a send may declare them).
pub async fn set_client_tools(
    db: &impl GenericClient,
    id: ChatId,
    tools: &[ClientTool],
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("UPDATE chats SET client_tools = $2 WHERE id = $1")
        .await?;
    Ok(db.execute(&stmt, &[&id, &Json(tools)]).await? == 1)
}

/// Deletes a chat (its messages and queue go with it). A worker still
/// running it finds its fence gone and stops. `false` when it was not there.
pub async fn delete(db: &impl GenericClient, id: ChatId) -> DbResult<bool> {
    let stmt = db.prepare_cached("DELETE FROM chats WHERE id = $1").await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// Sets a generated title, unless the chat has a title already (one its
/// user gave, or one generated before): the condition is in the statement,
/// so a user's title wins even when it races the generator. The owner when
/// written; `None` when the chat had a title or is gone.
pub async fn set_generated_title(
    db: &impl GenericClient,
    id: ChatId,
    title: &str,
) -> DbResult<Option<UserId>> {
    let stmt = db
        .prepare_cached(
            "UPDATE chats SET title = $2 WHERE id = $1 AND title = '' RETURNING owner_id",
        )
        .await?;
    Ok(db
        .query_opt(&stmt, &[&id, &title])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?)
}

/// Switches the model a chat runs with (from its next turn on).
pub async fn set_model(
    db: &impl GenericClient,
    id: ChatId,
    model: ModelConfigId,
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("UPDATE chats SET model_config_id = $2 WHERE id = $1")
        .await?;
    Ok(db.execute(&stmt, &[&id, &model]).await? == 1)
}
