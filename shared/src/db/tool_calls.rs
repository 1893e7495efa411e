//! `tool_calls`: the tool-call ledger (ARCHITECTURE.md §17). Every call a turn makes
//! is recorded with the assistant message that asks for it, before it runs
//! ([`record`]); it is finished by the statement that stores its result
//! (the fenced step statements of [`super::lifecycle`] close the rows their
//! tool messages answer). A call without a result after a crash is known to
//! have started, and whether it is safe to run again.
//!
//! The same rows are the waits of invariant 16: a call the client runs and
//! a wait for subagents are open rows with a deadline while the chat is
//! `requires_action` or `waiting_on_agents` ([`suspend`]). They end when
//! the client posts results ([`submit_client_results`]), when the subagents
//! finish ([`wake_parent`], and the heartbeat's sweep), when the deadline
//! passes (the heartbeat, [`super::lifecycle::beat`]), or on an interrupt
//! ([`close_open`]). No task waits: only rows do.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use postgres_types::Json;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Row;

use super::{
    DbResult, GenericClient,
    chats::BecamePending,
    lifecycle::{Fence, StepMessage, fenced_step_rows, insert_rows},
    messages::{self, Message},
};
use crate::{
    ids::{ChatId, Generation, MessageId, UserId},
    parts::Part,
    status::ChatStatus,
    stream::PendingToolCall,
    tools::RunsOn,
};

/// A call to record before it runs.
#[derive(Debug, Clone, Serialize)]
pub struct NewCall {
    /// The provider's call id.
    pub call_id: String,
    /// The tool's name as the model called it.
    pub tool: String,
    /// Its arguments.
    pub args: Value,
    /// Where it runs.
    pub runs_on: RunsOn,
    /// Whether running it twice is harmless.
    pub idempotent: bool,
    /// For a wait: the subagents it waits for.
    pub waits_on: Option<Vec<ChatId>>,
}

/// A row of the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The row's id (call order within a message).
    pub id: i64,
    /// The chat.
    pub chat_id: ChatId,
    /// The assistant message that made the call.
    pub message_id: MessageId,
    /// The provider's call id.
    pub call_id: String,
    /// The tool's name.
    pub tool: String,
    /// Its arguments.
    pub args: Value,
    /// Where it runs.
    pub runs_on: RunsOn,
    /// Whether running it twice is harmless.
    pub idempotent: bool,
    /// The run that recorded it.
    pub generation: Generation,
    /// The step of that run (its assistant message's).
    pub step: Option<i32>,
    /// When it was recorded, just before it ran.
    pub started_at: DateTime<Utc>,
    /// For a wait: when it ends without an answer.
    pub deadline: Option<DateTime<Utc>>,
    /// For a wait for subagents: the children.
    pub waits_on: Vec<ChatId>,
    /// When its result was stored (`None`: no result yet).
    pub finished_at: Option<DateTime<Utc>>,
    /// True when its deadline passed (by the database's clock).
    pub expired: bool,
}

const COLUMNS: &str = "t.id, t.chat_id, t.message_id, t.call_id, t.tool, t.args, t.runs_on,
    t.idempotent, t.generation, m.step, t.started_at, t.deadline, t.waits_on, t.finished_at,
    COALESCE(t.deadline <= now(), false) AS expired";

impl ToolCall {
    fn from_row(row: &Row) -> DbResult<Self> {
        let runs_on: &str = row.try_get("runs_on")?;
        Ok(Self {
            id: row.try_get("id")?,
            chat_id: row.try_get("chat_id")?,
            message_id: row.try_get("message_id")?,
            call_id: row.try_get("call_id")?,
            tool: row.try_get("tool")?,
            args: row.try_get::<_, Json<Value>>("args")?.0,
            // The column's CHECK allows only these.
            runs_on: RunsOn::parse(runs_on).unwrap_or(RunsOn::Replica),
            idempotent: row.try_get("idempotent")?,
            generation: row.try_get("generation")?,
            step: row.try_get("step")?,
            started_at: row.try_get("started_at")?,
            deadline: row.try_get("deadline")?,
            waits_on: row
                .try_get::<_, Option<Vec<ChatId>>>("waits_on")?
                .unwrap_or_default(),
            finished_at: row.try_get("finished_at")?,
            expired: row.try_get("expired")?,
        })
    }
}

static RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{fenced}, inserted AS (
             {insert}
         ), recorded AS (
             INSERT INTO tool_calls (chat_id, message_id, call_id, tool, args, runs_on, idempotent,
                                     generation, waits_on)
             SELECT $1, i.id, c.call_id, c.tool, c.args, c.runs_on, c.idempotent, $3, c.waits_on
             FROM inserted i, ROWS FROM (jsonb_to_recordset($5::jsonb) AS (
                      call_id text, tool text, args jsonb, runs_on text, idempotent boolean,
                      waits_on uuid[])) WITH ORDINALITY
                  AS c(call_id, tool, args, runs_on, idempotent, waits_on, ord)
             ORDER BY c.ord
         )
         SELECT * FROM inserted",
        fenced = fenced_step_rows(),
        insert = insert_rows("new_rows"),
    )
});

/// Stores the assistant message of a step that calls tools, and records its
/// calls in the ledger, in one statement fenced on `fence` (ARCHITECTURE.md §3): a
/// call is on record before it runs. The model call's cost is recorded in
/// the same statement ([`super::accounting`]), replacing the run's spend
/// reservation. `None` when ownership was lost.
pub async fn record(
    db: &impl GenericClient,
    fence: &Fence,
    assistant: &StepMessage,
    calls: &[NewCall],
) -> DbResult<Option<Message>> {
    let stmt = db.prepare_cached(&RECORD).await?;
    let row = db
        .query_opt(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &Json(std::slice::from_ref(assistant)),
                &Json(calls),
            ],
        )
        .await?;
    row.as_ref().map(Message::from_row).transpose()
}

static OPEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM tool_calls t JOIN chat_messages m ON m.id = t.message_id
         WHERE t.chat_id = $1 AND t.finished_at IS NULL ORDER BY t.id"
    )
});

/// A chat's calls without a result, in call order.
pub async fn open(db: &impl GenericClient, chat_id: ChatId) -> DbResult<Vec<ToolCall>> {
    let stmt = db.prepare_cached(&OPEN).await?;
    db.query(&stmt, &[&chat_id])
        .await?
        .iter()
        .map(ToolCall::from_row)
        .collect()
}

/// The client calls a `requires_action` chat waits for, with their run and
/// deadline; `None` when it waits for none.
pub async fn pending_client_calls(
    db: &impl GenericClient,
    chat_id: ChatId,
) -> DbResult<Option<(Vec<PendingToolCall>, Generation, DateTime<Utc>)>> {
    let calls: Vec<ToolCall> = open(db, chat_id)
        .await?
        .into_iter()
        .filter(|call| call.runs_on == RunsOn::Client)
        .collect();
    let (Some(first), Some(deadline)) = (
        calls.first(),
        calls.iter().filter_map(|call| call.deadline).max(),
    ) else {
        return Ok(None);
    };
    let generation = first.generation;
    let pending = calls
        .into_iter()
        .map(|call| PendingToolCall {
            id: call.call_id,
            name: call.tool,
            args: call.args,
        })
        .collect();
    Ok(Some((pending, generation, deadline)))
}

/// The wait a call starts when a run ends by waiting ([`suspend`]).
#[derive(Debug, Clone, Serialize)]
pub struct WaitDeadline {
    /// The call.
    pub call_id: String,
    /// Seconds from now to its deadline (kept when it has one already).
    pub secs: f64,
    /// For a wait for subagents: the children (kept when set already).
    pub waits_on: Option<Vec<ChatId>>,
}

/// What [`suspend`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Suspended {
    /// The chat waits: `requires_action` or `waiting_on_agents`; the run is over.
    Waiting {
        /// The new status.
        status: ChatStatus,
        /// The owner, for chat-list events.
        owner_id: UserId,
        /// Webhook deliveries queued (`turn.requires_action`, ARCHITECTURE.md §17).
        webhooks_queued: i64,
    },
    /// The subagents it would wait for had all finished by the time their
    /// rows were locked: the chat is `pending` (whoever claims it writes
    /// the results); the run is over.
    Pending(BecamePending),
    /// An interrupt was requested: nothing changed; the run must handle it.
    Interrupted,
}

