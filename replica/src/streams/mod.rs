//! Streams (ARCHITECTURE.md §6, §7): parts and messages for local subscribers,
//! wherever the chat runs. This module owns the whole path of a token from
//! the turn loop to a client, on this replica or through the relay:
//!
//! - [`hub`]: per chat, the run buffered here ([`buffer`]: this replica's
//!   own, or one relayed from its worker) and the local subscribers, each
//!   with a bounded [`queue`].
//! - [`run_stream`]: the turn loop's handle on its run (parts, committed
//!   messages, retries).
//! - [`feed`]: durable events (pubsub notices) turned into stream events,
//!   read once per notice for every local subscriber (many chats' reads
//!   in one statement, `chatd_shared::db::batched`).
//! - [`follow`]: the decision to follow a run on a peer through the relay.
//! - [`relay`]: the hub as the relay crate's source and sink.
//! - [`subscriber`]: one client's chat stream (snapshot, then live events,
//!   in order and exactly once); [`watch`]: one client's chat list.
//!
//! The API only opens a subscriber here ([`Streams::open_chat`],
//! [`Streams::watch_chats`]) and writes what it yields to a transport.

pub mod buffer;
mod feed;
pub mod follow;
pub mod hub;
pub mod queue;
pub mod relay;
pub mod run_stream;
pub mod subscriber;
pub mod watch;

use std::sync::Arc;

use chatd_shared::{
    db::{DbError, Pool},
    ids::{ChatId, UserId},
    pubsub::PubSub,
    stream::Cursor,
};
use tokio_util::task::TaskTracker;

use self::feed::Feeds;
pub use self::{
    buffer::{BufferLimits, BufferedPart},
    follow::RelayFollow,
    hub::{HubReceiver, RunSnapshot, StreamHub, Subscribed},
    queue::{HubItem, Overflowed},
    run_stream::RunStream,
    subscriber::ChatSubscriber,
    watch::ChatListWatcher,
};

/// What a stream yields next.
pub enum Next<E> {
    /// Send this event; with the client's cursor after it, when the stream has one.
    Event(Box<E>, Option<Cursor>),
    /// Send a `reconnect` event with this reason, then close.
    Reconnect(&'static str),
    /// Close (what needed saying was said).
    Close,
}

/// A replica's streams: the hub, and the feeds of chats with local
/// subscribers.
pub struct Streams {
    pool: Pool,
    pubsub: PubSub,
    hub: Arc<StreamHub>,
    feeds: Arc<Feeds>,
}

impl Streams {
    /// Streams over `hub`, reading what notices announce from `pool`, and
    /// following runs on peers through `relay` (`None`: clients of chats
    /// running elsewhere get durable events only). Feeds run on `tracker`.
    pub fn new(
        pool: Pool,
        pubsub: PubSub,
        hub: Arc<StreamHub>,
        relay: Option<RelayFollow>,
        tracker: TaskTracker,
    ) -> Self {
        let feeds = Feeds::new(pool.clone(), pubsub.clone(), hub.clone(), relay, tracker);
        Self {
            pool,
            pubsub,
            hub,
            feeds,
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.hub
    }

    /// Opens chat `chat_id`'s stream from `cursor` (the caller checked the
    /// client may see it): registers with the hub and the chat's feed
    /// before reading anything, then prepares the snapshot.
    pub async fn open_chat(
        &self,
        chat_id: ChatId,
        cursor: Cursor,
    ) -> Result<ChatSubscriber, DbError> {
        let subscribed = self.hub.subscribe(chat_id);
        let feed = self.feeds.acquire(chat_id);
        ChatSubscriber::open(
            self.pool.clone(),
            self.hub.clone(),
            chat_id,
            cursor,
            (subscribed, feed),
        )
        .await
    }

    /// Opens `owner`'s chat-list stream.
    pub fn watch_chats(&self, owner: UserId) -> ChatListWatcher {
        ChatListWatcher::new(self.pool.clone(), self.pubsub.subscribe_owner(owner))
    }
}
