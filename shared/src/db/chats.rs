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

/// Stores a chat without a first message, in `chat.status`. A chat is
/// never inserted as `running` (only acquire does that).
pub async fn insert(db: &impl GenericClient, chat: &NewChat<'_>) -> DbResult<Chat> {
    Ok(create(db, chat, None, None).await?.chat)
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

/// What a worker holds while it runs a chat: every write it makes is
/// conditional on all three still matching the row (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The chat.
    pub chat_id: ChatId,
    /// The replica running it.
    pub worker_id: ReplicaId,
    /// The generation it acquired.
    pub generation: Generation,
}

/// A chat that just became `pending` (recovery, hand-back). Whoever causes
/// the transition must announce it with a wake, hence `must_use`.
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

/// A chat this replica just acquired.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row after the claim (status `running`, the new generation).
    pub chat: Chat,
    /// How long it had been pending.
    pub queue_wait_secs: f64,
}

/// Claims up to `limit` pending chats for `worker` in one statement, oldest
/// first, skipping rows other replicas are claiming (DESIGN §4).
pub async fn claim_pending(
    db: &impl GenericClient,
    worker: ReplicaId,
    limit: i64,
) -> DbResult<Vec<Claimed>> {
    let stmt = db
        .prepare_cached(
            "UPDATE chats c SET status = 'running', worker_id = $1, generation = c.generation + 1,
                    started_at = now(), updated_at = now(), interrupt_requested = false
             FROM (SELECT id, updated_at FROM chats WHERE status = 'pending' AND NOT archived
                   ORDER BY updated_at, id FOR UPDATE SKIP LOCKED LIMIT $2) p
             WHERE c.id = p.id
             RETURNING c.*, extract(epoch FROM now() - p.updated_at)::float8 AS queue_wait_secs",
        )
        .await?;
    db.query(&stmt, &[&worker, &limit])
        .await?
        .iter()
        .map(|row| {
            Ok(Claimed {
                chat: Chat::from_row(row)?,
                queue_wait_secs: row.try_get("queue_wait_secs")?,
            })
        })
        .collect()
}

/// A chat the database says a replica runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedRun {
    /// The chat.
    pub chat_id: ChatId,
    /// Its current generation.
    pub generation: Generation,
    /// Whether an interrupt was requested.
    pub interrupt_requested: bool,
}

/// What one heartbeat learned.
#[derive(Debug, Clone, Default)]
pub struct Beat {
    /// False when the replica's row is gone (it must re-register, and assume
    /// its chats were taken).
    pub lease_renewed: bool,
    /// Every chat the database says this replica runs.
    pub owned: Vec<OwnedRun>,
    /// Chats of dead replicas this beat put back to `pending`.
    pub recovered: Vec<BecamePending>,
}

/// One heartbeat in one statement: renews the lease (`now() + lease_ttl`,
/// database clock), reads what the database says this replica runs, and
/// requeues up to `recovery_limit` running chats of other replicas whose
/// lease expired or whose row is gone (`FOR UPDATE SKIP LOCKED`, so replicas
/// recovering at once do not contend). One statement keeps an idle replica's
/// cost at one statement per heartbeat, whatever it runs.
pub async fn beat(
    db: &impl GenericClient,
    replica: ReplicaId,
    lease_ttl: std::time::Duration,
    recovery_limit: i64,
) -> DbResult<Beat> {
    let stmt = db
        .prepare_cached(
            "WITH lease AS (
                 UPDATE replicas SET heartbeat_at = now(),
                        lease_expires_at = now() + make_interval(secs => $2)
                 WHERE id = $1 RETURNING id
             ), recovered AS (
                 UPDATE chats c SET status = 'pending', worker_id = NULL, generation = c.generation + 1,
                        started_at = NULL, updated_at = now()
                 FROM (SELECT s.id FROM chats s LEFT JOIN replicas r ON r.id = s.worker_id
                       WHERE s.status = 'running' AND s.worker_id <> $1
                         AND (r.id IS NULL OR r.lease_expires_at < now())
                       ORDER BY s.id LIMIT $3 FOR UPDATE OF s SKIP LOCKED) stale
                 WHERE c.id = stale.id
                 RETURNING c.id, c.owner_id, c.generation
             )
             SELECT 'lease' AS kind, NULL::uuid AS id, NULL::uuid AS owner_id, NULL::bigint AS generation,
                    false AS interrupt_requested FROM lease
             UNION ALL
             SELECT 'owned', id, owner_id, generation, interrupt_requested FROM chats
             WHERE worker_id = $1 AND status = 'running'
             UNION ALL
             SELECT 'recovered', id, owner_id, generation, false FROM recovered",
        )
        .await?;
    let rows = db
        .query(
            &stmt,
            &[&replica, &lease_ttl.as_secs_f64(), &recovery_limit],
        )
        .await?;
    let mut beat = Beat::default();
    for row in &rows {
        match row.try_get::<_, &str>("kind")? {
            "lease" => beat.lease_renewed = true,
            "owned" => beat.owned.push(OwnedRun {
                chat_id: row.try_get("id")?,
                generation: row.try_get("generation")?,
                interrupt_requested: row.try_get("interrupt_requested")?,
            }),
            _ => beat.recovered.push(BecamePending::from_row(row)?),
        }
    }
    Ok(beat)
}

