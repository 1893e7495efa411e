//! Chat operations (ARCHITECTURE.md §3, "Where transitions live"): every transition
//! of a chat is one method of [`ChatOps`]. Each runs its statement(s)
//! through the database layer, announces exactly the events the transition
//! implies ([`announce`] decides which, in one place), and returns an
//! outcome enum.
//!
//! - [`requests`]: what a client asks for: create, send (each busy
//!   behaviour), interrupt, edit and re-run, promote and delete a queued
//!   message, change (title, labels, archive), delete; and the reads the
//!   API serves, with the same visibility rule.
//! - [`worker`]: what a replica does with the chats it runs: claim, persist
//!   a step, finish a turn, hand back, the heartbeat's recovery, retries.
//! - [`waits`]: chats that wait on something outside themselves: calls
//!   recorded before they run, a run ending in `requires_action` or
//!   `waiting_on_agents`, client tool results, a subagent's end waking its
//!   parent (invariant 16).
//! - [`agents`]: subagents: spawning one from a parent's run, and an
//!   interrupt or deletion of a parent reaching its children.
//!
//! Beside the chats, the same rule holds for what admins change: [`Catalog`]
//! (providers and model configs, and the bootstrap's provider),
//! [`Accounts`] (users and tokens) and [`McpServers`], announced through the
//! same [`announce`].
//!
//! HTTP handlers parse, authorize, call one operation and map its outcome
//! to a status; the runtime and the turn loop call the worker's side. New
//! features add an operation or extend one, never a handler.

mod accounts;
mod agents;
mod announce;
mod catalog;
mod compaction;
mod diagnosis;
mod mcp_servers;
mod requests;
mod settings;
mod spend;
mod titles;
mod waits;
mod worker;

use std::sync::Arc;

use chatd_shared::{
    db::{DbError, Pool, batched::Batched, chats::Chat, sends::Sends, turn_ends::TurnEnds},
    ids::UserId,
    pubsub::PubSub,
};
use tokio_postgres::error::SqlState;

use crate::{settings::SettingsCache, webhooks::SenderHint};

pub(crate) use self::announce::Change;
pub use self::{
    accounts::{Accounts, CreateTokenOutcome, CreateUserOutcome},
    catalog::{
        Catalog, ConnectionRefused, DeleteProviderOutcome, EnsureModel, ModelConfigOutcome,
        ProviderOutcome,
    },
    diagnosis::Diagnosis,
    requests::{
        ChatChanges, CreateOutcome, EditOutcome, InterruptOutcome, ModelRefused, NewChatRequest,
        PromoteOutcome, QueuedOutcome, SendOutcome, SendRequest,
    },
    settings::{Settings, SpendLimit, UsageReport},
    spend::{Reserved, SpendRefusal},
    titles::TitleOutcome,
    worker::{BeatError, Claim},
};
pub use self::{
    agents::SpawnRequest,
    mcp_servers::{McpServerOutcome, McpServers},
};

/// Whose chats a request may see and change: the caller's own, or every
/// chat for an admin. A chat the caller may not see is reported exactly like
/// one that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Who asks.
    pub user_id: UserId,
    /// Admins see every chat.
    pub admin: bool,
}

impl Access {
    /// The owner a statement must be limited to (`None`: anyone's, for admins).
    pub fn owner_filter(self) -> Option<UserId> {
        (!self.admin).then_some(self.user_id)
    }

    /// True when the caller may see `chat`.
    pub fn may_see(self, chat: &Chat) -> bool {
        self.admin || chat.owner_id == self.user_id
    }
}

/// The transitions of chats, each announced. Cheap to clone (a pool, a
/// pubsub handle and the settings cache).
#[derive(Clone)]
pub struct ChatOps {
    pool: Pool,
    pubsub: PubSub,
    settings: Arc<SettingsCache>,
    /// Wakes this replica's webhook sender when a turn end queued deliveries.
    webhooks: SenderHint,
    /// The replica's queues of writes made together; without them each
    /// write runs alone.
    queues: Option<WriteQueues>,
}

/// A replica's queues of writes that many tasks make at the same moment,
/// each served by one statement ([`chatd_shared::db::batched`]).
#[derive(Clone)]
pub struct WriteQueues {
    /// Turn ends of owners without webhooks ([`chatd_shared::db::turn_ends`]).
    pub turn_ends: Arc<Batched<TurnEnds>>,
    /// Sends to idle chats ([`chatd_shared::db::sends`]).
    pub sends: Arc<Batched<Sends>>,
}

impl WriteQueues {
    /// Queues on `pool`, their runners on `tracker`.
    pub fn new(pool: &Pool, tracker: &tokio_util::task::TaskTracker) -> Self {
        Self {
            turn_ends: Batched::new(pool.clone(), tracker.clone()),
            sends: Batched::new(pool.clone(), tracker.clone()),
        }
    }
}

impl ChatOps {
    /// Operations on `pool`'s database, announced through `pubsub`, with a
    /// settings cache of their own that nobody watches (so never caches):
    /// a replica passes its watched one ([`Self::with_settings`]).
    pub fn new(pool: Pool, pubsub: PubSub) -> Self {
        let settings = SettingsCache::new(pool.clone());
        Self {
            pool,
            pubsub,
            settings,
            webhooks: SenderHint::default(),
            queues: None,
        }
    }

    /// The same operations writing through the replica's `queues`, with
    /// other tasks' writes of the moment.
    pub fn with_queues(mut self, queues: WriteQueues) -> Self {
        self.queues = Some(queues);
        self
    }

    /// The same operations reading the deployment's settings through `settings`.
    pub fn with_settings(mut self, settings: Arc<SettingsCache>) -> Self {
        self.settings = settings;
        self
    }

    /// The deployment's settings and users' spend limits.
    pub fn settings(&self) -> &Arc<SettingsCache> {
        &self.settings
    }

    /// What a turn end that queued webhook deliveries wakes: the sender of
    /// the replica these operations run on.
    pub fn webhook_hint(&self) -> &SenderHint {
        &self.webhooks
    }

    /// The pool the operations use (for reads that are not transitions).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pubsub the operations announce through.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    fn announce(&self, changes: impl IntoIterator<Item = Change>) {
        announce::announce(&self.pubsub, changes);
    }
}

/// True when a foreign key refused the statement (a row it names is gone,
/// or a row being deleted is still named).
fn is_foreign_key_violation(error: &DbError) -> bool {
    error.sql_state() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}
