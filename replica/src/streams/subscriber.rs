//! One client's view of one chat's stream (ARCHITECTURE.md §6): the subscribe
//! algorithm, the snapshot, and the rules that keep every client's events
//! in order, exactly once, across reconnects.
//!
//! 1. Register with the hub and the chat's feed **before** any query.
//! 2. Read the chat, the messages after the client's cursor and the queue;
//!    queue a snapshot: status, messages, queue, buffered parts after the
//!    part cursor.
//! 3. Then merge the live events through [`ClientOrder`].

use std::collections::VecDeque;

use chatd_shared::{
    api,
    db::{DbError, Pool, chats, messages, queued_messages},
    ids::{ChatId, Generation, MessageId},
    status::ChatStatus,
    stream::{Cursor, ErrorBody, PartCursor, StreamEvent},
};

use super::{
    Next,
    feed::{FeedGuard, READ_BATCH},
    hub::{HubReceiver, Subscribed},
    queue::{HubItem, Overflowed},
};

/// What to do with an event offered to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// It is a repeat, stale, or superseded: drop it.
    Drop,
    /// Send it.
    Send,
    /// A part of a newer generation than any status sent: send `running` of
    /// that generation first (invariant 1), then the part.
    RunningFirst(Generation),
}

/// What one client was sent, and so what may follow: messages above the
/// last id sent; parts above the last `(generation, seq)` sent, of no
/// generation older than the newest status, and not of a step whose message
/// was sent; statuses and retries not seen before.
#[derive(Debug, Clone)]
pub(super) struct ClientOrder {
    last_message: Option<MessageId>,
    last_part: Option<PartCursor>,
    /// The newest generation a status announced.
    generation: Generation,
    last_status: Option<(ChatStatus, Generation)>,
    /// The newest `(generation, step)` whose message was sent: its parts are superseded.
    committed_step: Option<(Generation, i32)>,
    last_retry: Option<(Generation, u32)>,
    /// The run whose `requires_action` was sent (one per suspension: the
    /// next run has a newer generation).
    last_action: Option<Generation>,
}

impl ClientOrder {
    /// A client that has seen everything up to `cursor`.
    pub(super) fn new(cursor: Cursor) -> Self {
        Self {
            last_message: cursor.after_message_id,
            last_part: cursor.after_part,
            generation: Generation(0),
            last_status: None,
            committed_step: None,
            last_retry: None,
            last_action: None,
        }
    }

    /// Where the client is, to resume from.
    pub(super) fn cursor(&self) -> Cursor {
        Cursor {
            after_message_id: self.last_message,
            after_part: self.last_part,
        }
    }

    /// The newest message sent.
    fn last_message(&self) -> Option<MessageId> {
        self.last_message
    }

    /// Decides about `event` and, when it is sent, records it.
    pub(super) fn admit(&mut self, event: &StreamEvent) -> Admit {
        match event {
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
                    return Admit::Drop;
                }
                self.generation = *generation;
                self.last_status = Some((*status, *generation));
                Admit::Send
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
                    return Admit::Drop;
                }
                self.last_part = Some(position);
                if *generation > self.generation {
                    // `running` of a generation always precedes its parts.
                    self.generation = *generation;
                    self.last_status = Some((ChatStatus::Running, *generation));
                    return Admit::RunningFirst(*generation);
                }
                Admit::Send
            }
            StreamEvent::Message { message, .. } => {
                if self.last_message.is_some_and(|last| message.id <= last) {
                    return Admit::Drop;
                }
                self.last_message = Some(message.id);
                if let (Some(generation), Some(step)) = (message.generation, message.step) {
                    self.committed_step = self.committed_step.max(Some((generation, step)));
                }
                Admit::Send
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
                    return Admit::Drop;
                }
                self.last_retry = Some((*generation, *attempt));
                Admit::Send
            }
            StreamEvent::RequiresAction { generation, .. } => {
                if self.last_action.is_some_and(|last| last >= *generation) {
                    return Admit::Drop;
                }
                self.last_action = Some(*generation);
                Admit::Send
            }
            _ => Admit::Send,
        }
    }
}

/// The state of one stream subscriber.
pub struct ChatSubscriber {
    pool: Pool,
    hub: std::sync::Arc<super::hub::StreamHub>,
    chat_id: ChatId,
    receiver: HubReceiver,
    _feed: FeedGuard,
    pending: VecDeque<StreamEvent>,
    order: ClientOrder,
    closing: bool,
    /// A queued item [`Self::ready_event`] took but could not handle
    /// without waiting (a resync reads the database): next for
    /// [`Self::next_event`].
    deferred: Option<HubItem>,
}

