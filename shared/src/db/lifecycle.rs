//! The worker side of a chat's lifecycle (ARCHITECTURE.md §3, §4): claiming pending
//! chats, the heartbeat that renews a lease and recovers dead replicas'
//! chats, handing chats back, and the fenced writes of a run (a step, the
//! end of a turn). Plain reads and writes of rows live in [`super::chats`]
//! and [`super::messages`]; the transitions a client asks for in
//! [`super::transitions`].
//!
//! Every statement a run makes is conditional on its [`Fence`]: it matches
//! no row once ownership moved on, and the caller must then stop at once.

use std::{borrow::Borrow, sync::LazyLock};

use postgres_types::Json;

use super::{
    DbResult, GenericClient,
    chats::{BecamePending, Chat},
    messages::{self, Message},
};
use crate::{
    ids::{ChatId, Generation, MessageId, ModelConfigId, ReplicaId, UserId},
    parts::{Part, Usage},
    status::{ChatStatus, MessageRole},
};

/// What a worker holds while it runs a chat: every write it makes is
/// conditional on all three still matching the row (ARCHITECTURE.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The chat.
    pub chat_id: ChatId,
    /// The replica running it.
    pub worker_id: ReplicaId,
    /// The generation it acquired.
    pub generation: Generation,
}

/// A chat this replica just acquired.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row after the claim (status `running`, the new generation).
    pub chat: Chat,
    /// How long it had been pending.
    pub queue_wait_secs: f64,
}

static CLAIM: LazyLock<String> = LazyLock::new(|| {
    // The subquery's columns are renamed so the chat's own columns need no
    // prefix in RETURNING (one column list per row type).
    format!(
        "UPDATE chats c SET status = 'running', worker_id = $1, generation = c.generation + 1,
                started_at = now(), updated_at = now(), interrupt_requested = false,
                step_retries = 0
         FROM (SELECT id AS pending_id, updated_at AS pending_since FROM chats
               WHERE status = 'pending' AND NOT archived
               ORDER BY updated_at, id FOR UPDATE SKIP LOCKED LIMIT $2) p
         WHERE c.id = p.pending_id
         RETURNING {columns}, extract(epoch FROM now() - p.pending_since)::float8 AS queue_wait_secs",
        columns = super::chats::COLUMNS,
    )
});

/// Claims up to `limit` pending chats for `worker` in one statement, oldest
/// first, skipping rows other replicas are claiming (ARCHITECTURE.md §4).
pub async fn claim_pending(
    db: &impl GenericClient,
    worker: ReplicaId,
    limit: i64,
) -> DbResult<Vec<Claimed>> {
    let stmt = db.prepare_cached(&CLAIM).await?;
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

/// How a replica was found dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeathCause {
    /// Its advisory lock was free: its listener session is gone.
    LockReleased,
    /// Its lease expired (or its row is gone).
    LeaseExpired,
}

impl DeathCause {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LockReleased => "lock_released",
            Self::LeaseExpired => "lease_expired",
        }
    }
}

/// A replica found dead, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Death {
    /// The replica.
    pub replica: ReplicaId,
    /// How its death was seen.
    pub cause: DeathCause,
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
    /// The dead replicas whose chats (some or all) it recovered, or whose
    /// free lock it found (their rows are deleted).
    pub deaths: Vec<Death>,
    /// The next replica after this one (by id, wrapping around) among those
    /// holding a lock: the one this replica watches for its death.
    pub watch: Option<ReplicaId>,
    /// Chats waiting on something outside themselves that this beat made
    /// `pending` again: their wait's deadline passed, or the subagents they
    /// wait for finished (the fast path, a child's end, may have been lost
    /// with its replica). See [`super::tool_calls`].
    pub woken: Vec<BecamePending>,
}

