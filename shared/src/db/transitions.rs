//! The transitions a client asks for (ARCHITECTURE.md §3): create a chat, send a
//! message (to an idle chat, or into the queue of a busy one), interrupt,
//! edit and re-run. Each is one statement, or one transaction with the chat
//! row locked so it is ordered against a turn ending and against other
//! requests. The worker's side is [`super::lifecycle`].
//!
//! These functions only change rows. Announcing what changed is the job of
//! the replica's chat operations, which call them.

use std::sync::LazyLock;

use postgres_types::Json;

use super::{
    DbResult, GenericClient,
    chats::{self, BecamePending, Chat, NewChat},
    messages::{self, Message},
    queued_messages::{self, QueuedMessage},
};
use crate::{
    ids::{ChatId, MessageId, ModelConfigId, UserId},
    parts::Part,
    status::{ChatStatus, MessageRole, MessageVisibility},
};

/// What [`create`] made (or found, for a replayed idempotency key).
#[derive(Debug, Clone)]
pub struct Created {
    /// The chat.
    pub chat: Chat,
    /// Its first message, when one was given (and this was not a replay).
    pub first_message: Option<Message>,
    /// True when the idempotency key was used before: `chat` is the original.
    pub replayed: bool,
}

static CREATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH chat AS (
             INSERT INTO chats (id, owner_id, parent_chat_id, root_chat_id, title, status,
                 model_config_id, system_prompt, labels, idempotency_key, mcp_servers, client_tools,
                 trace_parent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $13, $14)
             ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING {chat_columns}
         ), first_message AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, created_by)
             SELECT id, 'user', 'both', $11, owner_id FROM chat WHERE $11::jsonb IS NOT NULL
             RETURNING id, created_at
         )
         SELECT c.*, m.id AS message_id, m.created_at AS message_created_at
         FROM chat c LEFT JOIN first_message m ON true",
        chat_columns = chats::COLUMNS,
    )
});

static BY_IDEMPOTENCY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM chats WHERE owner_id = $1 AND idempotency_key = $2",
        chats::COLUMNS
    )
});

/// Creates a chat, with its first message when `first` is given (then the
/// chat is `pending`), in one statement. With an idempotency key used before
/// by the same owner, returns that chat instead.
pub async fn create(
    db: &impl GenericClient,
    chat: &NewChat<'_>,
    first: Option<&[Part]>,
    idempotency_key: Option<&str>,
) -> DbResult<Created> {
    let status = if first.is_some() {
        ChatStatus::Pending
    } else {
        chat.status
    };
    let stmt = db.prepare_cached(&CREATE).await?;
    let content = first.map(Json);
    let row = db
        .query_opt(
            &stmt,
            &[
                &chat.id,
                &chat.owner_id,
                &chat.parent_chat_id,
                &chat.root_chat_id,
                &chat.title,
                &status,
                &chat.model_config_id,
                &chat.system_prompt,
                &Json(chat.labels),
                &idempotency_key,
                &content,
                &chat.tools.mcp_servers,
                &Json(chat.tools.client_tools),
                &chat.trace_parent,
            ],
        )
        .await?;
    if let Some(row) = row {
        let created = Chat::from_row(&row)?;
        let first_message = match (row.try_get::<_, Option<MessageId>>("message_id")?, first) {
            (Some(id), Some(content)) => Some(Message {
                id,
                chat_id: created.id,
                role: MessageRole::User,
                visibility: MessageVisibility::Both,
                content: content.to_vec(),
                created_by: Some(created.owner_id),
                model_config_id: None,
                generation: None,
                step: None,
                usage: Default::default(),
                cost_micros: None,
                runtime_ms: None,
                compacted: false,
                deleted: false,
                idempotency_key: None,
                created_at: row.try_get("message_created_at")?,
            }),
            _ => None,
        };
        return Ok(Created {
            chat: created,
            first_message,
            replayed: false,
        });
    }
    // The key was used before: the original chat.
    let stmt = db.prepare_cached(&BY_IDEMPOTENCY_KEY).await?;
    let row = db
        .query_one(&stmt, &[&chat.owner_id, &idempotency_key])
        .await?;
    Ok(Created {
        chat: Chat::from_row(&row)?,
        first_message: None,
        replayed: true,
    })
}

/// The chat `owner` created with idempotency key `key`, if any (a create
/// refused before its statement still answers a replay with the original).
pub async fn created_with_key(
    db: &impl GenericClient,
    owner: UserId,
    key: &str,
) -> DbResult<Option<Chat>> {
    let stmt = db.prepare_cached(&BY_IDEMPOTENCY_KEY).await?;
    db.query_opt(&stmt, &[&owner, &key])
        .await?
        .as_ref()
        .map(Chat::from_row)
        .transpose()
}

