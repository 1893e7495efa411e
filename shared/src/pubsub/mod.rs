//! Pubsub over PostgreSQL LISTEN/NOTIFY (ARCHITECTURE.md §5).
//!
//! Each replica has one [`PubSub`]: a dedicated listener connection (not from
//! the pool: pooled connections drop notifications) on the fixed channels of
//! [`Channel`], routing what arrives in-process to bounded subscriber queues;
//! and a batching publisher that sends everything queued within a few
//! milliseconds in one statement, from the pool, after the caller committed.
//!
//! Notices are hints. Nothing may wait on one without a polling fallback, and
//! after every reconnect subscribers get [`Delivery::Resync`] and re-read the
//! database.

mod listener;
mod metrics;
mod notice;
mod publisher;
mod subscription;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};
use tracing::Instrument;

use crate::db::Pool;
use opentelemetry::metrics::Meter;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use listener::{LOCK_POLL, LOCK_RELEASE_FLOOR, ListenerConfig};
pub use notice::{
    Channel, ChatEvent, ChatNotice, ControlNotice, MAX_PAYLOAD_BYTES, OwnerEventKind, OwnerNotice,
};
pub use publisher::PublisherConfig;
pub use subscription::{Delivery, Overflow, Subscription};

use self::{metrics::PubSubMetrics, publisher::Outgoing, subscription::Topic};
use crate::ids::{ChatId, ReplicaId, UserId};

/// Why a notice could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`]; it is never truncated.
    #[error("notification payload of {bytes} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge {
        /// The payload's size.
        bytes: usize,
    },
    /// The payload could not be encoded.
    #[error("encoding notification: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Settings of a replica's pubsub.
#[derive(Debug, Clone, Default)]
pub struct PubSubConfig {
    /// Listener keep-alive and probes.
    pub listener: ListenerConfig,
    /// Publisher batching.
    pub publisher: PublisherConfig,
    /// Queue length of each subscriber before it overflows into a resync.
    pub subscriber_capacity: SubscriberCapacity,
}

/// Per-subscriber queue lengths.
#[derive(Debug, Clone, Copy)]
pub struct SubscriberCapacity(pub usize);

impl Default for SubscriberCapacity {
    fn default() -> Self {
        Self(256)
    }
}

/// The listener's session while it is up, holding the replica's lock and
/// LISTENing. Each new session gets the next epoch: a replica that lost its
/// session may have lost its chats to recovery (ARCHITECTURE.md §4), so
/// whatever it did under an older epoch must be checked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// 1 for the first session, then one more per reconnect.
    pub epoch: u64,
    /// When it came up.
    pub since: tokio::time::Instant,
}

/// State shared by the handle, the listener and the publisher.
pub(crate) struct Shared {
    replica_id: ReplicaId,
    chats: Arc<Topic<ChatId, ChatNotice>>,
    all_chats: Arc<Topic<(), ChatNotice>>,
    owners: Arc<Topic<UserId, OwnerNotice>>,
    wake: Arc<Topic<(), ()>>,
    control: Arc<Topic<(), ControlNotice>>,
    connected: Arc<AtomicBool>,
    /// The current session, if the listener is up.
    session: tokio::sync::watch::Sender<Option<Session>>,
    /// Sessions so far.
    sessions: std::sync::atomic::AtomicU64,
    /// Cleared by tests to lose every notice (`set_publishing`).
    #[cfg(feature = "testing")]
    publishing: AtomicBool,
    outgoing: mpsc::Sender<Outgoing>,
    metrics: PubSubMetrics,
}