/// One heartbeat in one statement: renews the lease (`now() + lease_ttl`,
/// database clock), reads what the database says this replica runs, and
/// requeues up to `recovery_limit` running chats of other replicas that
/// are dead: their lease expired, their row is gone, or (when `by_lock`)
/// their advisory lock is free, i.e. their listener session ended. Rows
/// `FOR UPDATE SKIP LOCKED`, so replicas recovering at once do not contend;
/// a free lock is taken for the statement's transaction, so only one
/// replica acts on it. The rows of replicas found dead by their lock are
/// deleted. One statement keeps an idle replica's cost at one statement per
/// heartbeat, whatever it runs.
///
/// `by_lock` is for a replica whose own session has been up a while: right
/// after a PostgreSQL restart every lock is free until its holder
/// reconnects, and only the lease may judge then.
///
/// The same statement ends waits (invariant 16): up to `recovery_limit`
/// chats in `requires_action` whose client calls' deadline passed, or in
/// `waiting_on_agents` whose wait's deadline passed or whose subagents all
/// finished, become `pending` (the run that claims them writes the results).
/// Driven by the open waits' index, it costs nothing while nothing waits.
pub async fn beat(
    db: &impl GenericClient,
    replica: ReplicaId,
    lease_ttl: std::time::Duration,
    recovery_limit: i64,
    by_lock: bool,
) -> DbResult<Beat> {
    let stmt = db
        .prepare_cached(
            "WITH lease AS (
                 UPDATE replicas SET heartbeat_at = now(),
                        lease_expires_at = now() + make_interval(secs => $2)
                 WHERE id = $1 RETURNING id
             ), dead AS (
                 SELECT id FROM replicas
                 WHERE $4 AND id <> $1 AND lock_key IS NOT NULL AND pg_try_advisory_xact_lock(lock_key)
             ), gone AS (
                 DELETE FROM replicas r USING dead WHERE r.id = dead.id RETURNING r.id
             ), recovered AS (
                 UPDATE chats c SET status = 'pending', worker_id = NULL, generation = c.generation + 1,
                        started_at = NULL, updated_at = now()
                 FROM (SELECT s.id, s.worker_id, d.id IS NOT NULL AS by_lock
                       FROM chats s LEFT JOIN replicas r ON r.id = s.worker_id
                                    LEFT JOIN dead d ON d.id = s.worker_id
                       WHERE s.status = 'running' AND s.worker_id <> $1
                         AND (r.id IS NULL OR r.lease_expires_at < now() OR d.id IS NOT NULL)
                       ORDER BY s.id LIMIT $3 FOR UPDATE OF s SKIP LOCKED) stale
                 WHERE c.id = stale.id
                 RETURNING c.id, c.owner_id, c.generation, stale.worker_id, stale.by_lock
             ), watched AS (
                 SELECT id FROM replicas
                 WHERE id <> $1 AND lock_key IS NOT NULL AND id NOT IN (SELECT id FROM dead)
                 ORDER BY id > $1 DESC, id LIMIT 1
             ), woken AS (
                 UPDATE chats c SET status = 'pending', updated_at = now()
                 FROM (SELECT p.id FROM chats p
                       WHERE (p.id, CASE p.status WHEN 'requires_action' THEN 'client' ELSE 'agents' END)
                             IN (SELECT w.chat_id, w.runs_on FROM tool_calls w
                                 WHERE w.finished_at IS NULL AND w.deadline IS NOT NULL
                                   AND (w.deadline < now() OR (w.runs_on = 'agents' AND NOT EXISTS (
                                        SELECT 1 FROM chats k WHERE k.id = ANY (w.waits_on)
                                          AND k.status NOT IN ('waiting', 'error')))))
                         AND p.status IN ('requires_action', 'waiting_on_agents')
                       ORDER BY p.id LIMIT $3 FOR UPDATE OF p SKIP LOCKED) due
                 WHERE c.id = due.id
                 RETURNING c.id, c.owner_id, c.generation
             )
             SELECT 'lease' AS kind, NULL::uuid AS id, NULL::uuid AS owner_id, NULL::bigint AS generation,
                    false AS interrupt_requested, NULL::uuid AS worker_id, false AS by_lock FROM lease
             UNION ALL
             SELECT 'owned', id, owner_id, generation, interrupt_requested, NULL, false FROM chats
             WHERE worker_id = $1 AND status = 'running'
             UNION ALL
             SELECT 'recovered', id, owner_id, generation, false, worker_id, by_lock FROM recovered
             UNION ALL
             SELECT 'dead', id, NULL, NULL, false, NULL, true FROM gone
             UNION ALL
             SELECT 'watch', id, NULL, NULL, false, NULL, false FROM watched
             UNION ALL
             SELECT 'woken', id, owner_id, generation, false, NULL, false FROM woken",
        )
        .await?;
    let rows = db
        .query(
            &stmt,
            &[
                &replica,
                &lease_ttl.as_secs_f64(),
                &recovery_limit,
                &by_lock,
            ],
        )
        .await?;
    let mut beat = Beat::default();
    let mut deaths = std::collections::HashSet::new();
    for row in &rows {
        match row.try_get::<_, &str>("kind")? {
            "lease" => beat.lease_renewed = true,
            "owned" => beat.owned.push(OwnedRun {
                chat_id: row.try_get("id")?,
                generation: row.try_get("generation")?,
                interrupt_requested: row.try_get("interrupt_requested")?,
            }),
            "recovered" => {
                beat.recovered.push(BecamePending::from_row(row)?);
                let cause = if row.try_get("by_lock")? {
                    DeathCause::LockReleased
                } else {
                    DeathCause::LeaseExpired
                };
                if let Some(worker) = row.try_get::<_, Option<ReplicaId>>("worker_id")? {
                    deaths.insert(Death {
                        replica: worker,
                        cause,
                    });
                }
            }
            "dead" => {
                deaths.insert(Death {
                    replica: row.try_get("id")?,
                    cause: DeathCause::LockReleased,
                });
            }
            "woken" => beat.woken.push(BecamePending::from_row(row)?),
            _ => beat.watch = row.try_get("id")?,
        }
    }
    beat.deaths = deaths.into_iter().collect();
    Ok(beat)
}

