//! Subagents (ARCHITECTURE.md §17): a child is an ordinary chat with
//! `parent_chat_id`/`root_chat_id`, owned by its parent's owner, one level
//! deep. Spawning one is a write of the parent's run, so it is fenced on
//! the run like every other ([`spawn`]); the waits are in
//! [`super::tool_calls`].

use postgres_types::Json;
use tokio_postgres::Row;

use super::{
    DbResult, GenericClient,
    chats::{Chat, NewChat},
    lifecycle::Fence,
    messages::Message,
    transitions,
};
use crate::{
    ids::{ChatId, UserId},
    parts::Part,
    status::ChatStatus,
};

/// How many subagents a chat and a user may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimits {
    /// Children a chat may spawn in its life.
    pub children_per_chat: i64,
    /// Children of one user that may be busy (not `waiting`/`error`, not
    /// closed) at once, across all their chats.
    pub busy_children_per_user: i64,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            children_per_chat: 16,
            busy_children_per_user: 32,
        }
    }
}

/// What [`spawn`] did.
#[derive(Debug, Clone)]
pub enum Spawn {
    /// The child exists and is `pending` with its first message.
    Created {
        /// The child.
        chat: Box<Chat>,
        /// Its first message (the prompt).
        first: Box<Message>,
    },
    /// The parent is itself a subagent (one level deep).
    Nested,
    /// The parent spawned `limit` children already.
    TooManyChildren {
        /// The limit.
        limit: i64,
    },
    /// The owner has `limit` busy children already.
    TooManyBusy {
        /// The limit.
        limit: i64,
    },
    /// The run no longer owns the parent.
    OwnershipLost,
}

/// Creates a subagent of the chat `fence` runs, with `child` (its parent,
/// root and owner set here) and `prompt` as its first message, in one
/// transaction fenced on the parent's run. The owner's row is locked, so
/// concurrent spawns of one user are counted one after another and the
/// limits hold exactly.
pub async fn spawn(
    db: &mut deadpool_postgres::Object,
    fence: &Fence,
    child: NewChat<'_>,
    prompt: &[Part],
    limits: AgentLimits,
) -> DbResult<Spawn> {
    let tx = db.transaction().await?;
    // Locks first: the parent's row (a recovery cannot take it meanwhile)
    // and its owner's (spawns of one user queue here). The counts below are
    // a later statement, so they see every spawn that went before.
    let parent = tx
        .prepare_cached(
            "SELECT c.owner_id, c.parent_chat_id
             FROM chats c JOIN users u ON u.id = c.owner_id
             WHERE c.id = $1 AND c.worker_id = $2 AND c.generation = $3 AND c.status = 'running'
             FOR SHARE OF c FOR UPDATE OF u",
        )
        .await?;
    let Some(row) = tx
        .query_opt(
            &parent,
            &[&fence.chat_id, &fence.worker_id, &fence.generation],
        )
        .await?
    else {
        return Ok(Spawn::OwnershipLost);
    };
    let owner: UserId = row.try_get("owner_id")?;
    if row
        .try_get::<_, Option<ChatId>>("parent_chat_id")?
        .is_some()
    {
        return Ok(Spawn::Nested);
    }
    let counts = tx
        .prepare_cached(
            "SELECT (SELECT count(*) FROM chats WHERE parent_chat_id = $1) AS children,
                    (SELECT count(*) FROM chats
                     WHERE owner_id = $2 AND parent_chat_id IS NOT NULL AND NOT archived
                       AND status NOT IN ('waiting', 'error')) AS busy",
        )
        .await?;
    let counts = tx.query_one(&counts, &[&fence.chat_id, &owner]).await?;
    if counts.try_get::<_, i64>("children")? >= limits.children_per_chat {
        return Ok(Spawn::TooManyChildren {
            limit: limits.children_per_chat,
        });
    }
    if counts.try_get::<_, i64>("busy")? >= limits.busy_children_per_user {
        return Ok(Spawn::TooManyBusy {
            limit: limits.busy_children_per_user,
        });
    }
    let child = NewChat {
        owner_id: owner,
        parent_chat_id: Some(fence.chat_id),
        root_chat_id: Some(fence.chat_id),
        ..child
    };
    let created = transitions::create(&tx, &child, Some(prompt), None).await?;
    tx.commit().await?;
    let Some(first) = created.first_message else {
        // `create` with a first message and no key always inserts it.
        return Ok(Spawn::OwnershipLost);
    };
    Ok(Spawn::Created {
        chat: Box::new(created.chat),
        first: Box::new(first),
    })
}

/// A subagent as its parent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// The child.
    pub id: ChatId,
    /// Its title.
    pub title: String,
    /// Its status (`waiting`/`error`: finished).
    pub status: ChatStatus,
    /// Closed (`close_agent`): it runs no more.
    pub archived: bool,
    /// Why its last turn failed.
    pub last_error: Option<String>,
    /// The text of its last reply that has text, if any.
    pub reply: Option<String>,
}

impl Child {
    fn from_row(row: &Row) -> DbResult<Self> {
        let reply = row
            .try_get::<_, Option<Json<Vec<Part>>>>("reply")?
            .map(|Json(parts)| {
                parts
                    .iter()
                    .filter_map(|part| match part {
                        Part::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("")
            });
        Ok(Self {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            status: row.try_get("status")?,
            archived: row.try_get("archived")?,
            last_error: row.try_get("last_error")?,
            reply,
        })
    }
}

/// The children of `parent`, oldest first, with their last replies.
pub async fn children(db: &impl GenericClient, parent: ChatId) -> DbResult<Vec<Child>> {
    let stmt = db
        .prepare_cached(
            "SELECT c.id, c.title, c.status, c.archived, c.last_error,
                    (SELECT m.content FROM chat_messages m
                     WHERE m.chat_id = c.id AND m.role = 'assistant' AND NOT m.deleted
                       AND jsonb_path_exists(m.content, '$[*] ? (@.type == \"text\")')
                     ORDER BY m.id DESC LIMIT 1) AS reply
             FROM chats c WHERE c.parent_chat_id = $1 ORDER BY c.id",
        )
        .await?;
    db.query(&stmt, &[&parent])
        .await?
        .iter()
        .map(Child::from_row)
        .collect()
}

/// The children of `parent` that are busy (not `waiting`/`error`).
pub async fn busy_children(db: &impl GenericClient, parent: ChatId) -> DbResult<Vec<ChatId>> {
    let stmt = db
        .prepare_cached(
            "SELECT id FROM chats
             WHERE parent_chat_id = $1 AND status NOT IN ('waiting', 'error') ORDER BY id",
        )
        .await?;
    db.query(&stmt, &[&parent])
        .await?
        .iter()
        .map(|row| Ok(row.try_get("id")?))
        .collect()
}
