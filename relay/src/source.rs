//! What the relay needs from the replica: where parts come from (B), where
//! they go (A), and where peers listen.
//!
//! Why traits: the stream hub and the `replicas` table live in the replica
//! crate, which depends on this one (`replica → relay`), never the other way.
//! These four traits are the only seam between the two crates; the replica
//! implements them in `replica/src/streams/relay.rs`, and the relay's own
//! tests implement them with scripted workers and sinks.

use chatd_shared::ids::{ChatId, Generation, MessageId, ReplicaId};

use crate::protocol::RelayPart;

/// Something that happened in a chat, as the relay server sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// A part of run `generation`.
    Part {
        /// The run.
        generation: Generation,
        /// The part.
        part: RelayPart,
    },
    /// Messages of run `generation` up to `through` were committed.
    Committed {
        /// The run.
        generation: Generation,
        /// The newest committed message.
        through: MessageId,
    },
    /// This replica started running the chat under `generation`.
    RunStarted(Generation),
    /// This replica's run of `generation` ended.
    RunEnded(Generation),
    /// The watcher fell behind and was cut off.
    Overflowed,
    /// Anything else (durable events travel another way).
    Other,
}

/// Items of one watched chat. A trait object because the hub's receiver
/// type belongs to the replica crate (see the module docs).
#[async_trait::async_trait]
pub trait WatchItems: Send {
    /// The next item.
    async fn next(&mut self) -> SourceItem;
    /// The next item if one is ready now (to batch parts into one frame).
    fn try_next(&mut self) -> Option<SourceItem>;
}

/// A watched chat: the run running here now (if any) with its buffered
/// parts, then what happens next. Registered before the snapshot was taken,
/// so nothing falls in between.
pub struct Watch {
    /// `(generation, parts)` of the run this replica runs now.
    pub run: Option<(Generation, Vec<RelayPart>)>,
    /// The newest message committed in the chat so far.
    pub committed: Option<MessageId>,
    /// The generation asked for already ran here and ended.
    pub ended: bool,
    /// Live items.
    pub items: Box<dyn WatchItems>,
}

/// Where a worker replica's parts come from: its stream hub, which the
/// relay cannot name (see the module docs).
pub trait PartSource: Send + Sync + 'static {
    /// Starts watching `chat_id` for its run `generation`.
    fn watch(&self, chat_id: ChatId, generation: Generation) -> Watch;
}

/// Where a following replica delivers parts: its stream hub, which the
/// relay cannot name (see the module docs).
pub trait PartSink: Send + Sync + 'static {
    /// Parts of `chat_id`'s run `generation` (seq ascending, never repeated).
    fn parts(&self, chat_id: ChatId, generation: Generation, parts: &[RelayPart]);
    /// That run's messages up to `through` were committed, after every
    /// part of their steps was delivered.
    fn committed(&self, chat_id: ChatId, generation: Generation, through: MessageId);
    /// That run sends no more parts.
    fn ended(&self, chat_id: ChatId, generation: Generation);
}

/// Where peers' relay listeners are: the `replicas` table, read through the
/// replica's pool (the relay holds no database handle of its own).
#[async_trait::async_trait]
pub trait PeerDirectory: Send + Sync + 'static {
    /// The relay URL of `replica` (`ws://host:port`); `refresh` skips any
    /// cache (after a failed dial). `None` when the replica is gone or has no relay.
    async fn relay_url(&self, replica: ReplicaId, refresh: bool) -> Option<String>;
}
