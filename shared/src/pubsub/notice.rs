//! What travels over LISTEN/NOTIFY: small JSON payloads with ids and flags,
//! never content (ARCHITECTURE.md §5). A notice is a hint that something changed;
//! receivers re-read the database for the facts.

use serde::{Deserialize, Serialize};

use crate::{
    ids::{ChatId, Generation, MessageId, ReplicaId, UserId},
    status::ChatStatus,
};

/// Payloads larger than this are refused at publish time (PostgreSQL's own
/// limit is 8000 bytes; we keep far below it so notices stay cheap).
pub const MAX_PAYLOAD_BYTES: usize = 1024;

/// The fixed channels every replica LISTENs on. Per-chat channels are
/// avoided: a backend checks its channel list for every notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Pending work exists: acquirers wake up.
    Wake,
    /// Events of one chat ([`ChatNotice`]).
    Chat,
    /// Events for one owner's chat list ([`OwnerNotice`]).
    Owner,
    /// Configuration changes and probes ([`ControlNotice`]).
    Control,
}

impl Channel {
    /// Every channel, in LISTEN order.
    pub const ALL: [Channel; 4] = [Self::Wake, Self::Chat, Self::Owner, Self::Control];

    /// The PostgreSQL channel name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wake => "chatd_wake",
            Self::Chat => "chatd_chat",
            Self::Owner => "chatd_owner",
            Self::Control => "chatd_control",
        }
    }

    /// The channel with this PostgreSQL name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|channel| channel.name() == name)
    }
}

/// An event of one chat, published on `chatd_chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatNotice {
    /// The chat.
    pub chat_id: ChatId,
    /// What happened.
    #[serde(flatten)]
    pub event: ChatEvent,
}

/// What happened to a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The status (or owner, or generation) changed.
    Status {
        /// The new status.
        status: ChatStatus,
        /// The generation after the change.
        generation: Generation,
        /// The replica running it, when running.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_id: Option<ReplicaId>,
    },
    /// Messages with ids in `after_id + 1 ..= last_id` were committed.
    Message {
        /// Readers fetch messages with id > this (and > their own cursor).
        after_id: MessageId,
        /// The newest of them: a reader that has seen it needs no read.
        last_id: MessageId,
    },
    /// An interrupt was requested for this generation.
    Interrupt {
        /// The run to interrupt.
        generation: Generation,
    },
    /// The queue changed.
    Queue,
    /// History was rewritten (edit): readers re-read everything.
    Refresh,
    /// The worker is retrying a provider call.
    Retry {
        /// The run.
        generation: Generation,
        /// Attempt number (from 1).
        attempt: u32,
        /// Delay before the attempt.
        delay_ms: u64,
        /// Why the previous attempt failed (short).
        error: String,
    },
    /// The title changed.
    Title,
    /// The history up to `through_id` was folded into a compaction summary.
    Compaction {
        /// The newest message the summary replaced.
        through_id: MessageId,
    },
}

/// An event for an owner's chat list, published on `chatd_owner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerNotice {
    /// The owner whose list changed.
    pub owner_id: UserId,
    /// The chat that changed.
    pub chat_id: ChatId,
    /// What happened.
    pub kind: OwnerEventKind,
}

/// What happened in an owner's chat list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerEventKind {
    /// A chat was created.
    Created,
    /// A chat's status changed.
    Status,
    /// A chat's title changed.
    Title,
    /// A chat was archived or unarchived.
    Archived,
    /// A chat was deleted.
    Deleted,
}

/// A configuration change or a probe, published on `chatd_control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlNotice {
    /// Providers or model configs changed: drop cached ones.
    ModelsChanged,
    /// Users or tokens changed (revoked, role changed): drop cached logins.
    TokensChanged,
    /// The deployment's system prompt or spend limits changed, or a user's
    /// spend limit: drop cached settings.
    SettingsChanged,
    /// MCP servers changed: drop cached connections and tool lists.
    McpServersChanged,
    /// A latency probe: its sender measures notify→receive time on arrival.
    Probe {
        /// The replica that sent it (only it measures).
        replica_id: ReplicaId,
        /// Microseconds since the Unix epoch when it was sent.
        sent_at_micros: i64,
    },
}
