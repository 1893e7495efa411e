//! Turn ends of many chats in one statement (ARCHITECTURE.md §3, §6).
//!
//! With a fast model the runs a claim started together end their turns
//! together, and the turn end was a replica's most expensive statement: a
//! fifth of PostgreSQL's time went to starting its plan (eight
//! data-modifying CTEs) for each chat. [`TurnEnds`] ends every turn queued
//! at that moment in one statement ([`super::batched`]): the same fenced
//! writes as [`lifecycle::finish_turn`] does for one chat, each chat's
//! fence checked on its own row. A lone turn end runs the one-chat
//! statement.
//!
//! Only turn ends of owners without webhooks come here
//! ([`OwnerWebhooks::NoneSeen`]); like the one-chat statement without the
//! outbox, the batch writes nothing for a chat whose owner has a webhook
//! by now, and the caller then runs the full statement for it.

use std::sync::LazyLock;

use postgres_types::Json;
use serde_json::value::RawValue;

use super::{
    DbError, DbResult, accounting,
    batched::{BatchStatement, answer_of},
    lifecycle::{
        self, FINISH_TURN_WITHOUT_WEBHOOKS, Fence, Released, STEP_COLUMNS, StepMessage, TurnEnd,
    },
    messages::{self, Message},
};

#[cfg(doc)]
use super::lifecycle::OwnerWebhooks;

/// One chat's turn end, for [`TurnEnds`].
#[derive(Debug, Clone)]
pub struct TurnEndCall {
    fence: Fence,
    /// The step's messages as JSON, serialized once by the caller.
    step: Box<RawValue>,
    end: TurnEnd,
}

impl TurnEndCall {
    /// The end of the turn `fence` runs, storing `step` first (if any).
    pub fn new(fence: Fence, step: &[StepMessage], end: TurnEnd) -> DbResult<Self> {
        let step = serde_json::value::to_raw_value(step)
            .map_err(|_| DbError::Unexpected("a step that does not serialize"))?;
        Ok(Self { fence, step, end })
    }
}

/// Turn ends of owners without webhooks; `None` for a chat whose fence
/// no longer holds or whose owner has a webhook now (see the module docs).
pub struct TurnEnds;

impl BatchStatement for TurnEnds {
    type Want = TurnEndCall;
    type Got = Option<(Vec<Message>, Released)>;
    const WRITES: bool = true;

    async fn run_each(
        client: &deadpool_postgres::Client,
        wants: &[TurnEndCall],
    ) -> DbResult<Vec<Self::Got>> {
        finish_turns(client, wants).await
    }

    async fn run_one(client: &deadpool_postgres::Client, one: &TurnEndCall) -> DbResult<Self::Got> {
        lifecycle::finish_with(
            client,
            &FINISH_TURN_WITHOUT_WEBHOOKS,
            &one.fence,
            &Json(&*one.step),
            &one.end,
        )
        .await
    }
}