/// Stores a chat without a first message, in `chat.status`: [`create`]
/// without one. A chat is never inserted as `running` (only a claim does that).
pub async fn insert(db: &impl GenericClient, chat: &NewChat<'_>) -> DbResult<Chat> {
    Ok(create(db, chat, None, None).await?.chat)
}

/// A user message to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Its parts.
    pub content: &'a [Part],
    /// The sender.
    pub created_by: Option<UserId>,
    /// The client's idempotency key, if it sent one.
    pub idempotency_key: Option<&'a str>,
    /// The sending request's trace context: stored with the chat when this
    /// send makes it pending, so the run links to the request.
    pub trace_parent: Option<&'a str>,
}

static SEND_TO_IDLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH chat AS (
             UPDATE chats SET status = 'pending', last_error = NULL, updated_at = now(),
                 trace_parent = $6
             WHERE id = $1 AND status IN ('waiting', 'error') AND NOT archived
               AND ($5::uuid IS NULL OR owner_id = $5)
               AND ($4::text IS NULL OR (
                   NOT EXISTS (SELECT 1 FROM chat_messages
                               WHERE chat_id = $1 AND idempotency_key = $4)
                   AND NOT EXISTS (SELECT 1 FROM chat_queued_messages
                                   WHERE chat_id = $1 AND idempotency_key = $4)))
             RETURNING id, owner_id, generation
         ), inserted AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, created_by, idempotency_key)
             SELECT id, 'user', 'both', $2, $3, $4 FROM chat
             RETURNING {message_columns}
         )
         SELECT inserted.*, chat.owner_id AS chat_owner_id, chat.generation AS chat_generation
         FROM inserted, chat",
        message_columns = messages::COLUMNS,
    )
});

/// A send to an idle chat, in one statement (ARCHITECTURE.md §3): inserts the user
/// message and makes the chat `pending`, but only if the chat is `waiting`
/// or `error`, not archived, (when `only_owner` is given) owned by that
/// user, and (when the message has an idempotency key) the key is new to
/// the chat. `None` otherwise: busy, archived, someone else's, gone, or a
/// replay, which [`send_locked`] answers.
///
/// A key cannot slip past the check: a send that used it first made the
/// chat `pending` in the same statement, so a concurrent one with the same
/// key waits for the chat row's lock and then finds the chat busy.
pub async fn send_to_idle(
    db: &impl GenericClient,
    chat_id: ChatId,
    message: &Outgoing<'_>,
    only_owner: Option<UserId>,
) -> DbResult<Option<(Message, BecamePending)>> {
    send_to_idle_with(db, chat_id, &Json(message.content), message, only_owner).await
}

/// [`send_to_idle`] with the content as a parameter of its own (`Json`
/// of the parts), so [`super::sends`] passes what it serialized once.
pub(super) async fn send_to_idle_with(
    db: &impl GenericClient,
    chat_id: ChatId,
    content: &(dyn postgres_types::ToSql + Sync),
    message: &Outgoing<'_>,
    only_owner: Option<UserId>,
) -> DbResult<Option<(Message, BecamePending)>> {
    let stmt = db.prepare_cached(&SEND_TO_IDLE).await?;
    let Some(row) = db
        .query_opt(
            &stmt,
            &[
                &chat_id,
                content,
                &message.created_by,
                &message.idempotency_key,
                &only_owner,
                &message.trace_parent,
            ],
        )
        .await?
    else {
        return Ok(None);
    };
    sent_of(&row).map(Some)
}

/// The message a send to an idle chat inserted, and the chat it made
/// pending, from its statement's row.
pub(super) fn sent_of(row: &tokio_postgres::Row) -> DbResult<(Message, BecamePending)> {
    let message = Message::from_row(row)?;
    let pending = BecamePending {
        chat_id: message.chat_id,
        owner_id: row.try_get("chat_owner_id")?,
        generation: row.try_get("chat_generation")?,
    };
    Ok((message, pending))
}

/// How [`send_locked`] treats the chat.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendRules<'a> {
    /// Only this user's chat (else it is [`Sent::Missing`]); `None`: any.
    pub only_owner: Option<UserId>,
    /// Queue the message when the chat is busy (else [`Sent::Busy`]).
    pub queue_if_busy: bool,
    /// Switch the chat to this model first (the caller checked it is usable).
    pub model: Option<ModelConfigId>,
    /// Replace the tools the chat's client runs first.
    pub client_tools: Option<&'a [crate::tools::ClientTool]>,
}