impl Shared {
    /// Routes one received notification. Unknown channels and payloads that
    /// do not parse are logged and dropped: they come from other versions.
    fn on_notification(&self, channel: &str, payload: &str) {
        self.metrics.received.add(1, &[]);
        let overflows = match Channel::from_name(channel) {
            Some(Channel::Wake) => self.wake.deliver(&(), &()),
            Some(Channel::Chat) => match serde_json::from_str::<ChatNotice>(payload) {
                Ok(notice) => {
                    self.chats.deliver(&notice.chat_id, &notice)
                        + self.all_chats.deliver(&(), &notice)
                }
                Err(err) => {
                    return tracing::debug!(%err, payload, "ignoring unreadable chat notice");
                }
            },
            Some(Channel::Owner) => match serde_json::from_str::<OwnerNotice>(payload) {
                Ok(notice) => self.owners.deliver(&notice.owner_id, &notice),
                Err(err) => {
                    return tracing::debug!(%err, payload, "ignoring unreadable owner notice");
                }
            },
            Some(Channel::Control) => match serde_json::from_str::<ControlNotice>(payload) {
                Ok(ControlNotice::Probe {
                    replica_id,
                    sent_at_micros,
                }) => {
                    if replica_id == self.replica_id {
                        let latency = (now_micros() - sent_at_micros).max(0) as f64 / 1e6;
                        self.metrics.latency.record(latency, &[]);
                    }
                    0
                }
                Ok(notice) => self.control.deliver(&(), &notice),
                Err(err) => {
                    return tracing::debug!(%err, payload, "ignoring unreadable control notice");
                }
            },
            None => 0,
        };
        if overflows > 0 {
            self.metrics.resyncs.add(overflows as u64, &[]);
        }
    }

    /// A new session is up (locked and LISTENing).
    fn session_started(&self) {
        let epoch = self.sessions.fetch_add(1, Ordering::AcqRel) + 1;
        self.session.send_replace(Some(Session {
            epoch,
            since: tokio::time::Instant::now(),
        }));
    }

    fn resync_all(&self) {
        self.metrics.resyncs.add(1, &[]);
        self.chats.resync_all();
        self.all_chats.resync_all();
        self.owners.resync_all();
        self.wake.resync_all();
        self.control.resync_all();
    }

    fn close_all(&self) {
        self.chats.close_all();
        self.all_chats.close_all();
        self.owners.close_all();
        self.wake.close_all();
        self.control.close_all();
    }

    fn send_probe(&self) {
        let probe = ControlNotice::Probe {
            replica_id: self.replica_id,
            sent_at_micros: now_micros(),
        };
        if let Ok(payload) = serde_json::to_string(&probe) {
            self.enqueue(Channel::Control, payload);
        }
    }

