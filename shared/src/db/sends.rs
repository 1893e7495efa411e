//! Sends to idle chats of many requests in one statement (ARCHITECTURE.md
//! §3, §6).
//!
//! Clients answer a turn's end with their next message, and turn ends come
//! together ([`super::turn_ends`]), so the sends do too: after them the
//! send was the most frequent statement a turn made alone. [`Sends`] makes
//! every send queued at that moment in one statement
//! ([`super::batched`]), each with the same conditions as
//! [`transitions::send_to_idle`]; a lone send runs that statement.
//!
//! A send that does not go through (the chat busy, archived, someone
//! else's, gone, a key used before, or another send of the batch took the
//! chat first) gets `None`, and the caller goes on to
//! [`transitions::send_locked`] as it does after a lone send.

use std::sync::LazyLock;

use postgres_types::Json;
use serde_json::value::RawValue;

use super::{
    DbError, DbResult,
    batched::{BatchStatement, answer_of},
    chats::BecamePending,
    messages::{self, Message},
    transitions::{self, Outgoing},
};
use crate::{
    ids::{ChatId, UserId},
    parts::Part,
};

/// One request's send, for [`Sends`].
#[derive(Debug, Clone)]
pub struct SendCall {
    chat_id: ChatId,
    /// The message's parts as JSON, serialized once by the caller.
    content: Box<RawValue>,
    created_by: Option<UserId>,
    idempotency_key: Option<String>,
    only_owner: Option<UserId>,
    trace_parent: Option<String>,
}

impl SendCall {
    /// [`transitions::send_to_idle`]'s arguments.
    pub fn new(
        chat_id: ChatId,
        message: &Outgoing<'_>,
        only_owner: Option<UserId>,
    ) -> DbResult<Self> {
        let content = serde_json::value::to_raw_value::<[Part]>(message.content)
            .map_err(|_| DbError::Unexpected("a message that does not serialize"))?;
        Ok(Self {
            chat_id,
            content,
            created_by: message.created_by,
            idempotency_key: message.idempotency_key.map(str::to_owned),
            only_owner,
            trace_parent: message.trace_parent.map(str::to_owned),
        })
    }

    /// The message's other fields: its content goes to
    /// [`transitions::send_to_idle_with`] as the JSON serialized once in
    /// [`Self::new`], so it is left empty here.
    fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            content: &[],
            created_by: self.created_by,
            idempotency_key: self.idempotency_key.as_deref(),
            trace_parent: self.trace_parent.as_deref(),
        }
    }
}

/// Sends to idle chats; `None` for one that did not go through (see the
/// module docs).
pub struct Sends;

impl BatchStatement for Sends {
    type Want = SendCall;
    type Got = Option<(Message, BecamePending)>;
    const WRITES: bool = true;

    async fn run_each(
        client: &deadpool_postgres::Client,
        wants: &[SendCall],
    ) -> DbResult<Vec<Self::Got>> {
        send_each(client, wants).await
    }

    async fn run_one(client: &deadpool_postgres::Client, one: &SendCall) -> DbResult<Self::Got> {
        transitions::send_to_idle_with(
            client,
            one.chat_id,
            &Json(&*one.content),
            &one.outgoing(),
            one.only_owner,
        )
        .await
    }
}

/// [`transitions::send_to_idle`]'s statement for every send of `$1…$6`
/// (arrays, one element per send, numbered `want`). Two sends to one chat:
/// the chat row is updated once, for one of them; the other finds no row.
static SEND_EACH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w AS (
             SELECT * FROM {wants}
                 AS w(chat_id, content, created_by, idempotency_key, only_owner, trace_parent,
                      want)
         ), chat AS (
             UPDATE chats c SET status = 'pending', last_error = NULL, updated_at = now(),
                 trace_parent = w.trace_parent
             FROM w
             WHERE c.id = w.chat_id AND c.status IN ('waiting', 'error') AND NOT c.archived
               AND (w.only_owner IS NULL OR c.owner_id = w.only_owner)
               AND (w.idempotency_key IS NULL OR (
                   NOT EXISTS (SELECT 1 FROM chat_messages m
                               WHERE m.chat_id = w.chat_id
                                 AND m.idempotency_key = w.idempotency_key)
                   AND NOT EXISTS (SELECT 1 FROM chat_queued_messages q
                                   WHERE q.chat_id = w.chat_id
                                     AND q.idempotency_key = w.idempotency_key)))
             RETURNING w.want, c.id, c.owner_id, c.generation
         ), inserted AS (
             INSERT INTO chat_messages (chat_id, role, visibility, content, created_by,
                                        idempotency_key)
             SELECT chat.id, 'user', 'both', w.content, w.created_by, w.idempotency_key
             FROM chat JOIN w ON w.want = chat.want
             ORDER BY chat.want
             RETURNING {message_columns}
         )
         SELECT chat.want, inserted.*, chat.owner_id AS chat_owner_id,
                chat.generation AS chat_generation
         FROM inserted JOIN chat ON chat.id = inserted.chat_id",
        message_columns = messages::COLUMNS,
        wants = super::batched::numbered_wants(&[
            "$1::uuid[]",
            "$2::jsonb[]",
            "$3::uuid[]",
            "$4::text[]",
            "$5::uuid[]",
            "$6::text[]",
        ]),
    )
});

/// Sends every message of `calls` in one statement: one answer per call,
/// in order.
pub async fn send_each(
    db: &impl super::GenericClient,
    calls: &[SendCall],
) -> DbResult<Vec<Option<(Message, BecamePending)>>> {
    let chat_ids: Vec<_> = calls.iter().map(|c| c.chat_id).collect();
    let contents: Vec<_> = calls.iter().map(|c| Json(&*c.content)).collect();
    let senders: Vec<_> = calls.iter().map(|c| c.created_by).collect();
    let keys: Vec<_> = calls.iter().map(|c| c.idempotency_key.as_deref()).collect();
    let owners: Vec<_> = calls.iter().map(|c| c.only_owner).collect();
    let traces: Vec<_> = calls.iter().map(|c| c.trace_parent.as_deref()).collect();
    let stmt = db.prepare_cached(&SEND_EACH).await?;
    let rows = db
        .query(
            &stmt,
            &[&chat_ids, &contents, &senders, &keys, &owners, &traces],
        )
        .await?;
    let mut answers: Vec<Option<(Message, BecamePending)>> = vec![None; calls.len()];
    for row in &rows {
        if let Some(answer) = answer_of(&mut answers, row)? {
            *answer = Some(transitions::sent_of(row)?);
        }
    }
    Ok(answers)
}