/// The statement of [`suspend`]. A chat left `requires_action` ends its
/// turn for the client: the webhook outbox gets its `turn.requires_action`
/// rows in the same statement ([`super::webhook_deliveries::OUTBOX_CTE`];
/// the other statuses it leaves map to no event).
static SUSPEND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH owned AS (
             SELECT id, owner_id, interrupt_requested FROM chats
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'
             FOR UPDATE
         ), timed AS (
             UPDATE tool_calls t
             SET deadline = COALESCE(t.deadline, now() + make_interval(secs => d.secs)),
                 waits_on = COALESCE(t.waits_on, d.waits_on)
             FROM owned, jsonb_to_recordset($4::jsonb) AS d(call_id text, secs float8, waits_on uuid[])
             WHERE NOT owned.interrupt_requested AND t.chat_id = owned.id
               AND t.finished_at IS NULL AND t.call_id = d.call_id
             RETURNING t.runs_on, t.waits_on
         ), children AS (
             SELECT k.status FROM chats k
             WHERE k.id IN (SELECT unnest(waits_on) FROM timed WHERE runs_on = 'agents')
             FOR SHARE OF k
         ), decided AS (
             SELECT CASE
                 WHEN EXISTS (SELECT 1 FROM timed WHERE runs_on = 'client') THEN 'requires_action'
                 WHEN EXISTS (SELECT 1 FROM children WHERE status NOT IN ('waiting', 'error'))
                     THEN 'waiting_on_agents'
                 ELSE 'pending'
             END::chat_status AS status
         ), released AS (
             UPDATE chats c SET status = decided.status, worker_id = NULL, started_at = NULL,
                    interrupt_requested = false, updated_at = now()
             FROM owned, decided
             WHERE c.id = owned.id AND NOT owned.interrupt_requested
             RETURNING c.id AS chat_id, c.status AS chat_status, c.owner_id AS chat_owner_id,
                       c.generation AS chat_generation, c.title AS chat_title
         ), inserted AS (
             SELECT * FROM chat_messages WHERE false
         ), {outbox}
         SELECT o.owner_id, o.interrupt_requested, r.chat_status AS status,
                (SELECT count(*) FROM webhook_outbox) AS webhooks_queued
         FROM owned o LEFT JOIN released r ON true",
        outbox = super::webhook_deliveries::OUTBOX_CTE,
    )
});

/// Ends a run whose step left calls open that wait on something outside
/// the chat, in one statement fenced on `fence`: each open call named in
/// `waits` gets its deadline (now + seconds; kept if it has one) and the
/// children it waits for, and
/// the chat leaves `running` without a worker: `requires_action` when a
/// client call is open, else `waiting_on_agents`, or `pending` when the
/// subagents waited for have all finished already. Those are locked
/// (`FOR SHARE`), so a child's end either comes first and is seen here, or
/// waits for this statement and then wakes the parent ([`wake_parent`]).
/// `None` when ownership was lost.
pub async fn suspend(
    db: &impl GenericClient,
    fence: &Fence,
    waits: &[WaitDeadline],
) -> DbResult<Option<Suspended>> {
    let stmt = db.prepare_cached(&SUSPEND).await?;
    let Some(row) = db
        .query_opt(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &Json(waits),
            ],
        )
        .await?
    else {
        return Ok(None);
    };
    let owner_id: UserId = row.try_get("owner_id")?;
    if row.try_get::<_, bool>("interrupt_requested")? {
        return Ok(Some(Suspended::Interrupted));
    }
    let status: ChatStatus = row.try_get("status")?;
    let webhooks_queued: i64 = row.try_get("webhooks_queued")?;
    Ok(Some(if status == ChatStatus::Pending {
        Suspended::Pending(BecamePending {
            chat_id: fence.chat_id,
            owner_id,
            generation: fence.generation,
        })
    } else {
        Suspended::Waiting {
            status,
            owner_id,
            webhooks_queued,
        }
    }))
}