    fn enqueue(&self, channel: Channel, payload: String) {
        #[cfg(feature = "testing")]
        if !self.publishing.load(Ordering::Relaxed) {
            return;
        }
        match self.outgoing.try_send(Outgoing { channel, payload }) {
            Ok(()) => {}
            // Full: drop it (receivers poll), count it, keep the caller moving.
            Err(mpsc::error::TrySendError::Full(_)) => self.metrics.publish_dropped.add(1, &[]),
            // Closed: shutting down; nobody will hear it anyway.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A replica's handle on LISTEN/NOTIFY. Cheap to clone.
#[derive(Clone)]
pub struct PubSub {
    shared: Arc<Shared>,
    capacity: usize,
    cancel: CancellationToken,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("replica_id", &self.shared.replica_id)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl PubSub {
    /// Starts the listener (connecting to `url`) and the publisher (using
    /// `pool`) on `tracker`. They stop when `cancel` fires or [`Self::close`]
    /// is called; the publisher sends what is queued first.
    pub fn start(
        replica_id: ReplicaId,
        url: &str,
        pool: Pool,
        config: PubSubConfig,
        meter: &Meter,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let connected = Arc::new(AtomicBool::new(false));
        let metrics = PubSubMetrics::new(meter, connected.clone());
        let (outgoing, queue) = mpsc::channel(config.publisher.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            replica_id,
            chats: Topic::new(),
            all_chats: Topic::new(),
            owners: Topic::new(),
            wake: Topic::new(),
            control: Topic::new(),
            connected,
            session: tokio::sync::watch::Sender::new(None),
            sessions: std::sync::atomic::AtomicU64::new(0),
            #[cfg(feature = "testing")]
            publishing: AtomicBool::new(true),
            outgoing,
            metrics: metrics.clone(),
        });
        let cancel = cancel.child_token();
        // In the caller's span (the replica's), so their log lines name it.
        tracker.spawn(
            listener::run(
                shared.clone(),
                url.to_owned(),
                config.listener,
                cancel.clone(),
            )
            .in_current_span(),
        );
        tracker.spawn(
            publisher::run(pool, config.publisher, queue, metrics, cancel.clone())
                .in_current_span(),
        );
        // When everything stops, wake subscribers so they see the end.
        tracker.spawn({
            let shared = shared.clone();
            let cancel = cancel.clone();
            async move {
                cancel.cancelled().await;
                shared.close_all();
            }
        });
        Self {
            shared,
            capacity: config.subscriber_capacity.0,
            cancel,
        }
    }

    /// Stops the listener and the publisher (after it sent what is queued).
    pub fn close(&self) {
        self.cancel.cancel();
    }

    /// True while the listener connection is up and LISTENing.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The listener's session, while it is up: it holds the replica's
    /// advisory lock ([`crate::ids::ReplicaId::lock_key`]) and LISTENs.
    pub fn session(&self) -> Option<Session> {
        *self.shared.session.borrow()
    }

    /// Changes of [`Self::session`].
    pub fn watch_session(&self) -> tokio::sync::watch::Receiver<Option<Session>> {
        self.shared.session.subscribe()
    }

    /// Queues `payload` for `channel`. Refuses payloads over the size limit;
    /// otherwise never blocks and never fails the caller (a full queue drops
    /// the notice with a metric).
    pub fn publish<T: Serialize>(&self, channel: Channel, payload: &T) -> Result<(), PublishError> {
        let text = serde_json::to_string(payload)?;
        if text.len() > MAX_PAYLOAD_BYTES {
            return Err(PublishError::TooLarge { bytes: text.len() });
        }
        self.shared.enqueue(channel, text);
        Ok(())
    }

    /// Publishes a chat event.
    pub fn publish_chat(&self, chat_id: ChatId, event: ChatEvent) -> Result<(), PublishError> {
        self.publish(Channel::Chat, &ChatNotice { chat_id, event })
    }

    /// Publishes an owner-list event.
    pub fn publish_owner(
        &self,
        owner_id: UserId,
        chat_id: ChatId,
        kind: OwnerEventKind,
    ) -> Result<(), PublishError> {
        self.publish(
            Channel::Owner,
            &OwnerNotice {
                owner_id,
                chat_id,
                kind,
            },
        )
    }

    /// Tells every acquirer that pending work exists.
    pub fn publish_wake(&self) {
        self.shared.enqueue(Channel::Wake, String::new());
    }

    /// Publishes a control notice.
    pub fn publish_control(&self, notice: &ControlNotice) -> Result<(), PublishError> {
        self.publish(Channel::Control, notice)
    }

    /// Notices of one chat.
    pub fn subscribe_chat(&self, chat_id: ChatId) -> Subscription<ChatNotice> {
        self.shared
            .chats
            .subscribe(chat_id, self.capacity, Overflow::Resync)
    }

    /// Notices of every chat (the runtime watches interrupts of its runs this way).
    pub fn subscribe_all_chats(&self) -> Subscription<ChatNotice> {
        self.shared
            .all_chats
            .subscribe((), self.capacity * 16, Overflow::Resync)
    }

    /// Notices of one owner's chat list.
    pub fn subscribe_owner(&self, owner_id: UserId) -> Subscription<OwnerNotice> {
        self.shared
            .owners
            .subscribe(owner_id, self.capacity, Overflow::Resync)
    }

    /// Wake-ups; any number of wakes between two receives arrive as one.
    pub fn subscribe_wake(&self) -> Subscription<()> {
        self.shared.wake.subscribe((), 1, Overflow::Coalesce)
    }

    /// Configuration changes.
    pub fn subscribe_control(&self) -> Subscription<ControlNotice> {
        self.shared
            .control
            .subscribe((), self.capacity, Overflow::Resync)
    }

    /// Calls `changed` on every configuration notice and every resync (a
    /// notice may have been missed), until `stop`: how a replica's caches of
    /// rows any replica may change (tokens, models) stay true.
    pub async fn on_control_change(&self, stop: CancellationToken, mut changed: impl FnMut()) {
        let mut control = self.subscribe_control();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                delivery = control.recv() => match delivery {
                    Some(Delivery::Notice(_) | Delivery::Resync) => changed(),
                    None => return,
                },
            }
        }
    }

    /// Fault injection for tests: while false, publishes are silently
    /// dropped (as if every notification were lost).
    #[cfg(feature = "testing")]
    pub fn set_publishing(&self, enabled: bool) {
        self.shared.publishing.store(enabled, Ordering::Relaxed);
    }

    /// Number of chats with at least one local subscriber.
    pub fn subscribed_chat_count(&self) -> usize {
        self.shared.chats.key_count()
    }
}
