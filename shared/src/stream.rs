//! Events of the client-facing streams (DESIGN §6), as JSON over WebSocket
//! and SSE. The same type travels through a replica's stream hub.

use serde::{Deserialize, Serialize};

use crate::{
    api::{Message, QueuedMessage},
    ids::{ChatId, Generation},
    parts::Part,
    status::ChatStatus,
};

/// One stream event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The chat's status (and generation) changed. `running` of generation G
    /// always precedes the parts of G.
    Status {
        /// The chat.
        chat_id: ChatId,
        /// Its status.
        status: ChatStatus,
        /// Its generation.
        generation: Generation,
    },
    /// A piece of the step in progress (not durable). A message of the same
    /// generation and step supersedes the parts of that step.
    Part {
        /// The chat.
        chat_id: ChatId,
        /// The run.
        generation: Generation,
        /// The step of the run this part belongs to.
        step: i32,
        /// Position within the run: strictly increasing, never repeated.
        seq: u64,
        /// The part or delta.
        part: Part,
    },
    /// A committed message.
    Message {
        /// The chat.
        chat_id: ChatId,
        /// The message.
        message: Message,
    },
    /// The queue, as it is now.
    Queue {
        /// The chat.
        chat_id: ChatId,
        /// Queued messages, oldest first.
        queued: Vec<QueuedMessage>,
    },
    /// The worker retries a provider call; drop the parts of the step in progress.
    Retry {
        /// The chat.
        chat_id: ChatId,
        /// The run.
        generation: Generation,
        /// Attempt number about to be made (2 for the first retry).
        attempt: u32,
        /// Delay before it.
        delay_ms: u64,
        /// What went wrong.
        error: String,
    },
    /// The turn failed.
    Error {
        /// The chat.
        chat_id: ChatId,
        /// What went wrong.
        error: ErrorBody,
    },
    /// The title changed.
    Title {
        /// The chat.
        chat_id: ChatId,
        /// The new title.
        title: String,
    },
    /// History was rewritten (an edit): re-read the messages.
    Refresh {
        /// The chat.
        chat_id: ChatId,
    },
    /// The server closes this stream; reconnect (with the cursor) to go on.
    Reconnect {
        /// The chat, on chat streams.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chat_id: Option<ChatId>,
        /// Why: `replica_shutting_down`, `slow_consumer`, …
        reason: String,
    },
}

/// The `error` object of error events and error responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable snake_case code.
    pub code: String,
    /// A human sentence.
    pub message: String,
}
