//! Durable events of a chat for this replica's local subscribers.
//!
//! While a chat has local subscribers, one feed per chat listens to its
//! pubsub notices and turns them into stream events in the hub: it reads new
//! messages **once** per notice and fans them out to every subscriber
//! (ARCHITECTURE.md §6, remote catch-up is coalesced), skipping the read when the
//! hub already carried those messages (the chat runs here). A lost notice
//! becomes a resync that each subscriber answers by re-reading. The feed
//! also tells its [`Follower`] every status, so the chat's run is followed
//! through the relay when another replica runs it.

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};
use tracing::Instrument;

use chatd_shared::{
    api,
    db::{
        DbError, DbResult, Pool,
        batched::{BatchStatement, Batched},
        chats,
        messages::{self, Message},
        queued_messages, tool_calls,
    },
    error_chain::Chain,
    ids::ChatId,
    pubsub::{ChatEvent, ChatNotice, Delivery, PubSub, Subscription},
    status::ChatStatus,
    stream::{ErrorBody, StreamEvent},
    sync::lock,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    follow::{Follower, RelayFollow},
    hub::StreamHub,
};

/// How long a message of a relayed run waits for the parts of its step
/// (they travel through the relay, the message through the database). Far
/// above the relay's latency (~1 ms); a relay that lags more is bypassed.
const RELAY_PATIENCE: Duration = Duration::from_secs(1);

/// Messages read per query when catching up.
pub(super) const READ_BATCH: i64 = 200;

/// A feed's read of a chat's new messages (what users see after the
/// watermark, a read batch at most), batched with other feeds' reads: one
/// `NOTIFY` carries many chats' notices, so they come in bursts.
pub(super) struct NewMessages;

impl BatchStatement for NewMessages {
    type Want = (ChatId, chatd_shared::ids::MessageId);
    type Got = Vec<Message>;
    const WRITES: bool = false;

    async fn run_each(
        client: &deadpool_postgres::Client,
        wants: &[Self::Want],
    ) -> DbResult<Vec<Self::Got>> {
        messages::visible_after_each(client, wants, READ_BATCH).await
    }
}

/// The running feeds, by chat, with how many subscribers hold each.
pub(super) struct Feeds {
    pool: Pool,
    new_messages: Arc<Batched<NewMessages>>,
    pubsub: PubSub,
    hub: Arc<StreamHub>,
    relay: Option<RelayFollow>,
    tracker: TaskTracker,
    /// The span feeds run in: the one current when the feeds were made
    /// (the replica's).
    span: tracing::Span,
    running: Mutex<HashMap<ChatId, (usize, CancellationToken)>>,
}

/// Keeps a chat's feed running; the last one dropped stops it.
pub(super) struct FeedGuard {
    feeds: Arc<Feeds>,
    chat_id: ChatId,
}

