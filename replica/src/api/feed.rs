//! Durable events of a chat for this replica's local subscribers.
//!
//! While a chat has local subscribers, one feed per chat listens to its
//! pubsub notices and turns them into stream events in the hub: it reads new
//! messages **once** per notice and fans them out to every subscriber
//! (DESIGN §6, remote catch-up is coalesced), skipping the read when the
//! hub already carried those messages (the chat runs here). A lost notice
//! becomes a resync that each subscriber answers by re-reading.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use chatd_shared::{
    api,
    db::{DbError, Pool, chats, messages, queued_messages},
    error_chain::Chain,
    ids::ChatId,
    pubsub::{ChatEvent, ChatNotice, Delivery, PubSub, Subscription},
    status::ChatStatus,
    stream::{ErrorBody, StreamEvent},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::hub::StreamHub;

/// Messages read per query when catching up.
const READ_BATCH: i64 = 200;

/// The running feeds, by chat, with how many subscribers hold each.
pub struct Feeds {
    pool: Pool,
    pubsub: PubSub,
    hub: Arc<StreamHub>,
    tracker: TaskTracker,
    running: Mutex<HashMap<ChatId, (usize, CancellationToken)>>,
}

/// Keeps a chat's feed running; the last one dropped stops it.
pub struct FeedGuard {
    feeds: Arc<Feeds>,
    chat_id: ChatId,
}

impl Feeds {
    /// No feeds yet.
    pub fn new(pool: Pool, pubsub: PubSub, hub: Arc<StreamHub>, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            pool,
            pubsub,
            hub,
            tracker,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Makes sure `chat_id` has a feed. Its pubsub subscription exists when
    /// this returns, so a subscriber that reads the database afterwards
    /// misses nothing in between.
    pub fn acquire(self: &Arc<Self>, chat_id: ChatId) -> FeedGuard {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get_mut(&chat_id) {
            Some((holders, _)) => *holders += 1,
            None => {
                let stop = CancellationToken::new();
                let notices = self.pubsub.subscribe_chat(chat_id);
                self.tracker.spawn(feed(
                    chat_id,
                    notices,
                    self.pool.clone(),
                    self.hub.clone(),
                    stop.clone(),
                ));
                running.insert(chat_id, (1, stop));
            }
        }
        FeedGuard {
            feeds: self.clone(),
            chat_id,
        }
    }
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        let mut running = self.feeds.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((holders, stop)) = running.get_mut(&self.chat_id) {
            *holders -= 1;
            if *holders == 0 {
                stop.cancel();
                running.remove(&self.chat_id);
            }
        }
    }
}

async fn feed(
    chat_id: ChatId,
    mut notices: Subscription<ChatNotice>,
    pool: Pool,
    hub: Arc<StreamHub>,
    stop: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return,
            delivery = notices.recv() => delivery,
        };
        let Some(delivery) = delivery else {
            return;
        };
        let outcome = match delivery {
            Delivery::Notice(notice) => forward(chat_id, notice.event, &pool, &hub).await,
            Delivery::Resync => {
                hub.resync(chat_id);
                Ok(())
            }
        };
        if let Err(err) = outcome {
            // Subscribers re-read on their own: nothing is lost, only later.
            tracing::warn!(%chat_id, error = %Chain(&err), "stream feed could not read the database; resyncing subscribers");
            hub.resync(chat_id);
        }
    }
}

/// Turns one notice into hub events.
async fn forward(
    chat_id: ChatId,
    event: ChatEvent,
    pool: &Pool,
    hub: &StreamHub,
) -> Result<(), DbError> {
    match event {
        ChatEvent::Status {
            status, generation, ..
        } => {
            if status == ChatStatus::Error {
                let client = pool.get().await?;
                if let Some(chat) = chats::get(&client, chat_id).await?
                    && chat.generation == generation
                    && let Some(message) = chat.last_error
                {
                    let error = ErrorBody {
                        code: "turn_failed".into(),
                        message,
                    };
                    hub.publish(chat_id, StreamEvent::Error { chat_id, error });
                }
            }
            hub.publish(
                chat_id,
                StreamEvent::Status {
                    chat_id,
                    status,
                    generation,
                },
            );
        }
        ChatEvent::Message { after_id, last_id } => {
            // Read from where every local subscriber is, never from the
            // notice's own start: notices of different writers can arrive
            // out of order, reads from the watermark cannot.
            let mut seen = hub.watermark(chat_id).unwrap_or(after_id);
            if seen >= last_id {
                return Ok(());
            }
            let client = pool.get().await?;
            loop {
                let batch = messages::visible_after(&client, chat_id, seen, READ_BATCH).await?;
                let full = batch.len() as i64 == READ_BATCH;
                for message in &batch {
                    hub.publish(
                        chat_id,
                        StreamEvent::Message {
                            chat_id,
                            message: api::Message::from(message),
                        },
                    );
                    seen = message.id;
                }
                if !full {
                    break;
                }
            }
        }
        ChatEvent::Queue => {
            let client = pool.get().await?;
            let queued = queued_messages::list(&client, chat_id).await?;
            let queued = queued.iter().map(api::QueuedMessage::from).collect();
            hub.publish(chat_id, StreamEvent::Queue { chat_id, queued });
        }
        ChatEvent::Title => {
            let client = pool.get().await?;
            if let Some(chat) = chats::get(&client, chat_id).await? {
                hub.publish(
                    chat_id,
                    StreamEvent::Title {
                        chat_id,
                        title: chat.title,
                    },
                );
            }
        }
        ChatEvent::Refresh => hub.publish(chat_id, StreamEvent::Refresh { chat_id }),
        ChatEvent::Retry {
            generation,
            attempt,
            delay_ms,
            error,
        } => {
            hub.publish(
                chat_id,
                StreamEvent::Retry {
                    chat_id,
                    generation,
                    attempt,
                    delay_ms,
                    error,
                },
            );
        }
        ChatEvent::Interrupt { .. } => {}
    }
    Ok(())
}