/// The statement: [`lifecycle::finish_turn`]'s without the outbox, for
/// every chat of `$1…$7` (arrays, one element per chat, numbered `want`).
/// The fence finds each chat through `chats_running_worker_idx` on
/// `(worker_id, id)` (migration 0008) or the primary key: one row per chat.
static FINISH_TURNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w AS (
             SELECT * FROM {wants}
                 AS w(chat_id, worker_id, generation, step, idle_status, error, code, want)
         ), owned AS (
             SELECT c.id, w.want, c.generation, c.owner_id, {stripe} AS stripe,
                    w.idle_status, w.error, w.code
             FROM chats c JOIN w ON c.id = w.chat_id
             WHERE c.worker_id = w.worker_id AND c.generation = w.generation
               AND c.status = 'running'
               AND NOT EXISTS (SELECT 1 FROM webhooks h WHERE h.owner_id = c.owner_id)
             ORDER BY c.id
             FOR UPDATE OF c
         ), next AS (
             SELECT o.want, q.id FROM owned o CROSS JOIN LATERAL (
                 SELECT q.id FROM chat_queued_messages q WHERE q.chat_id = o.id
                 ORDER BY q.priority DESC, q.id LIMIT 1
             ) q
         ), popped AS (
             DELETE FROM chat_queued_messages q USING next n WHERE q.id = n.id
             RETURNING n.want, q.content, q.created_by, q.idempotency_key
         ), step AS (
             SELECT w.want, {STEP_COLUMNS} FROM w, {records}
         ), new_rows AS (
             SELECT step.*, o.generation, o.id AS chat_id
             FROM owned o JOIN step ON step.want = o.want
             UNION ALL
             SELECT p.want, 9223372036854775807, 'user', p.content, p.created_by, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, p.idempotency_key, NULL, o.id
             FROM popped p JOIN owned o ON o.want = p.want
         ), {accounting}, closed_calls AS (
             UPDATE tool_calls t SET finished_at = now(),
                    is_error = COALESCE((r.content -> 0 ->> 'is_error')::boolean, false)
             FROM new_rows r
             WHERE r.role = 'tool' AND t.chat_id = r.chat_id AND t.finished_at IS NULL
               AND t.call_id = r.content -> 0 ->> 'tool_call_id'
         ), inserted AS (
             INSERT INTO chat_messages ({insert_columns})
             SELECT chat_id, role, 'both', content, created_by, model_config_id, generation, step,
                    input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
                    cache_write_tokens, cost_micros, runtime_ms, idempotency_key
             FROM new_rows ORDER BY want, ord
             RETURNING {message_columns}
         ), released AS (
             UPDATE chats c SET
                 status = CASE WHEN p.want IS NOT NULL THEN 'running'::chat_status
                               ELSE o.idle_status::chat_status END,
                 worker_id = CASE WHEN p.want IS NOT NULL THEN c.worker_id END,
                 started_at = CASE WHEN p.want IS NOT NULL THEN c.started_at END,
                 last_error = o.error, last_error_code = o.code, interrupt_requested = false,
                 updated_at = now(), step_retries = 0
             FROM owned o LEFT JOIN popped p ON p.want = o.want
             WHERE c.id = o.id
             RETURNING o.want, c.id AS chat_id, c.status AS chat_status,
                       c.owner_id AS chat_owner_id, c.parent_chat_id AS chat_parent_id
         )
         SELECT r.want, r.chat_status, r.chat_owner_id, r.chat_parent_id,
                0::bigint AS webhooks_queued, i.*
         FROM released r LEFT JOIN inserted i ON i.chat_id = r.chat_id
         ORDER BY r.want, i.id",
        stripe = accounting::stripe_of("c.id"),
        records = lifecycle::step_records("w.step"),
        accounting = accounting::turn_ends_ctes(),
        insert_columns = messages::INSERT_COLUMNS,
        message_columns = messages::COLUMNS,
        wants = super::batched::numbered_wants(&[
            "$1::uuid[]",
            "$2::uuid[]",
            "$3::bigint[]",
            "$4::jsonb[]",
            "$5::text[]",
            "$6::text[]",
            "$7::text[]",
        ]),
    )
});

/// Ends every turn of `calls` in one statement: one answer per call, in
/// order.
pub async fn finish_turns(
    db: &impl super::GenericClient,
    calls: &[TurnEndCall],
) -> DbResult<Vec<Option<(Vec<Message>, Released)>>> {
    let chat_ids: Vec<_> = calls.iter().map(|c| c.fence.chat_id).collect();
    let workers: Vec<_> = calls.iter().map(|c| c.fence.worker_id).collect();
    let generations: Vec<_> = calls.iter().map(|c| c.fence.generation).collect();
    let steps: Vec<_> = calls.iter().map(|c| Json(&*c.step)).collect();
    let columns: Vec<_> = calls.iter().map(|c| c.end.columns()).collect();
    let statuses: Vec<&str> = columns.iter().map(|(s, _, _)| s.as_str()).collect();
    let errors: Vec<Option<&str>> = columns.iter().map(|(_, e, _)| *e).collect();
    let codes: Vec<Option<&str>> = columns.iter().map(|(_, _, c)| *c).collect();
    let stmt = db.prepare_cached(&FINISH_TURNS).await?;
    let rows = db
        .query(
            &stmt,
            &[
                &chat_ids,
                &workers,
                &generations,
                &steps,
                &statuses,
                &errors,
                &codes,
            ],
        )
        .await?;
    let mut per_call: Vec<Vec<&tokio_postgres::Row>> = vec![Vec::new(); calls.len()];
    for row in &rows {
        if let Some(rows) = answer_of(&mut per_call, row)? {
            rows.push(row);
        }
    }
    per_call
        .iter()
        .map(|rows| lifecycle::turn_end_of(rows))
        .collect()
}