/// What [`recover_replica`] did.
#[derive(Debug, Clone, Default)]
pub struct RecoveredReplica {
    /// Its row was still there (and is gone now): nobody had recovered it.
    pub row_deleted: bool,
    /// Its chats, put back to `pending`.
    pub chats: Vec<BecamePending>,
}

/// Recovers the chats of `dead`, a replica whose advisory lock the caller
/// holds (so its session is gone, and it cannot come back meanwhile):
/// deletes its row and requeues every chat it ran (`pending`, generation +
/// 1). Rows another transaction holds are skipped; its row being gone, the
/// next heartbeat of any replica recovers them.
pub async fn recover_replica(
    db: &impl GenericClient,
    dead: ReplicaId,
) -> DbResult<RecoveredReplica> {
    let stmt = db
        .prepare_cached(
            "WITH gone AS (
                 DELETE FROM replicas WHERE id = $1 RETURNING id
             ), recovered AS (
                 UPDATE chats c SET status = 'pending', worker_id = NULL, generation = c.generation + 1,
                        started_at = NULL, updated_at = now()
                 FROM (SELECT id FROM chats WHERE worker_id = $1 AND status = 'running'
                       FOR UPDATE SKIP LOCKED) s
                 WHERE c.id = s.id
                 RETURNING c.id, c.owner_id, c.generation
             )
             SELECT 'chat' AS kind, id, owner_id, generation FROM recovered
             UNION ALL
             SELECT 'row', id, NULL, NULL FROM gone",
        )
        .await?;
    let mut recovered = RecoveredReplica::default();
    for row in db.query(&stmt, &[&dead]).await? {
        match row.try_get::<_, &str>("kind")? {
            "chat" => recovered.chats.push(BecamePending::from_row(&row)?),
            _ => recovered.row_deleted = true,
        }
    }
    Ok(recovered)
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

/// Records that the model call of the step in progress is being retried
/// for the `retries`th time (the diagnosis endpoint reads it), fenced on
/// `fence`. `false` means ownership was lost. Persisting the step, ending
/// the turn and a claim set it back to 0.
pub async fn record_retry(db: &impl GenericClient, fence: &Fence, retries: i32) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "UPDATE chats SET step_retries = $4
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'",
        )
        .await?;
    let updated = db
        .execute(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &retries,
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// The columns of a step's rows (see [`step_records`]) in the order of
/// [`messages::INSERT_COLUMNS`] after `chat_id`, `visibility` and
/// `generation`, with their position as `ord`. The one definition of a
/// step's row shape, for [`persist_step`], [`finish_turn`] and
/// [`super::turn_ends`].
pub(super) const STEP_COLUMNS: &str = "m.ord, m.role, m.content, NULL::uuid AS created_by,
    m.model_config_id, m.step, m.input_tokens, m.output_tokens, m.reasoning_tokens,
    m.cache_read_tokens, m.cache_write_tokens, m.cost_micros, m.runtime_ms,
    NULL::text AS idempotency_key";

/// The rows `m` of `json` (a JSON array of [`StepMessage`]), for
/// [`STEP_COLUMNS`].
pub(super) fn step_records(json: &str) -> String {
    format!(
        "ROWS FROM (jsonb_to_recordset({json}) AS (
             role message_role, content jsonb, model_config_id uuid, step int,
             input_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
             cache_read_tokens bigint, cache_write_tokens bigint, cost_micros bigint, runtime_ms bigint
         )) WITH ORDINALITY AS m(role, content, model_config_id, step, input_tokens, output_tokens,
             reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms, ord)"
    )
}

