//! In-process routing of received notices to bounded subscriber queues.
//!
//! A full queue never blocks the listener: the queue is emptied and the
//! subscriber is told to [`Delivery::Resync`] (re-read what it cares about
//! from the database), which is what a notice would have made it do anyway.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

use crate::sync::lock;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery<T> {
    /// A notice.
    Notice(T),
    /// Notices may have been missed (listener reconnected, or this queue
    /// overflowed): re-read state from the database.
    Resync,
}

/// How a subscriber's queue behaves when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Empty the queue and deliver `Resync` (events that carry information).
    Resync,
    /// Drop the new notice: one queued notice says all (wake-ups).
    Coalesce,
}

struct Slot<T> {
    queue: Mutex<VecDeque<T>>,
    capacity: usize,
    overflow: Overflow,
    resync: AtomicBool,
    closed: AtomicBool,
    ready: Notify,
}

impl<T> Slot<T> {
    /// Queues `notice`; returns true when the queue overflowed into a resync.
    fn push(&self, notice: T) -> bool {
        let mut queue = lock(&self.queue);
        let overflowed = if queue.len() < self.capacity {
            queue.push_back(notice);
            false
        } else {
            match self.overflow {
                Overflow::Coalesce => return false,
                Overflow::Resync => {
                    queue.clear();
                    self.resync.store(true, Ordering::Release);
                    true
                }
            }
        };
        drop(queue);
        self.ready.notify_one();
        overflowed
    }

    fn resync(&self) {
        lock(&self.queue).clear();
        self.resync.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Delivery<T>> {
        if self.resync.swap(false, Ordering::AcqRel) {
            return Some(Delivery::Resync);
        }
        lock(&self.queue).pop_front().map(Delivery::Notice)
    }
}

/// A registration for notices of one key (a chat, an owner) or of a whole
/// channel. Dropping it unregisters.
pub struct Subscription<T> {
    slot: Arc<Slot<T>>,
    unregister: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<T> Subscription<T> {
    /// The next delivery; `None` once the pubsub has shut down.
    pub async fn recv(&mut self) -> Option<Delivery<T>> {
        loop {
            // Register interest before checking, so a push between the check
            // and the await is not missed.
            let notified = self.slot.ready.notified();
            if let Some(delivery) = self.slot.take() {
                return Some(delivery);
            }
            if self.slot.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery<T>> {
        self.slot.take()
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Some(unregister) = self.unregister.take() {
            unregister();
        }
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

type Entries<T> = Vec<(u64, Arc<Slot<T>>)>;

/// Subscribers of one kind of notice, by key (`()` for a whole channel).
pub(crate) struct Topic<K, T> {
    subscribers: Mutex<HashMap<K, Entries<T>>>,
    next_id: AtomicU64,
}

impl<K, T> Topic<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + 'static,
{
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            subscribers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        key: K,
        capacity: usize,
        overflow: Overflow,
    ) -> Subscription<T> {
        let slot = Arc::new(Slot {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            overflow,
            resync: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ready: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers)
            .entry(key.clone())
            .or_default()
            .push((id, slot.clone()));
        let topic: Weak<Self> = Arc::downgrade(self);
        Subscription {
            slot,
            unregister: Some(Box::new(move || {
                if let Some(topic) = topic.upgrade() {
                    topic.unsubscribe(&key, id);
                }
            })),
        }
    }

    fn unsubscribe(&self, key: &K, id: u64) {
        let mut subscribers = lock(&self.subscribers);
        if let Some(entries) = subscribers.get_mut(key) {
            entries.retain(|(entry_id, _)| *entry_id != id);
            if entries.is_empty() {
                subscribers.remove(key);
            }
        }
    }

    /// Delivers to every subscriber of `key`; returns how many queues overflowed.
    pub(crate) fn deliver(&self, key: &K, notice: &T) -> usize {
        let subscribers = lock(&self.subscribers);
        let Some(entries) = subscribers.get(key) else {
            return 0;
        };
        entries
            .iter()
            .filter(|(_, slot)| slot.push(notice.clone()))
            .count()
    }

    /// Tells every subscriber to resync.
    pub(crate) fn resync_all(&self) {
        for entries in lock(&self.subscribers).values() {
            for (_, slot) in entries {
                slot.resync();
            }
        }
    }

    /// Ends every subscription (`recv` returns `None`).
    pub(crate) fn close_all(&self) {
        for entries in lock(&self.subscribers).values() {
            for (_, slot) in entries {
                slot.close();
            }
        }
    }

    /// Number of keys with at least one subscriber.
    pub(crate) fn key_count(&self) -> usize {
        lock(&self.subscribers).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_turns_into_a_single_resync() {
        let topic = Topic::<u8, u32>::new();
        let mut sub = topic.subscribe(1, 2, Overflow::Resync);
        assert_eq!(topic.deliver(&1, &10), 0);
        assert_eq!(topic.deliver(&1, &11), 0);
        assert_eq!(topic.deliver(&1, &12), 1, "third notice overflows");
        assert_eq!(sub.recv().await, Some(Delivery::Resync));
        assert_eq!(sub.try_recv(), None, "the stale notices were dropped");
        topic.deliver(&1, &13);
        assert_eq!(sub.recv().await, Some(Delivery::Notice(13)));
    }

    #[tokio::test]
    async fn coalescing_keeps_one_notice() {
        let topic = Topic::<(), ()>::new();
        let mut sub = topic.subscribe((), 1, Overflow::Coalesce);
        for _ in 0..5 {
            topic.deliver(&(), &());
        }
        assert_eq!(sub.recv().await, Some(Delivery::Notice(())));
        assert_eq!(sub.try_recv(), None);
    }

    #[tokio::test]
    async fn dropping_unsubscribes_and_close_ends_recv() {
        let topic = Topic::<u8, u32>::new();
        let sub = topic.subscribe(7, 4, Overflow::Resync);
        assert_eq!(topic.key_count(), 1);
        drop(sub);
        assert_eq!(topic.key_count(), 0);
        let mut sub = topic.subscribe(7, 4, Overflow::Resync);
        topic.close_all();
        assert_eq!(sub.recv().await, None);
    }
}