/// What [`send_locked`] did.
#[derive(Debug, Clone)]
pub enum Sent {
    /// The chat was idle: the message is committed and the chat pending.
    Committed(Box<Message>, BecamePending),
    /// The chat was busy: the message is queued.
    Queued(QueuedMessage),
    /// The idempotency key was used before for this message.
    ReplayedMessage(Box<Message>),
    /// The idempotency key was used before for this queued message.
    ReplayedQueued(QueuedMessage),
    /// The chat is busy and queueing was not wanted.
    Busy,
    /// The queue is full.
    QueueFull,
    /// The chat is archived.
    Archived,
    /// No such chat (or not `only_owner`'s).
    Missing,
}

/// A send in one transaction with the chat row locked (ARCHITECTURE.md §3): replays
/// an idempotency key used before (as a message or a queued message),
/// switches the model if asked, commits the message when the chat is idle,
/// otherwise queues it (when `rules.queue_if_busy`). The lock orders it
/// against a turn ending and against other sends, so a key never yields two
/// messages and a message is never queued behind a chat that just went idle.
pub async fn send_locked(
    db: &mut deadpool_postgres::Object,
    chat_id: ChatId,
    message: &Outgoing<'_>,
    rules: SendRules<'_>,
) -> DbResult<Sent> {
    let tx = db.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT status, archived, owner_id FROM chats WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&lock, &[&chat_id]).await? else {
        return Ok(Sent::Missing);
    };
    let status: ChatStatus = row.try_get("status")?;
    let owner: UserId = row.try_get("owner_id")?;
    if rules.only_owner.is_some_and(|caller| caller != owner) {
        return Ok(Sent::Missing);
    }
    if let Some(key) = message.idempotency_key {
        if let Some(message) = messages::find_by_idempotency_key(&tx, chat_id, key).await? {
            return Ok(Sent::ReplayedMessage(Box::new(message)));
        }
        if let Some(queued) = queued_messages::find_by_idempotency_key(&tx, chat_id, key).await? {
            return Ok(Sent::ReplayedQueued(queued));
        }
    }
    if row.try_get::<_, bool>("archived")? {
        return Ok(Sent::Archived);
    }
    if let Some(model) = rules.model {
        chats::set_model(&tx, chat_id, model).await?;
    }
    if let Some(tools) = rules.client_tools {
        chats::set_client_tools(&tx, chat_id, tools).await?;
    }
    let sent = if !status.is_busy() {
        match send_to_idle(&tx, chat_id, message, None).await? {
            Some((message, pending)) => Sent::Committed(Box::new(message), pending),
            None => return Ok(Sent::Missing),
        }
    } else if !rules.queue_if_busy {
        return Ok(Sent::Busy);
    } else {
        match queued_messages::push(
            &tx,
            chat_id,
            message.content,
            message.created_by,
            message.idempotency_key,
        )
        .await?
        {
            Some(queued) => Sent::Queued(queued),
            None => return Ok(Sent::QueueFull),
        }
    };
    tx.commit().await?;
    Ok(sent)
}

/// What an interrupt request did.
#[derive(Debug, Clone, PartialEq)]
pub enum Interrupted {
    /// The chat runs: the flag is set; its worker stops the turn.
    Running {
        /// The run to interrupt.
        generation: crate::ids::Generation,
    },
    /// It was pending (no replica had started it): it is `waiting` now.
    WasPending {
        /// Webhook deliveries the stop queued (it ends the turn the chat
        /// was pending for: `turn.completed`, invariant 17).
        webhooks_queued: i64,
    },
    /// It was pending with queued messages: the next one replaced the
    /// interrupted message and the chat stays `pending`.
    PendingWithQueue(Box<Message>),
    /// It waited on something outside itself (`requires_action`,
    /// `waiting_on_agents`): its open calls got error results (`closed`),
    /// and it is `waiting`, or `pending` with the next queued message
    /// (`next`).
    WasWaiting {
        /// The error results of the calls it waited for.
        closed: Vec<Message>,
        /// The queued message that runs next, if any.
        next: Option<Box<Message>>,
    },
    /// It was idle: nothing to do.
    Idle,
}

static LOCK_CHAT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM chats WHERE id = $1 FOR UPDATE",
        chats::COLUMNS
    )
});

