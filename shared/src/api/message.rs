//! `Message` and `QueuedMessage` as clients see them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::content;
use crate::{
    db,
    ids::{ChatId, Generation, MessageId, QueuedMessageId, UserId},
    parts::{Part, Usage},
    status::MessageRole,
};

/// Longest `Idempotency-Key` (characters).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A committed message of a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A page of messages (`GET /chats/{id}/messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageList {
    /// Messages in ascending id order.
    pub messages: Vec<Message>,
    /// True when older messages exist (pass the first id as `before_id`).
    pub has_more: bool,
}

/// What to do with a message sent while the chat is busy (ARCHITECTURE.md §3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BusyBehavior {
    /// Append to the queue (202); it runs after the current turn.
    #[default]
    Queue,
    /// Append to the queue and interrupt the current turn, so it runs next.
    Interrupt,
    /// Refuse with 409.
    Reject,
}

/// `POST /chats/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The message's parts (or use `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = content::content_field_schema)]
    pub content: Option<Vec<Part>>,
    /// The message as plain text (or use `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = content::text_field_schema)]
    pub text: Option<String>,
    /// What to do if the chat is busy (default `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_behavior: Option<BusyBehavior>,
    /// Switch the chat to this model from this message on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_config_id: Option<crate::ids::ModelConfigId>,
    /// Replace the tools the chat's client runs, from this message on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub client_tools: Option<Vec<crate::tools::ClientTool>>,
}

/// The answer to a send: the committed message (201), or the queued one (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SendResult {
    /// The chat was idle: the message is committed and a turn starts.
    Sent {
        /// The user message.
        message: Message,
    },
    /// The chat was busy: the message waits in the queue.
    Queued {
        /// The queued message.
        queued: QueuedMessage,
    },
}

/// `PATCH /chats/{id}/messages/{message_id}`: replace a user message and re-run from it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    /// The new parts (or use `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = content::content_field_schema)]
    pub content: Option<Vec<Part>>,
    /// The new text (or use `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = content::text_field_schema)]
    pub text: Option<String>,
}

/// `GET /chats/{id}/queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueList {
    /// Queued messages in the order they will run.
    pub queued: Vec<QueuedMessage>,
}