impl ChatSubscriber {
    /// Subscribes to `chat_id` from `cursor` and prepares the snapshot.
    /// `subscribed` and `feed` were registered before this reads anything.
    pub(super) async fn open(
        pool: Pool,
        hub: std::sync::Arc<super::hub::StreamHub>,
        chat_id: ChatId,
        cursor: Cursor,
        (subscribed, feed): (Subscribed, FeedGuard),
    ) -> Result<Self, DbError> {
        let mut subscriber = Self {
            pool,
            hub,
            chat_id,
            receiver: subscribed.receiver,
            _feed: feed,
            pending: VecDeque::new(),
            order: ClientOrder::new(cursor),
            closing: false,
            deferred: None,
        };
        subscriber.catch_up().await?;
        if let Some(run) = subscribed.run {
            for part in run.parts() {
                subscriber.offer((*part.event).clone());
            }
        }
        Ok(subscriber)
    }

    /// The chat this subscriber watches.
    pub fn chat_id(&self) -> ChatId {
        self.chat_id
    }

    /// Reads status, new messages and the queue, and queues what is new.
    async fn catch_up(&mut self) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        let Some(chat) = chats::get(&client, self.chat_id).await? else {
            self.closing = true;
            self.pending.push_back(StreamEvent::Error {
                chat_id: self.chat_id,
                error: ErrorBody {
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
            let after = self.order.last_message().unwrap_or(MessageId(0));
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
        self.hub
            .snapshot_read(self.chat_id, self.order.last_message());
        let queued = queued_messages::list(&client, self.chat_id).await?;
        self.offer(StreamEvent::Queue {
            chat_id: self.chat_id,
            queued: queued.iter().map(api::QueuedMessage::from).collect(),
        });
        drop(client);
        // A client that opens the stream while the chat waits for it learns what to run.
        if chat.status == ChatStatus::RequiresAction
            && let Some(event) = super::feed::requires_action(self.chat_id, &self.pool).await?
        {
            self.offer(event);
        }
        Ok(())
    }

    /// Applies the ordering and dedupe rules; queues the event if it passes.
    fn offer(&mut self, event: StreamEvent) {
        match self.order.admit(&event) {
            Admit::Drop => {}
            Admit::Send => self.pending.push_back(event),
            Admit::RunningFirst(generation) => {
                self.pending.push_back(StreamEvent::Status {
                    chat_id: self.chat_id,
                    status: ChatStatus::Running,
                    generation,
                });
                self.pending.push_back(event);
            }
        }
    }

    /// The next thing to put on the wire.
    pub async fn next_event(&mut self) -> Next<StreamEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Next::Event(Box::new(event), Some(self.order.cursor()));
            }
            if self.closing {
                return Next::Close;
            }
            let item = match self.deferred.take() {
                Some(item) => Ok(item),
                None => self.receiver.recv().await,
            };
            match item {
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

    /// The next event if one is ready now, without waiting and without
    /// the database, so a transport can put several events in one write
    /// (ARCHITECTURE.md §6). Whatever needs more (a resync, a subscriber
    /// cut off, the end) is left for [`Self::next_event`].
    pub fn ready_event(&mut self) -> Option<Box<StreamEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Box::new(event));
            }
            if self.closing || self.deferred.is_some() {
                return None;
            }
            match self.receiver.try_recv() {
                Ok(Some(HubItem::Event(event))) => self.offer((*event).clone()),
                Ok(Some(HubItem::RunStarted(_) | HubItem::RunEnded(_))) => {}
                Ok(Some(item)) => {
                    self.deferred = Some(item);
                    return None;
                }
                Ok(None) | Err(Overflowed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chatd_shared::parts::Part;

    use super::*;

    fn chat() -> ChatId {
        ChatId::from(uuid::Uuid::nil())
    }

    fn status(status: ChatStatus, generation: i64) -> StreamEvent {
        StreamEvent::Status {
            chat_id: chat(),
            status,
            generation: Generation(generation),
        }
    }

    fn part(generation: i64, step: i32, seq: u64) -> StreamEvent {
        StreamEvent::Part {
            chat_id: chat(),
            generation: Generation(generation),
            step,
            seq,
            part: Part::TextDelta { text: "x".into() },
        }
    }

    fn message(id: i64, generation: Option<i64>, step: Option<i32>) -> StreamEvent {
        StreamEvent::Message {
            chat_id: chat(),
            message: api::Message {
                id: MessageId(id),
                chat_id: chat(),
                role: chatd_shared::status::MessageRole::Assistant,
                content: vec![Part::text("done")],
                created_by: None,
                generation: generation.map(Generation),
                step,
                usage: Default::default(),
                cost_micros: None,
                created_at: chrono::Utc::now(),
            },
        }
    }

    #[test]
    fn parts_and_messages_pass_once_in_order() {
        let mut order = ClientOrder::new(Cursor::default());
        assert_eq!(order.admit(&status(ChatStatus::Running, 1)), Admit::Send);
        assert_eq!(order.admit(&part(1, 0, 0)), Admit::Send);
        assert_eq!(order.admit(&part(1, 0, 1)), Admit::Send);
        assert_eq!(order.admit(&part(1, 0, 1)), Admit::Drop, "a repeat");
        assert_eq!(order.admit(&part(1, 0, 0)), Admit::Drop, "out of order");
        assert_eq!(order.admit(&message(5, Some(1), Some(0))), Admit::Send);
        assert_eq!(order.admit(&message(5, Some(1), Some(0))), Admit::Drop);
        assert_eq!(
            order.admit(&message(4, None, None)),
            Admit::Drop,
            "older id"
        );
        assert_eq!(
            order.admit(&part(1, 0, 2)),
            Admit::Drop,
            "a part of a step whose message was sent"
        );
        assert_eq!(order.admit(&part(1, 1, 3)), Admit::Send);
        assert_eq!(
            order.cursor(),
            Cursor {
                after_message_id: Some(MessageId(5)),
                after_part: Some(PartCursor {
                    generation: Generation(1),
                    seq: 3
                }),
            }
        );
    }

    #[test]
    fn a_newer_generation_starts_with_running_and_old_parts_never_follow_it() {
        let mut order = ClientOrder::new(Cursor::default());
        assert_eq!(order.admit(&status(ChatStatus::Running, 1)), Admit::Send);
        assert_eq!(order.admit(&part(1, 0, 5)), Admit::Send);
        // Recovered elsewhere: generation 3's first part arrives before its status.
        assert_eq!(
            order.admit(&part(3, 0, 0)),
            Admit::RunningFirst(Generation(3))
        );
        assert_eq!(
            order.admit(&status(ChatStatus::Running, 3)),
            Admit::Drop,
            "running of 3 was sent already"
        );
        assert_eq!(
            order.admit(&part(1, 0, 6)),
            Admit::Drop,
            "generation 1 is over"
        );
        assert_eq!(order.admit(&status(ChatStatus::Pending, 2)), Admit::Drop);
        assert_eq!(order.admit(&status(ChatStatus::Waiting, 3)), Admit::Send);
        assert_eq!(
            order.admit(&status(ChatStatus::Running, 3)),
            Admit::Drop,
            "a late running of a run that ended"
        );
    }

    #[test]
    fn a_resumed_client_gets_only_what_is_after_its_cursor() {
        let mut order = ClientOrder::new(Cursor {
            after_message_id: Some(MessageId(10)),
            after_part: Some(PartCursor {
                generation: Generation(2),
                seq: 7,
            }),
        });
        assert_eq!(order.admit(&message(10, None, None)), Admit::Drop);
        assert_eq!(order.admit(&message(11, None, None)), Admit::Send);
        assert_eq!(order.admit(&status(ChatStatus::Running, 2)), Admit::Send);
        assert_eq!(order.admit(&part(2, 1, 7)), Admit::Drop);
        assert_eq!(order.admit(&part(2, 1, 8)), Admit::Send);
    }

    #[test]
    fn retries_pass_once() {
        let mut order = ClientOrder::new(Cursor::default());
        let retry = |attempt| StreamEvent::Retry {
            chat_id: chat(),
            generation: Generation(1),
            attempt,
            delay_ms: 10,
            error: "rate limited".into(),
        };
        assert_eq!(order.admit(&retry(2)), Admit::Send);
        assert_eq!(order.admit(&retry(2)), Admit::Drop);
        assert_eq!(order.admit(&retry(3)), Admit::Send);
    }
}
