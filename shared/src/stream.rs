//! Events of the client-facing streams (ARCHITECTURE.md §6), as JSON over WebSocket
//! and SSE. The same type travels through a replica's stream hub.

use serde::{Deserialize, Serialize};

use crate::{
    api::{Message, QueuedMessage},
    ids::{ChatId, Generation, MessageId},
    parts::Part,
    status::ChatStatus,
};

/// One stream event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The history up to `through_message_id` was folded into a summary the
    /// model reads instead (context compaction); the messages stay readable.
    Compaction {
        /// The chat.
        chat_id: ChatId,
        /// The newest message the summary replaced.
        through_message_id: MessageId,
    },
    /// History was rewritten (an edit): re-read the messages.
    Refresh {
        /// The chat.
        chat_id: ChatId,
    },
    /// The chat is `requires_action`: the client runs these calls and posts
    /// one result for each to `POST /chats/{id}/tool-results` before the
    /// deadline. Sent after the `requires_action` status, and again in the
    /// snapshot of a stream opened while the calls are pending.
    RequiresAction {
        /// The chat.
        chat_id: ChatId,
        /// The run that made the calls.
        generation: Generation,
        /// The pending calls, in call order.
        tool_calls: Vec<PendingToolCall>,
        /// Past this, every pending call gets an error result and the turn
        /// goes on.
        deadline: chrono::DateTime<chrono::Utc>,
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

impl StreamEvent {
    /// The `type` of the event, as on the wire (SSE event names use it).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::Part { .. } => "part",
            Self::Message { .. } => "message",
            Self::Queue { .. } => "queue",
            Self::Retry { .. } => "retry",
            Self::Error { .. } => "error",
            Self::Title { .. } => "title",
            Self::Compaction { .. } => "compaction",
            Self::Refresh { .. } => "refresh",
            Self::RequiresAction { .. } => "requires_action",
            Self::Reconnect { .. } => "reconnect",
        }
    }
}

/// A tool call the client must run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingToolCall {
    /// The call's id: its result names it as `tool_call_id`.
    pub id: String,
    /// One of the chat's `client_tools`.
    pub name: String,
    /// The arguments the model gave.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
}

/// The `error` object of error events and error responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable snake_case code.
    pub code: String,
    /// A human sentence.
    pub message: String,
}

/// Where a client is in a chat's stream: the newest message and the newest
/// part it has. Sent back on reconnect (`?after_message_id=N&after_part=G.S`,
/// or SSE `Last-Event-ID: N.G.S`) so nothing is missed or repeated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Messages with an id up to this were received.
    pub after_message_id: Option<MessageId>,
    /// Parts up to this were received.
    pub after_part: Option<PartCursor>,
}

/// A part's position: its run's generation and its seq within the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartCursor {
    /// The run.
    pub generation: Generation,
    /// The part's seq.
    pub seq: u64,
}

/// A cursor that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream cursor {0:?}: expected N, or N.G.S (message id, generation, seq)")]
pub struct CursorError(pub String);

impl std::str::FromStr for PartCursor {
    type Err = CursorError;

    /// `G.S`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || CursorError(text.to_owned());
        let (generation, seq) = text.split_once('.').ok_or_else(error)?;
        Ok(Self {
            generation: Generation(generation.parse().map_err(|_| error())?),
            seq: seq.parse().map_err(|_| error())?,
        })
    }
}

impl std::fmt::Display for PartCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.generation.0, self.seq)
    }
}

impl Cursor {
    /// Moves the cursor past `event` (messages and parts; other events do
    /// not move it).
    pub fn observe(&mut self, event: &StreamEvent) {
        let (message, part) = match event {
            StreamEvent::Message { message, .. } => (Some(message.id), None),
            StreamEvent::Part {
                generation, seq, ..
            } => (
                None,
                Some(PartCursor {
                    generation: *generation,
                    seq: *seq,
                }),
            ),
            _ => (None, None),
        };
        self.after_message_id = self.after_message_id.max(message);
        self.after_part = self.after_part.max(part);
    }

    /// The SSE event id: `N` (message id, 0 for none), or `N.G.S` once a part was seen.
    pub fn to_event_id(&self) -> String {
        let message = self.after_message_id.map_or(0, |id| id.0);
        match self.after_part {
            Some(part) => format!("{message}.{part}"),
            None => message.to_string(),
        }
    }

    /// Parses an SSE `Last-Event-ID`.
    pub fn from_event_id(text: &str) -> Result<Self, CursorError> {
        let error = || CursorError(text.to_owned());
        let (message, part) = match text.split_once('.') {
            Some((message, part)) => (
                message,
                Some(part.parse::<PartCursor>().map_err(|_| error())?),
            ),
            None => (text, None),
        };
        let message: i64 = message.trim().parse().map_err(|_| error())?;
        Ok(Self {
            after_message_id: (message > 0).then_some(MessageId(message)),
            after_part: part,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let cursor = Cursor {
            after_message_id: Some(MessageId(12)),
            after_part: Some(PartCursor {
                generation: Generation(3),
                seq: 41,
            }),
        };
        assert_eq!(cursor.to_event_id(), "12.3.41");
        assert_eq!(Cursor::from_event_id("12.3.41"), Ok(cursor));
        assert_eq!(Cursor::from_event_id("0"), Ok(Cursor::default()));
        assert_eq!(Cursor::default().to_event_id(), "0");
        assert!(Cursor::from_event_id("x.1.2").is_err());
        assert!(Cursor::from_event_id("1.2").is_err());
        assert!("3".parse::<PartCursor>().is_err());
    }
}