static POP_INTO_MESSAGES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH next AS (
             SELECT id FROM chat_queued_messages WHERE chat_id = $1
             ORDER BY priority DESC, id LIMIT 1
         ), popped AS (
             DELETE FROM chat_queued_messages q USING next WHERE q.id = next.id
             RETURNING q.chat_id, q.content, q.created_by, q.idempotency_key
         )
         INSERT INTO chat_messages (chat_id, role, visibility, content, created_by, idempotency_key)
         SELECT chat_id, 'user', 'both', content, created_by, idempotency_key FROM popped
         RETURNING {}",
        messages::COLUMNS
    )
});

/// A pending chat stopped before it started: `waiting`, and the turn's end
/// in the webhook outbox in the same statement (no message was written).
/// Run with the chat row locked.
static STOP_PENDING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH released AS (
             UPDATE chats SET status = 'waiting', updated_at = now() WHERE id = $1
             RETURNING id AS chat_id, status AS chat_status, owner_id AS chat_owner_id,
                       generation AS chat_generation, title AS chat_title, updated_at
         ), inserted AS (
             SELECT * FROM chat_messages WHERE false
         ), {outbox}
         SELECT r.updated_at, (SELECT count(*) FROM webhook_outbox) AS webhooks_queued
         FROM released r",
        outbox = super::webhook_deliveries::OUTBOX_CTE,
    )
});

/// Requests an interrupt (ARCHITECTURE.md §3): on a running chat, sets
/// `interrupt_requested`; on a pending one, stops it before it starts (and
/// runs the next queued message instead, if any). One transaction, with the
/// chat row locked, so it cannot race a claim. Returns the chat after it;
/// `None` when the chat is gone.
pub async fn request_interrupt(
    db: &mut deadpool_postgres::Object,
    id: ChatId,
) -> DbResult<Option<(Interrupted, Chat)>> {
    let tx = db.transaction().await?;
    let lock = tx.prepare_cached(&LOCK_CHAT).await?;
    let Some(row) = tx.query_opt(&lock, &[&id]).await? else {
        return Ok(None);
    };
    let mut chat = Chat::from_row(&row)?;
    let outcome = match chat.status {
        ChatStatus::Running => {
            let set = tx
                .prepare_cached("UPDATE chats SET interrupt_requested = true WHERE id = $1")
                .await?;
            tx.execute(&set, &[&id]).await?;
            chat.interrupt_requested = true;
            Interrupted::Running {
                generation: chat.generation,
            }
        }
        ChatStatus::Pending => {
            let pop = tx.prepare_cached(&POP_INTO_MESSAGES).await?;
            match tx.query_opt(&pop, &[&id]).await? {
                Some(row) => Interrupted::PendingWithQueue(Box::new(Message::from_row(&row)?)),
                None => {
                    let idle = tx.prepare_cached(&STOP_PENDING).await?;
                    let row = tx.query_one(&idle, &[&id]).await?;
                    chat.updated_at = row.try_get("updated_at")?;
                    chat.status = ChatStatus::Waiting;
                    Interrupted::WasPending {
                        webhooks_queued: row.try_get("webhooks_queued")?,
                    }
                }
            }
        }
        ChatStatus::RequiresAction | ChatStatus::WaitingOnAgents => {
            let closed =
                super::tool_calls::close_open(&tx, id, "interrupted before a result came").await?;
            let pop = tx.prepare_cached(&POP_INTO_MESSAGES).await?;
            let next = match tx.query_opt(&pop, &[&id]).await? {
                Some(row) => Some(Box::new(Message::from_row(&row)?)),
                None => None,
            };
            chat.status = if next.is_some() {
                ChatStatus::Pending
            } else {
                ChatStatus::Waiting
            };
            let moved = tx
                .prepare_cached(
                    "UPDATE chats SET status = $2, updated_at = now() WHERE id = $1
                     RETURNING updated_at",
                )
                .await?;
            chat.updated_at = tx
                .query_one(&moved, &[&id, &chat.status])
                .await?
                .try_get(0)?;
            Interrupted::WasWaiting { closed, next }
        }
        ChatStatus::Waiting | ChatStatus::Error => Interrupted::Idle,
    };
    tx.commit().await?;
    Ok(Some((outcome, chat)))
}

/// Why an edit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditRefused {
    /// The chat or the message is not there (or the message was deleted).
    NotFound,
    /// Only user messages can be edited.
    NotUserMessage,
}

