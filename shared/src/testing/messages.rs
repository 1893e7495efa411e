//! Stored messages built in memory, for unit tests of code that reads a
//! chat's history (the turn's ledger, a run's stream start).

use crate::{
    db::messages::Message,
    ids::{ChatId, MessageId},
    parts::Part,
    status::{MessageRole, MessageVisibility},
};

/// Message `id` of `chat_id` as the database would return it: visible to
/// users and the model, no run, no usage.
pub fn stored_message(chat_id: ChatId, id: i64, role: MessageRole, content: Vec<Part>) -> Message {
    Message {
        id: MessageId(id),
        chat_id,
        role,
        visibility: MessageVisibility::Both,
        content,
        created_by: None,
        model_config_id: None,
        generation: None,
        step: None,
        usage: Default::default(),
        cost_micros: None,
        runtime_ms: None,
        compacted: false,
        deleted: false,
        idempotency_key: None,
        created_at: chrono::Utc::now(),
    }
}