/// The `step` CTE: the rows of `$4`.
fn step_cte() -> String {
    format!(
        "step AS (SELECT {STEP_COLUMNS} FROM {records})",
        records = step_records("$4::jsonb")
    )
}

/// `INSERT … SELECT` of the rows of `source` (with [`STEP_COLUMNS`] and
/// `generation`) into `chat_messages`, in `ord` order.
pub(super) fn insert_rows(source: &str) -> String {
    format!(
        "INSERT INTO chat_messages ({insert_columns})
         SELECT $1, role, 'both', content, created_by, model_config_id, generation, step,
                input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
                cache_write_tokens, cost_micros, runtime_ms, idempotency_key
         FROM {source} ORDER BY ord
         RETURNING {message_columns}",
        insert_columns = messages::INSERT_COLUMNS,
        message_columns = messages::COLUMNS,
    )
}

/// `WITH owned …, step …, new_rows …, acct_…`: the rows of `$4` (see
/// [`step_cte`]) with the run's generation, only while the chat is still
/// running under the fence `($1, $2, $3)` (an `UPDATE` of the chat row, so
/// the row lock orders it against a recovery or an edit), and their
/// accounting ([`super::accounting`]): a model call's message is counted
/// in the statement that stores it, whichever statement that is (a step's
/// tool results, a step's message with its calls on record). Rows without
/// a model (tool results) account nothing.
pub(super) fn fenced_step_rows() -> String {
    format!(
        "WITH owned AS (
             UPDATE chats SET updated_at = now(), step_retries = 0
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'
             RETURNING id
         ), {step}, new_rows AS (
             SELECT step.*, $3::bigint AS generation FROM owned, step
         ), {accounting}",
        step = step_cte(),
        accounting = super::accounting::step_ctes(false),
    )
}

static PERSIST_STEP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{fenced}, {CLOSE_CALLS}
         {insert}",
        fenced = fenced_step_rows(),
        insert = insert_rows("new_rows"),
    )
});

/// The `closed_calls` CTE: the tool-call ledger rows answered by the tool
/// messages among `new_rows` are finished in the statement that stores
/// their results, so a result in the history always means a finished call
/// (see [`super::tool_calls`]).
const CLOSE_CALLS: &str = "closed_calls AS (
         UPDATE tool_calls t SET finished_at = now(),
                is_error = COALESCE((r.content -> 0 ->> 'is_error')::boolean, false)
         FROM new_rows r
         WHERE r.role = 'tool' AND t.chat_id = $1 AND t.finished_at IS NULL
           AND t.call_id = r.content -> 0 ->> 'tool_call_id'
     )";

/// Inserts a step's messages, in order, in one statement fenced on
/// `fence` (ARCHITECTURE.md §3): nothing is written unless the chat is still running
/// under this worker and generation. `None` means ownership was lost.
///
/// The fence is an `UPDATE` of the chat row, so it takes the row lock: a
/// concurrent recovery or edit either commits first (and the fence fails) or
/// waits until these messages are committed. The step's cost is recorded in
/// the same statement ([`super::accounting`]), replacing the run's spend
/// reservation.
pub async fn persist_step(
    db: &impl GenericClient,
    fence: &Fence,
    step: &[StepMessage],
) -> DbResult<Option<Vec<Message>>> {
    let stmt = db.prepare_cached(&PERSIST_STEP).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &Json(step),
            ],
        )
        .await?;
    if rows.is_empty() && !step.is_empty() {
        return Ok(None);
    }
    let mut messages: Vec<Message> = rows
        .iter()
        .map(Message::from_row)
        .collect::<DbResult<_>>()?;
    messages.sort_by_key(|m| m.id);
    Ok(Some(messages))
}