/// What an edit did.
#[derive(Debug, Clone)]
pub struct Edited {
    /// The replacement message.
    pub message: Message,
    /// The chat after it (pending, generation bumped).
    pub chat: Chat,
    /// The transition to announce.
    pub pending: BecamePending,
}

static RERUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE chats SET status = 'pending', worker_id = NULL, generation = generation + 1,
             interrupt_requested = false, last_error = NULL, started_at = NULL, updated_at = now(),
             trace_parent = $2
         WHERE id = $1 RETURNING {}",
        chats::COLUMNS
    )
});

/// Edit and re-run (ARCHITECTURE.md §3): soft-deletes the user message `message_id`
/// and everything after it, inserts the replacement, clears the queue, and
/// makes the chat `pending` with a new generation (fencing out a worker
/// still running the old turn), keeping the editing request's
/// `trace_parent` for the run. One transaction, the chat row locked.
pub async fn edit_and_rerun(
    db: &mut deadpool_postgres::Object,
    chat_id: ChatId,
    message_id: MessageId,
    content: &[Part],
    created_by: UserId,
    trace_parent: Option<&str>,
) -> DbResult<Result<Edited, EditRefused>> {
    let tx = db.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT id FROM chats WHERE id = $1 FOR UPDATE")
        .await?;
    if tx.query_opt(&lock, &[&chat_id]).await?.is_none() {
        return Ok(Err(EditRefused::NotFound));
    }
    let Some(original) = messages::get(&tx, chat_id, message_id).await? else {
        return Ok(Err(EditRefused::NotFound));
    };
    if original.deleted {
        return Ok(Err(EditRefused::NotFound));
    }
    if original.role != MessageRole::User {
        return Ok(Err(EditRefused::NotUserMessage));
    }
    let hide = tx
        .prepare_cached("UPDATE chat_messages SET deleted = true WHERE chat_id = $1 AND id >= $2 AND NOT deleted")
        .await?;
    tx.execute(&hide, &[&chat_id, &message_id]).await?;
    let message = messages::insert(
        &tx,
        chat_id,
        MessageRole::User,
        &messages::NewMessage {
            content,
            created_by: Some(created_by),
            ..Default::default()
        },
    )
    .await?;
    let clear = tx
        .prepare_cached("DELETE FROM chat_queued_messages WHERE chat_id = $1")
        .await?;
    tx.execute(&clear, &[&chat_id]).await?;
    let rerun = tx.prepare_cached(&RERUN).await?;
    let chat = Chat::from_row(&tx.query_one(&rerun, &[&chat_id, &trace_parent]).await?)?;
    tx.commit().await?;
    let pending = BecamePending {
        chat_id,
        owner_id: chat.owner_id,
        generation: chat.generation,
    };
    Ok(Ok(Edited {
        message,
        chat,
        pending,
    }))
}

/// A `file` part that does not name a file of the message's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRefused {
    /// The part's position in the message.
    pub index: usize,
    /// The `file_id` it gave.
    pub file_id: String,
}

/// Checks that every `file` part of a user message names a file `owner`
/// uploaded (ARCHITECTURE.md §17): a message may only carry its owner's files. The
/// parts come back completed from the stored files: the canonical id, the
/// sniffed media type (whatever the client wrote), and the stored name
/// when the part gave none. No statement when there is no `file` part.
pub async fn own_files(
    db: &impl GenericClient,
    owner: UserId,
    parts: &[Part],
) -> DbResult<Result<Vec<Part>, FileRefused>> {
    let mut ids = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        if let Part::File { file_id, .. } = part {
            match file_id.trim().parse::<crate::ids::FileId>() {
                Ok(id) => ids.push(id),
                Err(_) => {
                    return Ok(Err(FileRefused {
                        index,
                        file_id: file_id.clone(),
                    }));
                }
            }
        }
    }
    if ids.is_empty() {
        return Ok(Ok(parts.to_vec()));
    }
    let found = super::files::owned(db, owner, &ids).await?;
    let mut checked = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let Part::File { file_id, name, .. } = part else {
            checked.push(part.clone());
            continue;
        };
        let stored = file_id
            .trim()
            .parse::<crate::ids::FileId>()
            .ok()
            .and_then(|id| found.iter().find(|file| file.id == id));
        let Some(stored) = stored else {
            return Ok(Err(FileRefused {
                index,
                file_id: file_id.clone(),
            }));
        };
        checked.push(Part::File {
            file_id: stored.id.to_string(),
            media_type: stored.media_type.clone(),
            name: name.clone().or_else(|| Some(stored.name.clone())),
        });
    }
    Ok(Ok(checked))
}