/// Gives chats back to `pending` (generation + 1) that `worker` still runs
/// under the given generations: shutdown hand-back, orphans, phantom claims.
/// Rows that moved on (released, recovered, edited) are left alone.
pub async fn hand_back(
    db: &impl GenericClient,
    worker: ReplicaId,
    runs: &[(ChatId, Generation)],
) -> DbResult<Vec<BecamePending>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<ChatId> = runs.iter().map(|(id, _)| *id).collect();
    let generations: Vec<Generation> = runs.iter().map(|(_, generation)| *generation).collect();
    let stmt = db
        .prepare_cached(
            "UPDATE chats c SET status = 'pending', worker_id = NULL, generation = c.generation + 1,
                    started_at = NULL, updated_at = now()
             FROM unnest($2::uuid[], $3::bigint[]) AS h(id, generation)
             WHERE c.id = h.id AND c.generation = h.generation AND c.worker_id = $1 AND c.status = 'running'
             RETURNING c.id, c.owner_id, c.generation",
        )
        .await?;
    db.query(&stmt, &[&worker, &ids, &generations])
        .await?
        .iter()
        .map(BecamePending::from_row)
        .collect()
}

/// How a turn ended, for [`release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEnd {
    /// Finished (or interrupted): `waiting` unless a queued message continues.
    Done,
    /// Failed: `error` with this message unless a queued message continues.
    Failed(String),
}

/// The chat after [`release`].
#[derive(Debug, Clone)]
pub struct Released {
    /// `running` when a queued message was popped (the same worker continues
    /// under the same generation), else `waiting` or `error`.
    pub status: ChatStatus,
    /// The owner, for chat-list events.
    pub owner_id: UserId,
    /// The queued message, now a user message, when one was popped.
    pub next: Option<super::messages::Message>,
}

/// Ends a turn in one fenced statement (DESIGN §3): if a message is queued it
/// is popped and inserted as a user message and the chat stays `running`
/// under the same worker and generation; otherwise the chat becomes `waiting`
/// (or `error` with `last_error`). `interrupt_requested` is cleared either
/// way. `None` when the fence no longer matches (ownership lost).
pub async fn release(
    db: &impl GenericClient,
    fence: &Fence,
    end: &TurnEnd,
) -> DbResult<Option<Released>> {
    Ok(finish_turn(db, fence, &[], end)
        .await?
        .map(|(_, released)| released))
}