/// The fast path of a subagent's end (its finish committed): makes `parent`
/// `pending` if it is `waiting_on_agents` on a wait that names `child` and
/// every child of that wait has finished. `None` otherwise. A parent whose
/// wake this misses (this replica died first) is woken by the heartbeat.
pub async fn wake_parent(
    db: &impl GenericClient,
    parent: ChatId,
    child: ChatId,
) -> DbResult<Option<BecamePending>> {
    let stmt = db
        .prepare_cached(
            "UPDATE chats p SET status = 'pending', updated_at = now()
             WHERE p.id = $1 AND p.status = 'waiting_on_agents'
               AND EXISTS (
                   SELECT 1 FROM tool_calls w
                   WHERE w.chat_id = p.id AND w.finished_at IS NULL AND w.runs_on = 'agents'
                     AND $2 = ANY (w.waits_on)
                     AND NOT EXISTS (SELECT 1 FROM chats k WHERE k.id = ANY (w.waits_on)
                                       AND k.status NOT IN ('waiting', 'error')))
             RETURNING p.id, p.owner_id, p.generation",
        )
        .await?;
    db.query_opt(&stmt, &[&parent, &child])
        .await?
        .as_ref()
        .map(BecamePending::from_row)
        .transpose()
}

/// One result a client posts.
#[derive(Debug, Clone)]
pub struct ClientResult {
    /// The call it answers.
    pub tool_call_id: String,
    /// The result.
    pub result: Value,
    /// True when the client's tool failed.
    pub is_error: bool,
}

/// What [`submit_client_results`] did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Every pending call is answered: the results are stored (in call
    /// order) and the chat is `pending`.
    Accepted {
        /// The tool messages.
        messages: Vec<Message>,
        /// The transition to announce.
        pending: BecamePending,
    },
    /// No such chat (or not the caller's).
    NotFound,
    /// These ids name no client call of the chat.
    Unknown(Vec<String>),
    /// These ids appear more than once.
    Duplicate(Vec<String>),
    /// These calls have a result already (posted before, or given an error
    /// result when their deadline passed or the turn was interrupted).
    AlreadyAnswered(Vec<String>),
    /// The chat waits for no client result.
    NotWaiting(ChatStatus),
    /// The deadline passed: the calls get error results instead.
    DeadlinePassed(DateTime<Utc>),
    /// These pending calls have no result in the request.
    Missing(Vec<String>),
}

static INSERT_CLIENT_RESULTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH answered AS (
             SELECT t.id AS ledger_id, t.generation, m.step, r.content,
                    COALESCE((r.content -> 0 ->> 'is_error')::boolean, false) AS is_error
             FROM tool_calls t
             JOIN chat_messages m ON m.id = t.message_id
             JOIN jsonb_to_recordset($2::jsonb) AS r(call_id text, content jsonb)
               ON r.call_id = t.call_id
             WHERE t.chat_id = $1 AND t.finished_at IS NULL AND t.runs_on = 'client'
         ), inserted AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, generation, step)
             SELECT $1, 'tool', 'both', content, generation, step FROM answered ORDER BY ledger_id
             RETURNING {columns}
         ), closed AS (
             UPDATE tool_calls t SET finished_at = now(), is_error = a.is_error
             FROM answered a WHERE t.id = a.ledger_id
         )
         SELECT * FROM inserted ORDER BY id",
        columns = messages::COLUMNS,
    )
});