/// How a turn ended, for [`finish_turn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEnd {
    /// Finished (or interrupted): `waiting` unless a queued message continues.
    Done,
    /// Failed: `error` with this message unless a queued message continues.
    Failed(String),
    /// Could not start (a limit refused it): `error` with this code (e.g.
    /// `spend_limit_exceeded`) and message unless a queued message continues.
    Refused {
        /// The error's stable code.
        code: String,
        /// A human sentence.
        message: String,
    },
}

/// The chat after [`finish_turn`].
#[derive(Debug, Clone)]
pub struct Released {
    /// `running` when a queued message was popped (the same worker continues
    /// under the same generation), else `waiting` or `error`.
    pub status: ChatStatus,
    /// The owner, for chat-list events.
    pub owner_id: UserId,
    /// The queued message, now a user message, when one was popped.
    pub next: Option<Message>,
    /// Webhook deliveries the turn end queued in the outbox (ARCHITECTURE.md §17).
    pub webhooks_queued: i64,
    /// The chat's parent, for a subagent: a parent waiting on it may go on.
    pub parent_chat_id: Option<ChatId>,
}

/// The turn end's statement. With `outbox`, it writes the webhook
/// deliveries the turn end owes ([`super::webhook_deliveries::OUTBOX_CTE`]).
/// Without, it does nothing at all (no row) if the chat's owner has a
/// webhook: a statement for owners without webhooks (most), smaller by the
/// outbox's whole plan, that can never skip a delivery.
fn finish_turn_sql(outbox: bool) -> String {
    let (guard, outbox, queued) = if outbox {
        (
            "",
            format!(", {}", super::webhook_deliveries::OUTBOX_CTE),
            "(SELECT count(*) FROM webhook_outbox)",
        )
    } else {
        (
            "AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.owner_id = chats.owner_id)",
            String::new(),
            "0::bigint",
        )
    };
    format!(
        "WITH owned AS (
             SELECT id FROM chats
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'
               {guard}
             FOR UPDATE
         ), next AS (
             SELECT q.id FROM chat_queued_messages q JOIN owned o ON q.chat_id = o.id
             ORDER BY q.priority DESC, q.id LIMIT 1
         ), popped AS (
             DELETE FROM chat_queued_messages q USING next WHERE q.id = next.id
             RETURNING q.content, q.created_by, q.idempotency_key
         ), {step}, new_rows AS (
             SELECT step.*, $3::bigint AS generation FROM owned, step
             UNION ALL
             SELECT 9223372036854775807, 'user', p.content, p.created_by, NULL, NULL, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL, p.idempotency_key, NULL
             FROM popped p
         ), {accounting}, {CLOSE_CALLS}, inserted AS (
             {insert}
         ), released AS (
             UPDATE chats c SET
                 status = CASE WHEN EXISTS (SELECT 1 FROM popped) THEN 'running'::chat_status ELSE $5 END,
                 worker_id = CASE WHEN EXISTS (SELECT 1 FROM popped) THEN c.worker_id END,
                 started_at = CASE WHEN EXISTS (SELECT 1 FROM popped) THEN c.started_at END,
                 last_error = $6, last_error_code = $7, interrupt_requested = false,
                 updated_at = now(), step_retries = 0
             FROM owned WHERE c.id = owned.id
             RETURNING c.id AS chat_id, c.status AS chat_status, c.owner_id AS chat_owner_id,
                       c.generation AS chat_generation, c.title AS chat_title,
                       c.parent_chat_id AS chat_parent_id
         ){outbox}
         SELECT r.chat_status, r.chat_owner_id, r.chat_parent_id,
                {queued} AS webhooks_queued, i.*
         FROM released r LEFT JOIN inserted i ON true
         ORDER BY i.id",
        step = step_cte(),
        accounting = super::accounting::step_ctes(true),
        insert = insert_rows("new_rows"),
    )
}

static FINISH_TURN: LazyLock<String> = LazyLock::new(|| finish_turn_sql(true));
pub(super) static FINISH_TURN_WITHOUT_WEBHOOKS: LazyLock<String> =
    LazyLock::new(|| finish_turn_sql(false));

/// What a run knows of its chat's owner's webhooks, for [`finish_turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerWebhooks {
    /// The owner had none when the turn read its prompt: the turn end tries
    /// the statement without the outbox first, which refuses if the owner
    /// has one by now (then the full statement runs).
    NoneSeen,
    /// The owner has some, or nobody looked.
    Unknown,
}

