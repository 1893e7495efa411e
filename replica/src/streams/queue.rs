//! A subscriber's bounded queue. A subscriber that falls behind is cut off
//! (and told so), never allowed to block the worker or other subscribers.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use chatd_shared::{stream::StreamEvent, sync::lock};
use tokio::sync::Notify;

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

impl SubscriberQueue {
    /// The next item; `Err(Overflowed)` once the subscriber was cut off.
    pub(super) async fn recv(&self) -> Result<HubItem, Overflowed> {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.try_recv()? {
                return Ok(item);
            }
            notified.await;
        }
    }

    /// The next item if one is queued.
    pub(super) fn try_recv(&self) -> Result<Option<HubItem>, Overflowed> {
        if self.overflowed.load(Ordering::Acquire) {
            return Err(Overflowed);
        }
        Ok(lock(&self.events).pop_front())
    }
}
