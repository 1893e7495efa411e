//! What each transition tells the other replicas, decided in one place.
//!
//! An operation lists the [`Change`]s its statement made; [`announce`] turns
//! them into pubsub notices (ARCHITECTURE.md §5): ids and flags only, sent after the
//! commit, batched by the publisher. Which notices a change implies is
//! written here and nowhere else, so every transition of the same kind is
//! announced the same way and each notice goes out once.

use chatd_shared::{
    db::{chats::BecamePending, messages::Message},
    ids::{ChatId, Generation, MessageId, ReplicaId, UserId},
    pubsub::{ChatEvent, ControlNotice, OwnerEventKind, PubSub},
    status::ChatStatus,
};

/// A change that every replica must hear of: to a chat, or to what every
/// replica caches (the model catalog, logins).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// A chat was created.
    Created { chat_id: ChatId, owner_id: UserId },
    /// Messages with ids `first..=last` were committed.
    Messages {
        chat_id: ChatId,
        first: MessageId,
        last: MessageId,
    },
    /// The chat became `pending`: someone must claim it.
    Pending(BecamePending),
    /// The chat's status changed (other than to `pending`).
    Status {
        chat_id: ChatId,
        owner_id: UserId,
        status: ChatStatus,
        generation: Generation,
        worker_id: Option<ReplicaId>,
    },
    /// The chat's queue changed.
    Queue(ChatId),
    /// An interrupt of run `generation` was requested.
    Interrupt {
        chat_id: ChatId,
        generation: Generation,
    },
    /// The title changed.
    Title { chat_id: ChatId, owner_id: UserId },
    /// The history up to `through` was folded into a compaction summary.
    Compaction { chat_id: ChatId, through: MessageId },
    /// The deployment's system prompt or spend limits, or a user's spend
    /// limit, changed: every replica drops its cached settings.
    SettingsChanged,
    /// The chat was archived or restored; `pending`: restored while pending,
    /// so acquirers may claim it again.
    Archived {
        chat_id: ChatId,
        owner_id: UserId,
        pending: bool,
    },
    /// The chat was deleted.
    Deleted { chat_id: ChatId, owner_id: UserId },
    /// History was rewritten (an edit): clients re-read it.
    Refresh(ChatId),
    /// A model call of run `generation` failed and is retried.
    Retry {
        chat_id: ChatId,
        generation: Generation,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    /// Providers or model configs changed: model catalogs drop what they cached.
    ModelsChanged,
    /// A token was revoked: token caches drop what they trusted.
    TokensChanged,
    /// MCP servers changed: replicas drop their sessions and tool lists.
    McpServersChanged,
}

impl Change {
    /// The commit of `messages` (ascending ids), if there are any.
    pub(crate) fn messages<'a>(
        chat_id: ChatId,
        messages: impl IntoIterator<Item = &'a Message>,
    ) -> Option<Self> {
        let mut messages = messages.into_iter();
        let first = messages.next()?.id;
        let last = messages.last().map_or(first, |message| message.id);
        Some(Self::Messages {
            chat_id,
            first,
            last,
        })
    }
}

/// Publishes the notices `changes` imply, in order. Chats that became
/// pending (or were restored while pending) share one wake-up.
pub(crate) fn announce(pubsub: &PubSub, changes: impl IntoIterator<Item = Change>) {
    let mut woken = false;
    let mut wake = |pubsub: &PubSub| {
        if !std::mem::replace(&mut woken, true) {
            pubsub.publish_wake();
        }
    };
    // Every payload below is a few dozen bytes of ids (a retry's error is
    // cut to 300 characters by the turn loop): none can exceed the size
    // limit, so a refusal would be a bug, logged by the publisher's metric.
    for change in changes {
        match change {
            Change::Created { chat_id, owner_id } => {
                let _ = pubsub.publish_owner(owner_id, chat_id, OwnerEventKind::Created);
            }
            Change::Messages {
                chat_id,
                first,
                last,
            } => {
                let notice = ChatEvent::Message {
                    after_id: MessageId(first.0 - 1),
                    last_id: last,
                };
                let _ = pubsub.publish_chat(chat_id, notice);
            }
            Change::Pending(pending) => {
                wake(pubsub);
                let status = ChatEvent::Status {
                    status: ChatStatus::Pending,
                    generation: pending.generation,
                    worker_id: None,
                };
                let _ = pubsub.publish_chat(pending.chat_id, status);
                let _ =
                    pubsub.publish_owner(pending.owner_id, pending.chat_id, OwnerEventKind::Status);
            }
            Change::Status {
                chat_id,
                owner_id,
                status,
                generation,
                worker_id,
            } => {
                let event = ChatEvent::Status {
                    status,
                    generation,
                    worker_id,
                };
                let _ = pubsub.publish_chat(chat_id, event);
                let _ = pubsub.publish_owner(owner_id, chat_id, OwnerEventKind::Status);
            }
            Change::Queue(chat_id) => {
                let _ = pubsub.publish_chat(chat_id, ChatEvent::Queue);
            }
            Change::Interrupt {
                chat_id,
                generation,
            } => {
                let _ = pubsub.publish_chat(chat_id, ChatEvent::Interrupt { generation });
            }
            Change::Title { chat_id, owner_id } => {
                let _ = pubsub.publish_chat(chat_id, ChatEvent::Title);
                let _ = pubsub.publish_owner(owner_id, chat_id, OwnerEventKind::Title);
            }
            Change::Compaction { chat_id, through } => {
                let notice = ChatEvent::Compaction {
                    through_id: through,
                };
                let _ = pubsub.publish_chat(chat_id, notice);
            }
            Change::SettingsChanged => {
                let _ = pubsub.publish_control(&ControlNotice::SettingsChanged);
            }
            Change::Archived {
                chat_id,
                owner_id,
                pending,
            } => {
                let _ = pubsub.publish_owner(owner_id, chat_id, OwnerEventKind::Archived);
                if pending {
                    // Archived pending chats are not claimed; restored, they wait no longer.
                    wake(pubsub);
                }
            }
            Change::Deleted { chat_id, owner_id } => {
                let _ = pubsub.publish_owner(owner_id, chat_id, OwnerEventKind::Deleted);
                let _ = pubsub.publish_chat(chat_id, ChatEvent::Refresh);
            }
            Change::Refresh(chat_id) => {
                let _ = pubsub.publish_chat(chat_id, ChatEvent::Refresh);
            }
            Change::Retry {
                chat_id,
                generation,
                attempt,
                delay_ms,
                error,
            } => {
                let notice = ChatEvent::Retry {
                    generation,
                    attempt,
                    delay_ms,
                    error,
                };
                let _ = pubsub.publish_chat(chat_id, notice);
            }
            Change::ModelsChanged => {
                let _ = pubsub.publish_control(&ControlNotice::ModelsChanged);
            }
            Change::TokensChanged => {
                let _ = pubsub.publish_control(&ControlNotice::TokensChanged);
            }
            Change::McpServersChanged => {
                let _ = pubsub.publish_control(&ControlNotice::McpServersChanged);
            }
        }
    }
}