/// Persists a turn's last step (none: `step` empty) and ends the turn, in
/// one fenced statement (ARCHITECTURE.md §3): if a message is queued it is popped and
/// inserted as a user message and the chat stays `running` under the same
/// worker and generation; otherwise the chat becomes `waiting` (or `error`
/// with `last_error` and `last_error_code`). `interrupt_requested` is
/// cleared either way. The step's cost is recorded ([`super::accounting`]),
/// which replaces the run's spend reservation. A chat that went idle gets
/// its webhook deliveries written to the outbox in the same statement
/// ([`super::webhook_deliveries::OUTBOX_CTE`], invariant 17): no turn end
/// without its event, no event without its turn end. The
/// step's messages get lower ids than a popped queued message (one
/// `INSERT`, in order), so an interrupted reply is always stored before the
/// message that interrupted it. `None` when the fence no longer matches
/// (ownership lost).
///
/// With [`OwnerWebhooks::NoneSeen`] a statement without the outbox runs
/// first (it writes nothing if the owner has a webhook after all, and the
/// full one follows): a second statement only then, or when the fence
/// fails.
pub async fn finish_turn(
    db: &impl GenericClient,
    fence: &Fence,
    step: &[StepMessage],
    end: &TurnEnd,
    webhooks: OwnerWebhooks,
) -> DbResult<Option<(Vec<Message>, Released)>> {
    if webhooks == OwnerWebhooks::NoneSeen
        && let Some(done) =
            finish_with(db, &FINISH_TURN_WITHOUT_WEBHOOKS, fence, &Json(step), end).await?
    {
        return Ok(Some(done));
    }
    // Nothing written: the owner has a webhook now, or the fence no longer
    // matches, which the full statement finds again.
    finish_with(db, &FINISH_TURN, fence, &Json(step), end).await
}

/// Runs one of the turn end's statements ([`finish_turn_sql`]).
/// `step` is the step's JSON (`Json` of the [`StepMessage`]s).
pub(super) async fn finish_with(
    db: &impl GenericClient,
    sql: &str,
    fence: &Fence,
    step: &(dyn postgres_types::ToSql + Sync),
    end: &TurnEnd,
) -> DbResult<Option<(Vec<Message>, Released)>> {
    let (idle_status, error, code) = end.columns();
    let stmt = db.prepare_cached(sql).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                step,
                &idle_status,
                &error,
                &code,
            ],
        )
        .await?;
    turn_end_of(&rows)
}

impl TurnEnd {
    /// The chat's status if no queued message continues, `last_error` and
    /// `last_error_code`.
    pub(super) fn columns(&self) -> (ChatStatus, Option<&str>, Option<&str>) {
        match self {
            Self::Done => (ChatStatus::Waiting, None, None),
            Self::Failed(message) => (ChatStatus::Error, Some(message.as_str()), None),
            Self::Refused { code, message } => (
                ChatStatus::Error,
                Some(message.as_str()),
                Some(code.as_str()),
            ),
        }
    }
}

/// One chat's turn end from the rows of its statement (the release joined
/// with each inserted message); `None` when there are none (the fence no
/// longer matched).
pub(super) fn turn_end_of<R: std::borrow::Borrow<tokio_postgres::Row>>(
    rows: &[R],
) -> DbResult<Option<(Vec<Message>, Released)>> {
    let Some(first) = rows.first().map(Borrow::borrow) else {
        return Ok(None);
    };
    let mut released = Released {
        status: first.try_get("chat_status")?,
        owner_id: first.try_get("chat_owner_id")?,
        next: None,
        webhooks_queued: first.try_get("webhooks_queued")?,
        parent_chat_id: first.try_get("chat_parent_id")?,
    };
    let mut committed = Vec::with_capacity(rows.len());
    for row in rows.iter().map(Borrow::borrow) {
        if row.try_get::<_, Option<MessageId>>("id")?.is_none() {
            continue;
        }
        let message = Message::from_row(row)?;
        if message.role == MessageRole::User {
            released.next = Some(message);
        } else {
            committed.push(message);
        }
    }
    Ok(Some((committed, released)))
}

/// Ends a turn without a step to store: [`finish_turn`] with none.
pub async fn release(
    db: &impl GenericClient,
    fence: &Fence,
    end: &TurnEnd,
) -> DbResult<Option<Released>> {
    Ok(finish_turn(db, fence, &[], end, OwnerWebhooks::Unknown)
        .await?
        .map(|(_, released)| released))
}
