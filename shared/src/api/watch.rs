//! Events of `GET /chats/watch`: the caller's chat list as it changes.

use serde::{Deserialize, Serialize};

use super::Chat;
use crate::ids::ChatId;

/// What happened to a chat in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatchKind {
    /// It was created.
    Created,
    /// Its status changed.
    Status,
    /// Its title changed.
    Title,
    /// It was archived or restored.
    Archived,
}

/// One chat-list event.
// An event is made once per notice and written out at once: a smaller
// `Deleted` or `Refresh` would save nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    /// A chat was created or changed; `chat` is how it is now.
    Chat {
        /// What changed.
        kind: WatchKind,
        /// The chat now.
        chat: Chat,
    },
    /// A chat was deleted.
    Deleted {
        /// The chat.
        chat_id: ChatId,
    },
    /// The list may have changed in ways not reported (the server lost
    /// notifications): re-read it with `GET /chats`.
    Refresh,
    /// The server closes this stream; reconnect to go on.
    Reconnect {
        /// Why.
        reason: String,
    },
}