/// Persists a turn's last step and ends the turn, in one fenced statement:
/// [`super::messages::insert_step`] and [`release`] together, which saves a
/// round trip on every turn. The step's messages get lower ids than a popped
/// queued message (one `INSERT`, in order), so an interrupted reply is
/// always stored before the message that interrupted it.
pub async fn finish_turn(
    db: &impl GenericClient,
    fence: &Fence,
    step: &[super::messages::StepMessage],
    end: &TurnEnd,
) -> DbResult<Option<(Vec<super::messages::Message>, Released)>> {
    let (idle_status, error) = match end {
        TurnEnd::Done => (ChatStatus::Waiting, None),
        TurnEnd::Failed(message) => (ChatStatus::Error, Some(message.as_str())),
    };
    let sql = format!(
        "WITH owned AS (
             SELECT id FROM chats
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'
             FOR UPDATE
         ), next AS (
             SELECT q.id FROM chat_queued_messages q JOIN owned o ON q.chat_id = o.id
             ORDER BY q.priority DESC, q.id LIMIT 1
         ), popped AS (
             DELETE FROM chat_queued_messages q USING next WHERE q.id = next.id
             RETURNING q.content, q.created_by, q.idempotency_key
         ), new_rows AS (
             SELECT m.ord, m.role, m.content, NULL::uuid AS created_by, m.model_config_id,
                    $3::bigint AS generation, m.step, m.input_tokens, m.output_tokens,
                    m.reasoning_tokens, m.cache_read_tokens, m.cache_write_tokens, m.cost_micros,
                    m.runtime_ms, NULL::text AS idempotency_key
             FROM owned, ROWS FROM (jsonb_to_recordset($6::jsonb) AS (
                 role message_role, content jsonb, model_config_id uuid, step int,
                 input_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
                 cache_read_tokens bigint, cache_write_tokens bigint, cost_micros bigint, runtime_ms bigint
             )) WITH ORDINALITY AS m(role, content, model_config_id, step, input_tokens, output_tokens,
                 reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms, ord)
             UNION ALL
             SELECT 9223372036854775807, 'user', p.content, p.created_by, NULL, NULL, NULL, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL, p.idempotency_key
             FROM popped p
         ), inserted AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, created_by, model_config_id,
                 generation, step, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
                 cache_write_tokens, cost_micros, runtime_ms, idempotency_key)
             SELECT $1, role, 'both', content, created_by, model_config_id, generation, step,
                    input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens,
                    cost_micros, runtime_ms, idempotency_key
             FROM new_rows ORDER BY ord
             RETURNING {message_columns}
         ), released AS (
             UPDATE chats c SET
                 status = CASE WHEN EXISTS (SELECT 1 FROM popped) THEN 'running'::chat_status ELSE $4 END,
                 worker_id = CASE WHEN EXISTS (SELECT 1 FROM popped) THEN c.worker_id END,
                 started_at = CASE WHEN EXISTS (SELECT 1 FROM popped) THEN c.started_at END,
                 last_error = $5, interrupt_requested = false, updated_at = now()
             FROM owned WHERE c.id = owned.id
             RETURNING c.status AS chat_status, c.owner_id AS chat_owner_id
         )
         SELECT r.chat_status, r.chat_owner_id, i.* FROM released r LEFT JOIN inserted i ON true
         ORDER BY i.id",
        message_columns = super::messages::COLUMNS,
    );
    let stmt = db.prepare_cached(&sql).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &idle_status,
                &error,
                &Json(step),
            ],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut released = Released {
        status: first.try_get("chat_status")?,
        owner_id: first.try_get("chat_owner_id")?,
        next: None,
    };
    let mut committed = Vec::with_capacity(step.len());
    for row in &rows {
        if row
            .try_get::<_, Option<crate::ids::MessageId>>("id")?
            .is_none()
        {
            continue;
        }
        let message = super::messages::Message::from_row(row)?;
        if message.role == crate::status::MessageRole::User {
            released.next = Some(message);
        } else {
            committed.push(message);
        }
    }
    Ok(Some((committed, released)))
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

/// One chat with its queue length.
pub async fn get_with_queue(
    db: &impl GenericClient,
    id: ChatId,
) -> DbResult<Option<ChatWithQueue>> {
    let stmt = db
        .prepare_cached(
            "SELECT c.*, (SELECT count(*) FROM chat_queued_messages q WHERE q.chat_id = c.id) AS queued_count
             FROM chats c WHERE c.id = $1",
        )
        .await?;
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
    let stmt = db
        .prepare_cached(
            "SELECT c.*, (SELECT count(*) FROM chat_queued_messages q WHERE q.chat_id = c.id) AS queued_count
             FROM chats c
             WHERE ($1::uuid IS NULL OR c.owner_id = $1) AND c.archived = $2
               AND ($3::uuid IS NULL OR c.id < $3)
             ORDER BY c.id DESC LIMIT $4",
        )
        .await?;
    db.query(&stmt, &[&owner, &archived, &before, &limit])
        .await?
        .iter()
        .map(with_queue)
        .collect()
}