impl Feeds {
    /// No feeds yet; feeds run in the current span.
    pub(super) fn new(
        pool: Pool,
        pubsub: PubSub,
        hub: Arc<StreamHub>,
        relay: Option<RelayFollow>,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            new_messages: Batched::new(pool.clone(), tracker.clone()),
            pool,
            pubsub,
            hub,
            relay,
            tracker,
            span: tracing::Span::current(),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Makes sure `chat_id` has a feed. Its pubsub subscription exists when
    /// this returns, so a subscriber that reads the database afterwards
    /// misses nothing in between.
    pub(super) fn acquire(self: &Arc<Self>, chat_id: ChatId) -> FeedGuard {
        let mut running = lock(&self.running);
        match running.get_mut(&chat_id) {
            Some((holders, _)) => *holders += 1,
            None => {
                let stop = CancellationToken::new();
                let notices = self.pubsub.subscribe_chat(chat_id);
                let feed = Feed {
                    chat_id,
                    pool: self.pool.clone(),
                    new_messages: self.new_messages.clone(),
                    hub: self.hub.clone(),
                    follower: self
                        .relay
                        .clone()
                        .map(|relay| Follower::new(chat_id, self.hub.clone(), relay)),
                };
                // Shared by every subscriber of the chat: in the replica's
                // span, not the request's that happened to open it.
                self.tracker.spawn(
                    feed.run(notices, stop.clone())
                        .instrument(self.span.clone()),
                );
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
        let mut running = lock(&self.feeds.running);
        if let Some((holders, stop)) = running.get_mut(&self.chat_id) {
            *holders -= 1;
            if *holders == 0 {
                stop.cancel();
                running.remove(&self.chat_id);
            }
        }
    }
}

/// One chat's feed.
struct Feed {
    chat_id: ChatId,
    pool: Pool,
    new_messages: Arc<Batched<NewMessages>>,
    hub: Arc<StreamHub>,
    /// `None` without a relay: clients of chats running elsewhere get
    /// durable events only.
    follower: Option<Follower>,
}

impl Feed {
    async fn run(self, mut notices: Subscription<ChatNotice>, stop: CancellationToken) {
        let chat_id = self.chat_id;
        // Where the chat runs now: the relay needs it before any notice.
        if let Err(err) = self.follow_from_row().await {
            tracing::warn!(%chat_id, error = %Chain(&err), "stream feed could not read the chat");
        }
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                delivery = notices.recv() => delivery,
            };
            let Some(delivery) = delivery else {
                break;
            };
            let handled = async {
                match delivery {
                    Delivery::Notice(notice) => self.forward(notice.event).await,
                    Delivery::Resync => {
                        self.hub.resync(chat_id);
                        self.follow_from_row().await.map_err(Arc::new)
                    }
                }
            };
            let outcome = tokio::select! {
                _ = stop.cancelled() => break,
                outcome = handled => outcome,
            };
            if let Err(err) = outcome {
                // Subscribers re-read on their own: nothing is lost, only later.
                tracing::warn!(%chat_id, error = %Chain(&err), "stream feed could not read the database; resyncing subscribers");
                self.hub.resync(chat_id);
            }
        }
        if let Some(follower) = &self.follower {
            follower.stop();
        }
    }

    async fn follow_from_row(&self) -> Result<(), DbError> {
        let Some(follower) = &self.follower else {
            return Ok(());
        };
        let client = self.pool.get().await?;
        if let Some(chat) = chats::get(&client, self.chat_id).await? {
            follower.status(chat.status, chat.generation, chat.worker_id);
        }
        Ok(())
    }

    async fn forward(&self, event: ChatEvent) -> Result<(), Arc<DbError>> {
        if let (
            Some(follower),
            ChatEvent::Status {
                status,
                generation,
                worker_id,
            },
        ) = (&self.follower, &event)
        {
            follower.status(*status, *generation, *worker_id);
        }
        forward(
            self.chat_id,
            event,
            &self.pool,
            &self.new_messages,
            &self.hub,
        )
        .await
    }
}

/// The `requires_action` event of a chat waiting for client tool results
/// (read from the ledger), if it waits for any.
pub(super) async fn requires_action(
    chat_id: ChatId,
    pool: &Pool,
) -> Result<Option<StreamEvent>, DbError> {
    let client = pool.get().await?;
    Ok(tool_calls::pending_client_calls(&client, chat_id)
        .await?
        .map(
            |(tool_calls, generation, deadline)| StreamEvent::RequiresAction {
                chat_id,
                generation,
                tool_calls,
                deadline,
            },
        ))
}

/// Turns one notice into hub events: what changed is read from the
/// database (a notice carries ids only); new messages through
/// `new_messages`, in one statement with other chats' feeds' reads.
pub(super) async fn forward(
    chat_id: ChatId,
    event: ChatEvent,
    pool: &Pool,
    new_messages: &Arc<Batched<NewMessages>>,
    hub: &StreamHub,
) -> Result<(), Arc<DbError>> {
    match event {
        ChatEvent::Status {
            status, generation, ..
        } => {
            if status == ChatStatus::Error {
                let client = pool.get().await.map_err(DbError::from)?;
                if let Some(chat) = chats::get(&client, chat_id).await?
                    && chat.generation == generation
                    && let Some(message) = chat.last_error
                {
                    let error = ErrorBody {
                        code: chat.last_error_code.unwrap_or_else(|| "turn_failed".into()),
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
            if status == ChatStatus::RequiresAction
                && let Some(event) = requires_action(chat_id, pool).await?
            {
                hub.publish(chat_id, event);
            }
        }
        ChatEvent::Message { after_id, last_id } => {
            // Read from where every local subscriber is, never from the
            // notice's own start: notices of different writers can arrive
            // out of order, reads from the watermark cannot.
            let mut seen = hub.watermark(chat_id).unwrap_or(after_id);
            if seen >= last_id {
                return Ok(());
            }
            let mut read = Vec::new();
            loop {
                let batch = new_messages.run((chat_id, seen)).await?;
                let full = batch.len() as i64 == READ_BATCH;
                if let Some(last) = batch.last() {
                    seen = last.id;
                }
                read.extend(batch);
                if !full {
                    break;
                }
            }
            for message in &read {
                // A step of a run relayed from another replica: its parts first.
                if let (Some(generation), Some(_)) = (message.generation, message.step) {
                    hub.relayed_up_to(chat_id, generation, message.id, RELAY_PATIENCE)
                        .await;
                }
                hub.publish(
                    chat_id,
                    StreamEvent::Message {
                        chat_id,
                        message: api::Message::from(message),
                    },
                );
            }
        }
        ChatEvent::Queue => {
            let client = pool.get().await.map_err(DbError::from)?;
            let queued = queued_messages::list(&client, chat_id).await?;
            let queued = queued.iter().map(api::QueuedMessage::from).collect();
            hub.publish(chat_id, StreamEvent::Queue { chat_id, queued });
        }
        ChatEvent::Title => {
            let client = pool.get().await.map_err(DbError::from)?;
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
        ChatEvent::Compaction { through_id } => hub.publish(
            chat_id,
            StreamEvent::Compaction {
                chat_id,
                through_message_id: through_id,
            },
        ),
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

#[cfg(test)]
mod tests {
    use chatd_shared::{
        db::{
            chats::NewChat,
            messages::{NewMessage, insert},
            transitions,
        },
        ids::{Generation, MessageId, UserId},
        parts::Part,
        status::{MessageRole, UserRole},
        testing::TestDb,
    };

    use super::*;
    use crate::streams::{BufferLimits, HubItem, HubReceiver};

    fn events(receiver: &HubReceiver) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        while let Ok(Some(item)) = receiver.try_recv() {
            if let HubItem::Event(event) = item {
                events.push((*event).clone());
            }
        }
        events
    }

    fn message_ids(events: &[StreamEvent]) -> Vec<i64> {
        events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::Message { message, .. } => Some(message.id.0),
                _ => None,
            })
            .collect()
    }

    /// A chat with three user messages; returns the chat and their ids.
    async fn chat_with_messages(db: &TestDb) -> (ChatId, Vec<MessageId>) {
        let client = db.pool().get().await.unwrap();
        let owner = chatd_shared::db::users::insert(
            &client,
            UserId::new_random(),
            "feed",
            UserRole::Member,
        )
        .await
        .unwrap()
        .id;
        let labels = serde_json::json!({});
        let chat = transitions::insert(
            &client,
            &NewChat {
                id: ChatId::new_v7(),
                owner_id: owner,
                parent_chat_id: None,
                root_chat_id: None,
                title: "first",
                status: ChatStatus::Waiting,
                model_config_id: None,
                system_prompt: None,
                labels: &labels,
                tools: Default::default(),
                trace_parent: None,
            },
        )
        .await
        .unwrap();
        let mut ids = Vec::new();
        for text in ["one", "two", "three"] {
            let content = [Part::text(text)];
            let message = NewMessage {
                content: &content,
                ..Default::default()
            };
            ids.push(
                insert(&client, chat.id, MessageRole::User, &message)
                    .await
                    .unwrap()
                    .id,
            );
        }
        (chat.id, ids)
    }

    #[tokio::test]
    async fn a_notice_becomes_hub_events_read_once_from_where_subscribers_are() {
        let db = TestDb::new().await;
        let (chat, ids) = chat_with_messages(&db).await;
        let hub = StreamHub::new(
            BufferLimits::default(),
            100,
            &opentelemetry::global::meter("test"),
        );
        let subscribed = hub.subscribe(chat);
        // The subscriber read the first message itself.
        hub.snapshot_read(chat, Some(ids[0]));
        let pool = db.pool();
        let new_messages = Batched::new(pool.clone(), TaskTracker::new());

        // The notice of the third message arrives before the second's: the
        // feed reads from the watermark, so both arrive, in id order.
        let third = ChatEvent::Message {
            after_id: ids[1],
            last_id: ids[2],
        };
        forward(chat, third, pool, &new_messages, &hub)
            .await
            .unwrap();
        assert_eq!(
            message_ids(&events(&subscribed.receiver)),
            [ids[1].0, ids[2].0]
        );
        let second = ChatEvent::Message {
            after_id: ids[0],
            last_id: ids[1],
        };
        forward(chat, second, pool, &new_messages, &hub)
            .await
            .unwrap();
        assert!(events(&subscribed.receiver).is_empty(), "read once");

        forward(chat, ChatEvent::Title, pool, &new_messages, &hub)
            .await
            .unwrap();
        forward(chat, ChatEvent::Queue, pool, &new_messages, &hub)
            .await
            .unwrap();
        forward(
            chat,
            ChatEvent::Interrupt {
                generation: Generation(1),
            },
            pool,
            &new_messages,
            &hub,
        )
        .await
        .unwrap();
        let status = ChatEvent::Status {
            status: ChatStatus::Pending,
            generation: Generation(1),
            worker_id: None,
        };
        forward(chat, status, pool, &new_messages, &hub)
            .await
            .unwrap();
        let seen = events(&subscribed.receiver);
        assert!(
            matches!(
                &seen[..],
                [
                    StreamEvent::Title { title, .. },
                    StreamEvent::Queue { queued, .. },
                    StreamEvent::Status { status: ChatStatus::Pending, .. },
                ] if title == "first" && queued.is_empty()
            ),
            "{seen:?}"
        );
    }
}