/// A client's results for a `requires_action` chat (ARCHITECTURE.md §17), in one
/// transaction with the chat row locked: every pending client call must be
/// answered exactly once, before the deadline, by ids the chat knows. Then
/// the results are stored as tool messages and the chat becomes `pending`;
/// otherwise nothing changes and the outcome says why.
pub async fn submit_client_results(
    db: &mut deadpool_postgres::Object,
    chat_id: ChatId,
    only_owner: Option<UserId>,
    results: &[ClientResult],
) -> DbResult<Submitted> {
    let tx = db.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT status, owner_id, generation FROM chats WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(chat) = tx.query_opt(&lock, &[&chat_id]).await? else {
        return Ok(Submitted::NotFound);
    };
    let owner: UserId = chat.try_get("owner_id")?;
    if only_owner.is_some_and(|caller| caller != owner) {
        return Ok(Submitted::NotFound);
    }
    let status: ChatStatus = chat.try_get("status")?;
    let named: Vec<&str> = results.iter().map(|r| r.tool_call_id.as_str()).collect();
    let known = tx
        .prepare_cached(
            "SELECT call_id, finished_at IS NOT NULL AS finished, deadline < now() AS expired, deadline
             FROM tool_calls
             WHERE chat_id = $1 AND runs_on = 'client' AND (finished_at IS NULL OR call_id = ANY ($2))",
        )
        .await?;
    let rows = tx.query(&known, &[&chat_id, &named]).await?;
    let mut pending = Vec::new();
    let mut finished = std::collections::HashSet::new();
    let mut expired = None;
    for row in &rows {
        let call_id: String = row.try_get("call_id")?;
        if row.try_get("finished")? {
            finished.insert(call_id);
        } else {
            if row.try_get::<_, Option<bool>>("expired")? == Some(true) {
                expired = row.try_get("deadline")?;
            }
            pending.push(call_id);
        }
    }
    let unknown: Vec<String> = named
        .iter()
        .filter(|id| !pending.iter().any(|o| o == *id) && !finished.contains(**id))
        .map(|id| (*id).to_owned())
        .collect();
    if !unknown.is_empty() {
        return Ok(Submitted::Unknown(unknown));
    }
    let mut seen = std::collections::HashSet::new();
    let mut duplicate: Vec<String> = named
        .iter()
        .filter(|id| !seen.insert(**id))
        .map(|id| (*id).to_owned())
        .collect();
    duplicate.dedup();
    if !duplicate.is_empty() {
        return Ok(Submitted::Duplicate(duplicate));
    }
    let answered: Vec<String> = named
        .iter()
        .filter(|id| finished.contains(**id))
        .map(|id| (*id).to_owned())
        .collect();
    if !answered.is_empty() {
        return Ok(Submitted::AlreadyAnswered(answered));
    }
    if status != ChatStatus::RequiresAction {
        return Ok(Submitted::NotWaiting(status));
    }
    if let Some(deadline) = expired {
        return Ok(Submitted::DeadlinePassed(deadline));
    }
    let missing: Vec<String> = pending
        .iter()
        .filter(|id| !named.contains(&id.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Ok(Submitted::Missing(missing));
    }
    let calls = open(&tx, chat_id).await?;
    let contents: Vec<Value> = results
        .iter()
        .map(|result| {
            let name = calls
                .iter()
                .find(|call| call.call_id == result.tool_call_id)
                .map(|call| call.tool.clone())
                .unwrap_or_default();
            serde_json::json!({
                "call_id": result.tool_call_id,
                "content": [Part::ToolResult {
                    tool_call_id: result.tool_call_id.clone(),
                    name,
                    result: result.result.clone(),
                    is_error: result.is_error,
                }],
            })
        })
        .collect();
    let insert = tx.prepare_cached(&INSERT_CLIENT_RESULTS).await?;
    let messages = tx
        .query(&insert, &[&chat_id, &Json(&contents)])
        .await?
        .iter()
        .map(Message::from_row)
        .collect::<DbResult<Vec<_>>>()?;
    let resume = tx
        .prepare_cached(
            "UPDATE chats SET status = 'pending', updated_at = now() WHERE id = $1
             RETURNING id, owner_id, generation",
        )
        .await?;
    let pending = BecamePending::from_row(&tx.query_one(&resume, &[&chat_id]).await?)?;
    tx.commit().await?;
    Ok(Submitted::Accepted { messages, pending })
}

static CLOSE_OPEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH open_calls AS (
             SELECT t.id AS ledger_id, t.call_id, t.tool, t.generation, m.step
             FROM tool_calls t JOIN chat_messages m ON m.id = t.message_id
             WHERE t.chat_id = $1 AND t.finished_at IS NULL
         ), inserted AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, generation, step)
             SELECT $1, 'tool', 'both',
                    jsonb_build_array(jsonb_build_object(
                        'type', 'tool_result', 'tool_call_id', call_id, 'name', tool,
                        'result', jsonb_build_object('error', $2::text), 'is_error', true)),
                    generation, step
             FROM open_calls ORDER BY ledger_id
             RETURNING {columns}
         ), closed AS (
             UPDATE tool_calls t SET finished_at = now(), is_error = true
             FROM open_calls o WHERE t.id = o.ledger_id
         )
         SELECT * FROM inserted ORDER BY id",
        columns = messages::COLUMNS,
    )
});

/// Gives every open call of a chat an error result saying `why` (an
/// interrupt of a chat that waits), in call order. Run it with the chat
/// row locked, in the transaction that moves the chat on.
pub async fn close_open(
    db: &impl GenericClient,
    chat_id: ChatId,
    why: &str,
) -> DbResult<Vec<Message>> {
    let stmt = db.prepare_cached(&CLOSE_OPEN).await?;
    db.query(&stmt, &[&chat_id, &why])
        .await?
        .iter()
        .map(Message::from_row)
        .collect()
}
