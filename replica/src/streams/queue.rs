//! A subscriber's bounded queue. A subscriber that falls behind is cut off
//! (and told so), never allowed to block the worker or other subscribers.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use chatd_shared::{ids::ChatId, stream::StreamEvent, sync::lock};
use tokio::sync::Notify;

use super::hub::StreamHub;

/// What a local subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum HubItem {
    /// An event to send (after the subscriber's own dedupe and ordering rules).
    Event(Arc<StreamEvent>),
    /// Notifications may have been lost: re-read the chat from the database.
    Resync,
    /// This replica started running the chat under this generation (the
    /// relay serves its parts to peers from here on).
    RunStarted(chatd_shared::ids::Generation),
    /// This replica's run of this generation ended.
    RunEnded(chatd_shared::ids::Generation),
}

/// One subscriber's bounded queue of items.
pub(super) struct SubscriberQueue {
    events: Mutex<VecDeque<HubItem>>,
    capacity: usize,
    overflowed: AtomicBool,
    ready: Notify,
}

impl SubscriberQueue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            events: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            overflowed: AtomicBool::new(false),
            ready: Notify::new(),
        }
    }

    /// Queues an item; false when the queue is full (the subscriber is cut off).
    pub(super) fn push(&self, event: HubItem) -> bool {
        let mut events = lock(&self.events);
        if events.len() >= self.capacity {
            events.clear();
            drop(events);
            self.overflowed.store(true, Ordering::Release);
            self.ready.notify_one();
            return false;
        }
        events.push_back(event);
        drop(events);
        self.ready.notify_one();
        true
    }
}

/// The subscriber fell behind and was cut off; it must resume from its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber fell behind")]
pub struct Overflowed;

/// Receives a subscriber's events. Dropping it unsubscribes.
pub struct HubReceiver {
    queue: Arc<SubscriberQueue>,
    hub: Arc<StreamHub>,
    chat_id: ChatId,
    id: u64,
}

impl HubReceiver {
    pub(super) fn new(
        queue: Arc<SubscriberQueue>,
        hub: Arc<StreamHub>,
        chat_id: ChatId,
        id: u64,
    ) -> Self {
        Self {
            queue,
            hub,
            chat_id,
            id,
        }
    }

    /// The next item; `Err(Overflowed)` once the subscriber was cut off.
    pub async fn recv(&mut self) -> Result<HubItem, Overflowed> {
        loop {
            let notified = self.queue.ready.notified();
            if let Some(event) = self.try_recv()? {
                return Ok(event);
            }
            notified.await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&self) -> Result<Option<HubItem>, Overflowed> {
        if self.queue.overflowed.load(Ordering::Acquire) {
            return Err(Overflowed);
        }
        Ok(lock(&self.queue.events).pop_front())
    }
}

impl Drop for HubReceiver {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.chat_id, self.id);
    }
}
