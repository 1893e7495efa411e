//! One client's view of one chat's stream (DESIGN §6): the subscribe
//! algorithm, the snapshot, and the rules that keep every client's events
//! in order, exactly once, across reconnects.
//!
//! 1. Register with the hub and the chat's feed **before** any query.
//! 2. Read the chat, the messages after the client's cursor and the queue;
//!    queue a snapshot: status, messages, queue, buffered parts after the
//!    part cursor.
//! 3. Then merge the live events, dropping messages at or below the last id
//!    sent, parts at or below the last `(generation, seq)` sent, parts of a
//!    step whose message was sent, parts of a generation older than the
//!    newest status, and repeated statuses and retries.

use std::collections::VecDeque;

use chatd_shared::{
    api,
    db::{DbError, chats, messages, queued_messages},
    ids::{ChatId, Generation, MessageId},
    status::ChatStatus,
    stream::{Cursor, PartCursor, StreamEvent},
};

use super::{
    AppState,
    error::ApiResult,
    feed::FeedGuard,
    transport::{EventSource, Next},
};
use crate::hub::{HubItem, HubReceiver, Overflowed};

/// Messages read per query when catching up.
const READ_BATCH: i64 = 200;

/// The state of one stream subscriber.
pub struct ChatSubscriber {
    state: AppState,
    chat_id: ChatId,
    receiver: HubReceiver,
    _feed: FeedGuard,
    pending: VecDeque<StreamEvent>,
    last_message: Option<MessageId>,
    last_part: Option<PartCursor>,
    /// The newest generation a status announced.
    generation: Generation,
    last_status: Option<(ChatStatus, Generation)>,
    /// The newest `(generation, step)` whose message was sent: its parts are superseded.
    committed_step: Option<(Generation, i32)>,
    last_retry: Option<(Generation, u32)>,
    closing: bool,
}

impl ChatSubscriber {
    /// Subscribes to `chat_id` from `cursor` and prepares the snapshot.
    /// The caller checked that the chat exists and is the caller's.
    pub async fn open(state: &AppState, chat_id: ChatId, cursor: Cursor) -> ApiResult<Self> {
        let subscribed = state.hub.subscribe(chat_id);
        let feed = state.feeds.acquire(chat_id);
        let mut subscriber = Self {
            state: state.clone(),
            chat_id,
            receiver: subscribed.receiver,
            _feed: feed,
            pending: VecDeque::new(),
            last_message: cursor.after_message_id,
            last_part: cursor.after_part,
            generation: Generation(0),
            last_status: None,
            committed_step: None,
            last_retry: None,
            closing: false,
        };
        subscriber.catch_up().await?;
        if let Some((generation, parts)) = subscribed.run {
            for part in parts {
                if generation >= subscriber.generation {
                    subscriber.offer((*part.event).clone());
                }
            }
        }
        Ok(subscriber)
    }

    /// Reads status, new messages and the queue, and queues what is new.
    async fn catch_up(&mut self) -> Result<(), DbError> {
        let client = self.state.pool.get().await?;
        let Some(chat) = chats::get(&client, self.chat_id).await? else {
            self.closing = true;
            self.pending.push_back(StreamEvent::Error {
                chat_id: self.chat_id,
                error: chatd_shared::stream::ErrorBody {
                    code: "chat_deleted".into(),
                    message: "the chat was deleted".into(),
                },
            });
            return Ok(());
        };
        self.offer(StreamEvent::Status {
            chat_id: self.chat_id,
            status: chat.status,
            generation: chat.generation,
        });
        loop {
            let after = self.last_message.unwrap_or(MessageId(0));
            let batch = messages::visible_after(&client, self.chat_id, after, READ_BATCH).await?;
            let full = batch.len() as i64 == READ_BATCH;
            for message in &batch {
                self.offer(StreamEvent::Message {
                    chat_id: self.chat_id,
                    message: api::Message::from(message),
                });
            }
            if !full {
                break;
            }
        }
        // Later messages must come to us through the hub.
        self.state
            .hub
            .snapshot_read(self.chat_id, self.last_message);
        let queued = queued_messages::list(&client, self.chat_id).await?;
        self.offer(StreamEvent::Queue {
            chat_id: self.chat_id,
            queued: queued.iter().map(api::QueuedMessage::from).collect(),
        });
        Ok(())
    }

    /// Applies the ordering and dedupe rules; queues the event if it passes.
    fn offer(&mut self, event: StreamEvent) {
        match &event {
            StreamEvent::Status {
                status, generation, ..
            } => {
                // Older generations are stale; so is `running` of the
                // current one after any status of it (acquiring always
                // starts a new generation, so it can only be a late notice).
                let stale_running = *status == ChatStatus::Running
                    && *generation == self.generation
                    && self.last_status.is_some();
                if *generation < self.generation
                    || stale_running
                    || self.last_status == Some((*status, *generation))
                {
                    return;
                }
                self.generation = *generation;
                self.last_status = Some((*status, *generation));
            }
            StreamEvent::Part {
                generation,
                step,
                seq,
                ..
            } => {
                let position = PartCursor {
                    generation: *generation,
                    seq: *seq,
                };
                if *generation < self.generation
                    || self.last_part.is_some_and(|last| position <= last)
                    || self
                        .committed_step
                        .is_some_and(|(g, s)| g == *generation && *step <= s)
                {
                    return;
                }
                if *generation > self.generation {
                    // `running` of a generation always precedes its parts.
                    self.generation = *generation;
                    self.last_status = Some((ChatStatus::Running, *generation));
                    self.pending.push_back(StreamEvent::Status {
                        chat_id: self.chat_id,
                        status: ChatStatus::Running,
                        generation: *generation,
                    });
                }
                self.last_part = Some(position);
            }
            StreamEvent::Message { message, .. } => {
                if self.last_message.is_some_and(|last| message.id <= last) {
                    return;
                }
                self.last_message = Some(message.id);
                if let (Some(generation), Some(step)) = (message.generation, message.step) {
                    self.committed_step = self.committed_step.max(Some((generation, step)));
                }
            }
            StreamEvent::Retry {
                generation,
                attempt,
                ..
            } => {
                if self
                    .last_retry
                    .is_some_and(|last| last >= (*generation, *attempt))
                {
                    return;
                }
                self.last_retry = Some((*generation, *attempt));
            }
            _ => {}
        }
        self.pending.push_back(event);
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            after_message_id: self.last_message,
            after_part: self.last_part,
        }
    }

    /// The next thing to put on the wire.
    pub async fn next_event(&mut self) -> Next<StreamEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Next::Event(Box::new(event), Some(self.cursor()));
            }
            if self.closing {
                return Next::Close;
            }
            match self.receiver.recv().await {
                Ok(HubItem::Event(event)) => self.offer((*event).clone()),
                Ok(HubItem::Resync) => {
                    if self.catch_up().await.is_err() {
                        return Next::Reconnect("resync_failed");
                    }
                }
                // The status events say as much to clients.
                Ok(HubItem::RunStarted(_) | HubItem::RunEnded(_)) => {}
                Err(Overflowed) => return Next::Reconnect("slow_consumer"),
            }
        }
    }
}

impl EventSource for ChatSubscriber {
    type Event = StreamEvent;

    fn next(&mut self) -> impl std::future::Future<Output = Next<StreamEvent>> + Send {
        self.next_event()
    }

    fn reconnect(&self, reason: &str) -> StreamEvent {
        StreamEvent::Reconnect {
            chat_id: Some(self.chat_id),
            reason: reason.to_owned(),
        }
    }

    fn kind(event: &StreamEvent) -> &'static str {
        event.kind()
    }
}
