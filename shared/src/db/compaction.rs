//! Context compaction's one write (ARCHITECTURE.md §17): the summary of a chat's
//! history stored as a hidden message, and the messages it replaces marked
//! `compacted`, fenced like every write of a run.

use std::sync::LazyLock;

use postgres_types::Json;

use super::{DbResult, GenericClient, lifecycle::Fence, messages::Message};
use crate::{
    ids::{MessageId, ModelConfigId},
    parts::{Part, Usage},
};

/// A summary to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<'a> {
    /// It replaces every message the model saw before this one (the last
    /// user message, which stays).
    pub before: MessageId,
    /// Its parts (the summary's text).
    pub content: &'a [Part],
    /// The model that wrote it.
    pub model_config_id: ModelConfigId,
    /// The summary call's usage.
    pub usage: Usage,
    /// Its cost.
    pub cost_micros: Option<i64>,
    /// Wall time of the summary call.
    pub runtime_ms: i64,
}

/// What [`compact`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Compacted {
    /// Stored; the replaced messages are the live, model-visible ones up
    /// to `through` (inclusive).
    Stored {
        /// The summary message (`system`, visibility `model`).
        summary: Box<Message>,
        /// The newest message it replaced.
        through: MessageId,
    },
    /// Nothing before `before` was left to replace (compacted already): no
    /// summary was stored.
    NothingToReplace,
    /// The fence no longer matches: ownership was lost.
    OwnershipLost,
}

static COMPACT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH owned AS (
             UPDATE chats SET updated_at = now()
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'
             RETURNING id
         ), marked AS (
             UPDATE chat_messages m SET compacted = true FROM owned
             WHERE m.chat_id = owned.id AND m.id < $4 AND NOT m.compacted AND NOT m.deleted
               AND m.visibility <> 'user'
             RETURNING m.id
         ), step AS (
             SELECT $6::uuid AS model_config_id, $7::bigint AS input_tokens,
                    $8::bigint AS output_tokens, $9::bigint AS reasoning_tokens,
                    $10::bigint AS cache_read_tokens, $11::bigint AS cache_write_tokens,
                    $12::bigint AS cost_micros
             WHERE EXISTS (SELECT 1 FROM marked)
         ), {accounting}, summary AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, model_config_id,
                 generation, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
                 cache_write_tokens, cost_micros, runtime_ms)
             SELECT $1, 'system', 'model', $5, model_config_id, $3, input_tokens, output_tokens,
                    reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, $13
             FROM step
             RETURNING {columns}
         )
         SELECT EXISTS (SELECT 1 FROM owned) AS owned, (SELECT max(id) FROM marked) AS through, s.*
         FROM (SELECT 1) one LEFT JOIN summary s ON true",
        accounting = super::accounting::step_ctes(false),
        columns = super::messages::COLUMNS,
    )
});

/// Stores `summary` for `fence`'s chat and marks the live, model-visible
/// messages before `summary.before` `compacted`, in one fenced statement
/// that also records the summary call's cost. Nothing is stored when no
/// message is left to replace, so a run that compacts again (after a
/// recovery or an interrupt) never summarizes the same range twice.
pub async fn compact(
    db: &impl GenericClient,
    fence: &Fence,
    summary: &Summary<'_>,
) -> DbResult<Compacted> {
    let stmt = db.prepare_cached(&COMPACT).await?;
    let usage = &summary.usage;
    let row = db
        .query_one(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &summary.before,
                &Json(summary.content),
                &summary.model_config_id,
                &usage.input_tokens,
                &usage.output_tokens,
                &usage.reasoning_tokens,
                &usage.cache_read_tokens,
                &usage.cache_write_tokens,
                &summary.cost_micros,
                &summary.runtime_ms,
            ],
        )
        .await?;
    if !row.try_get::<_, bool>("owned")? {
        return Ok(Compacted::OwnershipLost);
    }
    match row.try_get::<_, Option<MessageId>>("through")? {
        Some(through) if row.try_get::<_, Option<MessageId>>("id")?.is_some() => {
            Ok(Compacted::Stored {
                summary: Box::new(Message::from_row(&row)?),
                through,
            })
        }
        _ => Ok(Compacted::NothingToReplace),
    }
}