/// What [`create`] made (or found, for a replayed idempotency key).
#[derive(Debug, Clone)]
pub struct Created {
    /// The chat.
    pub chat: Chat,
    /// Its first message, when one was given (and this was not a replay).
    pub first_message: Option<super::messages::Message>,
    /// True when the idempotency key was used before: `chat` is the original.
    pub replayed: bool,
}

/// Creates a chat, with its first message when `first` is given (then the
/// chat is `pending`), in one statement. With an idempotency key used before
/// by the same owner, returns that chat instead.
pub async fn create(
    db: &impl GenericClient,
    chat: &NewChat<'_>,
    first: Option<&[crate::parts::Part]>,
    idempotency_key: Option<&str>,
) -> DbResult<Created> {
    let sql = format!(
        "WITH chat AS (
             INSERT INTO chats (id, owner_id, parent_chat_id, root_chat_id, title, status,
                 model_config_id, system_prompt, labels, idempotency_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING *
         ), first_message AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, created_by)
             SELECT id, 'user', 'both', $11, owner_id FROM chat WHERE $11::jsonb IS NOT NULL
             RETURNING {message_columns}
         )
         SELECT c.*, m.id AS message_id, m.created_at AS message_created_at
         FROM chat c LEFT JOIN first_message m ON true",
        message_columns = super::messages::COLUMNS,
    );
    let status = if first.is_some() {
        ChatStatus::Pending
    } else {
        chat.status
    };
    let stmt = db.prepare_cached(&sql).await?;
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
            ],
        )
        .await?;
    if let Some(row) = row {
        let created = Chat::from_row(&row)?;
        let first_message = match (
            row.try_get::<_, Option<crate::ids::MessageId>>("message_id")?,
            first,
        ) {
            (Some(id), Some(content)) => Some(super::messages::Message {
                id,
                chat_id: created.id,
                role: crate::status::MessageRole::User,
                visibility: crate::status::MessageVisibility::Both,
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
    let stmt = db
        .prepare_cached("SELECT * FROM chats WHERE owner_id = $1 AND idempotency_key = $2")
        .await?;
    let row = db
        .query_one(&stmt, &[&chat.owner_id, &idempotency_key])
        .await?;
    Ok(Created {
        chat: Chat::from_row(&row)?,
        first_message: None,
        replayed: true,
    })
}

/// Changes title, archived flag or labels; `None` when the chat is gone.
pub async fn update(
    db: &impl GenericClient,
    id: ChatId,
    title: Option<&str>,
    archived: Option<bool>,
    labels: Option<&serde_json::Value>,
) -> DbResult<Option<Chat>> {
    let stmt = db
        .prepare_cached(
            "UPDATE chats SET title = COALESCE($2, title), archived = COALESCE($3, archived),
                 labels = COALESCE($4, labels), updated_at = now()
             WHERE id = $1 RETURNING *",
        )
        .await?;
    db.query_opt(&stmt, &[&id, &title, &archived, &labels.map(Json)])
        .await?
        .as_ref()
        .map(Chat::from_row)
        .transpose()
}

/// Deletes a chat (its messages and queue go with it). A worker still
/// running it finds its fence gone and stops. `false` when it was not there.
pub async fn delete(db: &impl GenericClient, id: ChatId) -> DbResult<bool> {
    let stmt = db.prepare_cached("DELETE FROM chats WHERE id = $1").await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// What an interrupt request did.
#[derive(Debug, Clone, PartialEq)]
pub enum Interrupted {
    /// The chat runs: the flag is set; its worker stops the turn.
    Running {
        /// The run to interrupt.
        generation: Generation,
    },
    /// It was pending (no replica had started it): it is `waiting` now.
    WasPending,
    /// It was pending with queued messages: the next one replaced the
    /// interrupted message and the chat stays `pending`.
    PendingWithQueue(Box<super::messages::Message>),
    /// It was idle: nothing to do.
    Idle,
}

/// Requests an interrupt (DESIGN §3): on a running chat, sets
/// `interrupt_requested`; on a pending one, stops it before it starts (and
/// runs the next queued message instead, if any). One transaction, with the
/// chat row locked, so it cannot race an acquire. `None` when the chat is gone.
pub async fn request_interrupt(
    db: &mut deadpool_postgres::Object,
    id: ChatId,
) -> DbResult<Option<(Interrupted, Chat)>> {
    let tx = db.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT * FROM chats WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&lock, &[&id]).await? else {
        return Ok(None);
    };
    let chat = Chat::from_row(&row)?;
    let outcome = match chat.status {
        ChatStatus::Running => {
            let set = tx
                .prepare_cached("UPDATE chats SET interrupt_requested = true WHERE id = $1")
                .await?;
            tx.execute(&set, &[&id]).await?;
            Interrupted::Running {
                generation: chat.generation,
            }
        }
        ChatStatus::Pending => {
            let pop = tx
                .prepare_cached(&format!(
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
                    super::messages::COLUMNS
                ))
                .await?;
            match tx.query_opt(&pop, &[&id]).await? {
                Some(row) => Interrupted::PendingWithQueue(Box::new(
                    super::messages::Message::from_row(&row)?,
                )),
                None => {
                    let idle = tx
                        .prepare_cached(
                            "UPDATE chats SET status = 'waiting', updated_at = now() WHERE id = $1",
                        )
                        .await?;
                    tx.execute(&idle, &[&id]).await?;
                    Interrupted::WasPending
                }
            }
        }
        ChatStatus::Waiting | ChatStatus::Error => Interrupted::Idle,
    };
    let reread = tx
        .prepare_cached("SELECT * FROM chats WHERE id = $1")
        .await?;
    let chat = Chat::from_row(&tx.query_one(&reread, &[&id]).await?)?;
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
    pub message: super::messages::Message,
    /// The chat after it (pending, generation bumped).
    pub chat: Chat,
    /// The transition to announce.
    pub pending: BecamePending,
}

/// Edit and re-run (DESIGN §3): soft-deletes the user message `message_id`
/// and everything after it, inserts the replacement, clears the queue, and
/// makes the chat `pending` with a new generation (fencing out a worker
/// still running the old turn). One transaction, the chat row locked.
pub async fn edit_and_rerun(
    db: &mut deadpool_postgres::Object,
    chat_id: ChatId,
    message_id: crate::ids::MessageId,
    content: &[crate::parts::Part],
    created_by: UserId,
) -> DbResult<Result<Edited, EditRefused>> {
    let tx = db.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT id FROM chats WHERE id = $1 FOR UPDATE")
        .await?;
    if tx.query_opt(&lock, &[&chat_id]).await?.is_none() {
        return Ok(Err(EditRefused::NotFound));
    }
    let Some(original) = super::messages::get(&tx, chat_id, message_id).await? else {
        return Ok(Err(EditRefused::NotFound));
    };
    if original.deleted {
        return Ok(Err(EditRefused::NotFound));
    }
    if original.role != crate::status::MessageRole::User {
        return Ok(Err(EditRefused::NotUserMessage));
    }
    let hide = tx
        .prepare_cached("UPDATE chat_messages SET deleted = true WHERE chat_id = $1 AND id >= $2 AND NOT deleted")
        .await?;
    tx.execute(&hide, &[&chat_id, &message_id]).await?;
    let message = super::messages::insert(
        &tx,
        chat_id,
        crate::status::MessageRole::User,
        &super::messages::NewMessage {
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
    let rerun = tx
        .prepare_cached(
            "UPDATE chats SET status = 'pending', worker_id = NULL, generation = generation + 1,
                 interrupt_requested = false, last_error = NULL, started_at = NULL, updated_at = now()
             WHERE id = $1 RETURNING *",
        )
        .await?;
    let chat = Chat::from_row(&tx.query_one(&rerun, &[&chat_id]).await?)?;
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
