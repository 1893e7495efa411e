//! `Message` and `QueuedMessage` as clients see them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    db,
    ids::{ChatId, Generation, MessageId, QueuedMessageId, UserId},
    parts::{Part, Usage},
    status::MessageRole,
};

/// A committed message of a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Its id; messages are ordered by id.
    pub id: MessageId,
    /// Its chat.
    pub chat_id: ChatId,
    /// Who it is from.
    pub role: MessageRole,
    /// Its parts.
    pub content: Vec<Part>,
    /// The user who sent it (user messages).
    pub created_by: Option<UserId>,
    /// The run that wrote it (assistant and tool messages).
    pub generation: Option<Generation>,
    /// The step of that run.
    pub step: Option<i32>,
    /// Token usage of the model call (assistant messages).
    pub usage: Usage,
    /// Cost in micro-dollars, when the model has prices.
    pub cost_micros: Option<i64>,
    /// When it was committed.
    pub created_at: DateTime<Utc>,
}

impl From<&db::messages::Message> for Message {
    fn from(row: &db::messages::Message) -> Self {
        Self {
            id: row.id,
            chat_id: row.chat_id,
            role: row.role,
            content: row.content.clone(),
            created_by: row.created_by,
            generation: row.generation,
            step: row.step,
            usage: row.usage,
            cost_micros: row.cost_micros,
            created_at: row.created_at,
        }
    }
}

/// A message waiting in a chat's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Its id; the queue is FIFO by id.
    pub id: QueuedMessageId,
    /// Its parts.
    pub content: Vec<Part>,
    /// The sender.
    pub created_by: Option<UserId>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

impl From<&db::queued_messages::QueuedMessage> for QueuedMessage {
    fn from(row: &db::queued_messages::QueuedMessage) -> Self {
        Self {
            id: row.id,
            content: row.content.clone(),
            created_by: row.created_by,
            created_at: row.created_at,
        }
    }
}
