//! The stream hub (DESIGN §6): per chat with local activity, the parts of
//! the step in progress of the run on this replica, and the local
//! subscribers those parts (and the run's other events) fan out to.
//!
//! The turn loop writes through a [`RunStream`]; stream endpoints and the
//! relay read through [`StreamHub::subscribe`]. Subscribing returns the
//! buffered parts and registers the subscriber under one lock, so nothing
//! falls between the snapshot and the live events.

mod queue;
mod remote;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use chatd_shared::{
    api,
    ids::{ChatId, Generation, MessageId},
    parts::Part,
    status::ChatStatus,
    stream::StreamEvent,
};
use opentelemetry::metrics::{Counter, Meter};

use queue::SubscriberQueue;
pub use queue::{HubItem, HubReceiver, Overflowed};
pub use remote::{HubSink, HubSource};

/// Limits of one run's part buffer (DESIGN §6): past either, the oldest
/// parts are evicted (and counted).
#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    /// Parts kept at most.
    pub max_parts: usize,
    /// Approximate bytes kept at most.
    pub max_bytes: usize,
}

impl Default for BufferLimits {
    fn default() -> Self {
        Self {
            max_parts: 10_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A buffered part.
#[derive(Debug, Clone)]
pub struct BufferedPart {
    /// The step it belongs to.
    pub step: i32,
    /// Its sequence number within the run.
    pub seq: u64,
    /// The event (a `StreamEvent::Part`).
    pub event: Arc<StreamEvent>,
    bytes: usize,
}

/// The run in progress on this replica for one chat.
struct RunBuffer {
    generation: Generation,
    /// True when this replica runs it; false for parts relayed from the worker.
    local: bool,
    parts: VecDeque<BufferedPart>,
    bytes: usize,
    /// A relayed run: the worker committed its messages up to here, and
    /// sent every part of their steps before saying so.
    relayed_through: Option<MessageId>,
    /// A relayed run whose relay fell behind the database once: its
    /// messages no longer wait for its parts.
    lagging: bool,
}

impl RunBuffer {
    fn new(generation: Generation, local: bool) -> Self {
        Self {
            generation,
            local,
            parts: VecDeque::new(),
            bytes: 0,
            relayed_through: None,
            lagging: false,
        }
    }

    /// Appends a part, evicting the oldest past the limits; returns how many were evicted.
    fn push(&mut self, part: BufferedPart, limits: BufferLimits) -> u64 {
        self.bytes += part.bytes;
        self.parts.push_back(part);
        let mut evicted = 0;
        while self.parts.len() > limits.max_parts || self.bytes > limits.max_bytes {
            match self.parts.pop_front() {
                Some(old) => {
                    self.bytes -= old.bytes;
                    evicted += 1;
                }
                None => break,
            }
        }
        evicted
    }

    /// Drops the parts of steps up to `step` (their message committed).
    fn prune(&mut self, step: i32) {
        self.parts.retain(|part| part.step > step);
        self.bytes = self.parts.iter().map(|part| part.bytes).sum();
    }
}

#[derive(Default)]
struct ChatState {
    run: Option<RunBuffer>,
    subscribers: Vec<(u64, Arc<SubscriberQueue>)>,
    /// Messages up to here reached every local subscriber, in id order
    /// (fanned out by the run or a feed, or read by each subscriber itself):
    /// a feed reads only what comes after it.
    watermark: Option<MessageId>,
    /// Woken when a relayed run makes progress or ends.
    relay_progress: Arc<tokio::sync::Notify>,
}

/// What a new subscriber gets: the run in progress here (if any) and its
/// buffered parts, then live events through the receiver.
pub struct Subscribed {
    /// `(generation, parts)` of the run in progress (here, or relayed).
    pub run: Option<(Generation, Vec<BufferedPart>)>,
    /// True when that run is this replica's own.
    pub local: bool,
    /// Messages up to here reached the subscribers already.
    pub watermark: Option<MessageId>,
    /// Live events from now on.
    pub receiver: HubReceiver,
}

/// Every chat with local activity.
pub struct StreamHub {
    chats: Mutex<HashMap<ChatId, ChatState>>,
    limits: BufferLimits,
    queue_capacity: usize,
    next_id: std::sync::atomic::AtomicU64,
    evictions: Counter<u64>,
    overflows: Counter<u64>,
    stale: Counter<u64>,
    relay_lagging: Counter<u64>,
    /// Runs of this replica that ended lately, for peers that ask after the end.
    ended: Mutex<remote::RecentlyEnded>,
}

impl StreamHub {
    /// A hub with `limits` per run and `queue_capacity` events per subscriber.
    pub fn new(limits: BufferLimits, queue_capacity: usize, meter: &Meter) -> Arc<Self> {
        Arc::new(Self {
            chats: Mutex::new(HashMap::new()),
            ended: Mutex::default(),
            limits,
            queue_capacity,
            next_id: std::sync::atomic::AtomicU64::new(0),
            evictions: meter
                .u64_counter("chatd_hub_part_evictions")
                .with_description("Buffered parts evicted because a run's buffer was full")
                .build(),
            overflows: meter
                .u64_counter("chatd_stream_overflows")
                .with_description("Subscribers cut off because they did not keep up")
                .build(),
            stale: meter
                .u64_counter("chatd_hub_stale_parts")
                .with_description(
                    "Relayed parts discarded because a newer (or local) run was buffered",
                )
                .build(),
            relay_lagging: meter
                .u64_counter("chatd_hub_relay_lagging")
                .with_description(
                    "Relayed runs whose parts fell behind their messages (the messages went first)",
                )
                .build(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChatId, ChatState>> {
        self.chats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts buffering a run and tells local subscribers it is `running`
    /// (before any part of it can be sent). Dropping the handle ends the run.
    pub fn begin_run(self: &Arc<Self>, chat_id: ChatId, generation: Generation) -> RunStream {
        let status = Arc::new(StreamEvent::Status {
            chat_id,
            status: ChatStatus::Running,
            generation,
        });
        {
            let mut chats = self.lock();
            let state = chats.entry(chat_id).or_default();
            state.run = Some(RunBuffer::new(generation, true));
            self.fan_out(&mut state.subscribers, &HubItem::Event(status));
            self.fan_out(&mut state.subscribers, &HubItem::RunStarted(generation));
        }
        RunStream {
            hub: self.clone(),
            chat_id,
            generation,
            next_seq: 0,
        }
    }

    /// Registers a subscriber of `chat_id` and returns what is buffered.
    pub fn subscribe(self: &Arc<Self>, chat_id: ChatId) -> Subscribed {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(SubscriberQueue::new(self.queue_capacity));
        let mut chats = self.lock();
        let state = chats.entry(chat_id).or_default();
        state.subscribers.push((id, queue.clone()));
        let run = state
            .run
            .as_ref()
            .map(|run| (run.generation, run.parts.iter().cloned().collect()));
        let local = state.run.as_ref().is_some_and(|run| run.local);
        Subscribed {
            run,
            local,
            watermark: state.watermark,
            receiver: HubReceiver::new(queue, self.clone(), chat_id, id),
        }
    }

    fn unsubscribe(&self, chat_id: ChatId, id: u64) {
        let mut chats = self.lock();
        if let Some(state) = chats.get_mut(&chat_id) {
            state.subscribers.retain(|(sub, _)| *sub != id);
            // A relayed run is kept for local subscribers only.
            if state.subscribers.is_empty() && state.run.as_ref().is_none_or(|run| !run.local) {
                chats.remove(&chat_id);
            }
        }
    }

    /// Sends `event` to every local subscriber of `chat_id` (durable events
    /// that arrive through pubsub take this path too).
    pub fn publish(&self, chat_id: ChatId, event: StreamEvent) {
        let event = Arc::new(event);
        if let Some(state) = self.lock().get_mut(&chat_id) {
            if let StreamEvent::Message { message, .. } = event.as_ref() {
                state.watermark = state.watermark.max(Some(message.id));
                // A committed step supersedes its parts, relayed ones too.
                if let (Some(run), Some(generation), Some(step)) =
                    (state.run.as_mut(), message.generation, message.step)
                    && run.generation == generation
                {
                    run.prune(step);
                }
            }
            self.fan_out(&mut state.subscribers, &HubItem::Event(event));
        }
    }

    /// Tells every local subscriber of `chat_id` to re-read it (notices may
    /// have been lost).
    pub fn resync(&self, chat_id: ChatId) {
        if let Some(state) = self.lock().get_mut(&chat_id) {
            self.fan_out(&mut state.subscribers, &HubItem::Resync);
        }
    }

    /// A subscriber read the chat's messages itself, up to `upto` (`None`:
    /// the chat had none): the watermark may not be above it (what lies
    /// beyond must still be fanned out, for this subscriber's sake). An empty
    /// chat sets it to 0, so the next notice is read from the start rather
    /// than from where that notice's writer began, which may be past a
    /// message whose notice is still on its way.
    pub fn snapshot_read(&self, chat_id: ChatId, upto: Option<MessageId>) {
        if let Some(state) = self.lock().get_mut(&chat_id) {
            let upto = upto.unwrap_or(MessageId(0));
            state.watermark = Some(state.watermark.map_or(upto, |current| current.min(upto)));
        }
    }

    /// Messages of `chat_id` up to this reached every local subscriber in order.
    pub fn watermark(&self, chat_id: ChatId) -> Option<MessageId> {
        self.lock().get(&chat_id).and_then(|state| state.watermark)
    }

    /// Number of local subscribers of `chat_id`.
    pub fn subscriber_count(&self, chat_id: ChatId) -> usize {
        self.lock()
            .get(&chat_id)
            .map_or(0, |state| state.subscribers.len())
    }

    fn fan_out(&self, subscribers: &mut Vec<(u64, Arc<SubscriberQueue>)>, item: &HubItem) {
        let mut overflowed = 0;
        subscribers.retain(|(_, queue)| {
            let kept = queue.push(item.clone());
            if !kept {
                overflowed += 1;
            }
            kept
        });
        if overflowed > 0 {
            self.overflows.add(overflowed, &[]);
        }
    }

    /// Applies `apply` to the buffer of the run of `generation` and the
    /// chat's subscribers, if that run is still the one buffered here.
    fn with_run(
        &self,
        chat_id: ChatId,
        generation: Generation,
        apply: impl FnOnce(
            &mut RunBuffer,
            &mut Vec<(u64, Arc<SubscriberQueue>)>,
            &mut Option<MessageId>,
        ),
    ) {
        let mut chats = self.lock();
        let Some(ChatState {
            run,
            subscribers,
            watermark,
            ..
        }) = chats.get_mut(&chat_id)
        else {
            return;
        };
        if let Some(run) = run.as_mut().filter(|run| run.generation == generation) {
            apply(run, subscribers, watermark);
        }
    }
}

/// The turn loop's handle on its run's stream. Every part gets the next
/// `seq`; committed messages and retries clear the parts they supersede.
pub struct RunStream {
    hub: Arc<StreamHub>,
    chat_id: ChatId,
    generation: Generation,
    next_seq: u64,
}

impl RunStream {
    /// The run's generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Buffers and fans out a part of `step`; returns its `seq`.
    pub fn part(&mut self, step: i32, part: Part) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = approximate_size(&part);
        let event = Arc::new(StreamEvent::Part {
            chat_id: self.chat_id,
            generation: self.generation,
            step,
            seq,
            part,
        });
        let hub = &self.hub;
        hub.with_run(self.chat_id, self.generation, |run, subscribers, _| {
            let part = BufferedPart {
                step,
                seq,
                event: event.clone(),
                bytes,
            };
            let evicted = run.push(part, hub.limits);
            if evicted > 0 {
                hub.evictions.add(evicted, &[]);
            }
            hub.fan_out(subscribers, &HubItem::Event(event.clone()));
        });
        seq
    }

    /// True when someone on this replica watches the chat.
    pub fn has_subscribers(&self) -> bool {
        self.hub.subscriber_count(self.chat_id) > 0
    }

    /// Messages committed before this run's steps (the message that started
    /// the turn): fanned out first, so the run's own messages never overtake
    /// them and subscribers get every message in id order.
    pub fn preceding(&mut self, messages: &[api::Message]) {
        let watermark = self.hub.watermark(self.chat_id);
        for message in messages
            .iter()
            .filter(|m| watermark.is_none_or(|w| m.id > w))
        {
            self.hub.publish(
                self.chat_id,
                StreamEvent::Message {
                    chat_id: message.chat_id,
                    message: message.clone(),
                },
            );
        }
    }

    /// The messages of `step` committed: they supersede its parts, which
    /// leave the buffer; local subscribers get the messages now, before any
    /// part of a later step.
    pub fn committed(&mut self, step: i32, messages: &[api::Message]) {
        let hub = &self.hub;
        hub.with_run(
            self.chat_id,
            self.generation,
            |run, subscribers, watermark| {
                run.parts.retain(|part| part.step > step);
                run.bytes = run.parts.iter().map(|part| part.bytes).sum();
                for message in messages {
                    *watermark = (*watermark).max(Some(message.id));
                    let event = Arc::new(StreamEvent::Message {
                        chat_id: message.chat_id,
                        message: message.clone(),
                    });
                    hub.fan_out(subscribers, &HubItem::Event(event));
                }
            },
        );
    }

    /// A provider call of `step` failed and is retried: its parts are dropped
    /// and subscribers are told to drop theirs.
    pub fn retry(&mut self, step: i32, attempt: u32, delay_ms: u64, error: &str) {
        let event = Arc::new(StreamEvent::Retry {
            chat_id: self.chat_id,
            generation: self.generation,
            attempt,
            delay_ms,
            error: error.to_owned(),
        });
        let hub = &self.hub;
        hub.with_run(self.chat_id, self.generation, |run, subscribers, _| {
            run.parts.retain(|part| part.step != step);
            run.bytes = run.parts.iter().map(|part| part.bytes).sum();
            hub.fan_out(subscribers, &HubItem::Event(event));
        });
    }

    /// Sends a non-part event of this run to local subscribers.
    pub fn event(&self, event: StreamEvent) {
        self.hub.publish(self.chat_id, event);
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        let mut chats = self.hub.lock();
        if let Some(state) = chats.get_mut(&self.chat_id) {
            if state
                .run
                .as_ref()
                .is_some_and(|run| run.local && run.generation == self.generation)
            {
                state.run = None;
                self.hub
                    .fan_out(&mut state.subscribers, &HubItem::RunEnded(self.generation));
                self.hub.run_ended(self.chat_id, self.generation);
            }
            if state.run.is_none() && state.subscribers.is_empty() {
                chats.remove(&self.chat_id);
            }
        }
    }
}

/// A rough byte size of a part, for the buffer limit.
fn approximate_size(part: &Part) -> usize {
    let text = match part {
        Part::Text { text } | Part::TextDelta { text } | Part::ReasoningDelta { text } => {
            text.len()
        }
        Part::Reasoning { text, signature } => {
            text.len() + signature.as_ref().map_or(0, String::len)
        }
        Part::ToolCallDelta {
            args_delta, name, ..
        } => args_delta.len() + name.len(),
        Part::ToolCall { args, .. } => args.to_string().len(),
        Part::ToolResult { result, .. } => result.to_string().len(),
        Part::File { .. } | Part::Source { .. } => 128,
    };
    text + 96
}

#[cfg(test)]
mod tests {
    use chatd_shared::ids::MessageId;

    use super::*;

    fn hub(limits: BufferLimits, capacity: usize) -> Arc<StreamHub> {
        StreamHub::new(limits, capacity, &opentelemetry::global::meter("test"))
    }

    fn seq_of(event: &StreamEvent) -> Option<u64> {
        match event {
            StreamEvent::Part { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    fn message(chat_id: ChatId, id: i64, step: i32) -> api::Message {
        api::Message {
            id: MessageId(id),
            chat_id,
            role: chatd_shared::status::MessageRole::Assistant,
            content: vec![Part::text("done")],
            created_by: None,
            generation: Some(Generation(1)),
            step: Some(step),
            usage: Default::default(),
            cost_micros: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn running_comes_first_then_parts_in_seq_order_and_messages_supersede_them() {
        let hub = hub(BufferLimits::default(), 100);
        let chat = ChatId::new_v7();
        let early = hub.subscribe(chat);
        assert!(early.run.is_none());
        let mut run = hub.begin_run(chat, Generation(1));
        assert_eq!(run.part(0, Part::TextDelta { text: "a".into() }), 0);
        assert_eq!(run.part(0, Part::TextDelta { text: "b".into() }), 1);

        let late = hub.subscribe(chat);
        let (generation, parts) = late.run.expect("a run is buffered");
        assert_eq!(generation, Generation(1));
        assert_eq!(parts.iter().map(|p| p.seq).collect::<Vec<_>>(), [0, 1]);

        run.committed(0, &[message(chat, 10, 0)]);
        run.part(1, Part::TextDelta { text: "c".into() });
        let receiver = early.receiver;
        let mut seen = Vec::new();
        while let Some(item) = receiver.try_recv().unwrap() {
            if let HubItem::Event(event) = item {
                seen.push(event);
            }
        }
        assert!(matches!(
            *seen[0],
            StreamEvent::Status {
                status: ChatStatus::Running,
                ..
            }
        ));
        assert_eq!(
            seen[1..3]
                .iter()
                .filter_map(|e| seq_of(e))
                .collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(
            matches!(&*seen[3], StreamEvent::Message { message, .. } if message.id == MessageId(10))
        );
        assert_eq!(seq_of(&seen[4]), Some(2), "seq goes on across steps");

        let after_commit = hub.subscribe(chat).run.unwrap().1;
        assert_eq!(
            after_commit.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [2],
            "committed parts left the buffer"
        );
        drop(run);
        assert!(hub.subscribe(chat).run.is_none(), "the run ended");
    }

    #[tokio::test]
    async fn a_retry_drops_the_parts_of_its_step() {
        let hub = hub(BufferLimits::default(), 100);
        let chat = ChatId::new_v7();
        let mut run = hub.begin_run(chat, Generation(2));
        run.part(
            0,
            Part::TextDelta {
                text: "draft".into(),
            },
        );
        run.retry(0, 2, 1000, "rate limited");
        assert!(hub.subscribe(chat).run.unwrap().1.is_empty());
        assert_eq!(
            run.part(
                0,
                Part::TextDelta {
                    text: "again".into()
                }
            ),
            1,
            "seq never repeats"
        );
    }

    fn relayed(seqs: impl IntoIterator<Item = u64>) -> Vec<chatd_relay::protocol::RelayPart> {
        seqs.into_iter()
            .map(|seq| chatd_relay::protocol::RelayPart {
                seq,
                step: 0,
                part: Part::TextDelta {
                    text: format!("t{seq}"),
                },
            })
            .collect()
    }

    fn drain_seqs(receiver: &HubReceiver) -> Vec<(i64, u64)> {
        let mut seen = Vec::new();
        while let Some(item) = receiver.try_recv().unwrap() {
            if let HubItem::Event(event) = item
                && let StreamEvent::Part {
                    generation, seq, ..
                } = *event
            {
                seen.push((generation.0, seq));
            }
        }
        seen
    }

    #[tokio::test]
    async fn relayed_parts_are_buffered_and_an_older_generation_is_discarded() {
        let hub = hub(BufferLimits::default(), 100);
        let chat = ChatId::new_v7();
        let watcher = hub.subscribe(chat);
        hub.remote_parts(chat, Generation(1), &relayed([7]));
        hub.expect_remote(chat, Generation(1));
        hub.remote_parts(chat, Generation(1), &relayed([0, 1]));
        hub.expect_remote(chat, Generation(2));
        hub.remote_parts(chat, Generation(2), &relayed([0]));
        // Late parts of the run that generation 2 replaced.
        hub.remote_parts(chat, Generation(1), &relayed([2]));
        hub.remote_parts(chat, Generation(2), &relayed([1]));
        assert_eq!(
            drain_seqs(&watcher.receiver),
            [(1, 0), (1, 1), (2, 0), (2, 1)]
        );
        let late = hub.subscribe(chat);
        assert!(!late.local, "a relayed run is not this replica's");
        let (generation, parts) = late.run.unwrap();
        assert_eq!(generation, Generation(2));
        assert_eq!(parts.iter().map(|p| p.seq).collect::<Vec<_>>(), [0, 1]);

        // Once the chat is not followed, late parts go nowhere.
        hub.forget_remote(chat);
        hub.remote_parts(chat, Generation(2), &relayed([2]));
        assert!(drain_seqs(&watcher.receiver).is_empty());
        assert!(hub.subscribe(chat).run.is_none());

        // This replica's own run wins over anything relayed.
        let _run = hub.begin_run(chat, Generation(3));
        hub.remote_parts(chat, Generation(3), &relayed([0]));
        assert!(drain_seqs(&watcher.receiver).is_empty());
        hub.remote_ended(chat, Generation(3));
        assert!(
            hub.subscribe(chat).local,
            "a relayed end does not end a local run"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_relayed_runs_message_waits_for_its_parts_but_not_forever() {
        let hub = hub(BufferLimits::default(), 100);
        let chat = ChatId::new_v7();
        let _watcher = hub.subscribe(chat);
        let patience = std::time::Duration::from_secs(1);
        let short = std::time::Duration::from_millis(10);

        // Nothing relayed is expected: no wait.
        hub.relayed_up_to(chat, Generation(1), MessageId(5), patience)
            .await;

        hub.expect_remote(chat, Generation(1));
        let waiting = hub.relayed_up_to(chat, Generation(1), MessageId(5), patience);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(short, waiting.as_mut()).await.is_err(),
            "the message waits for the worker's commit marker"
        );
        hub.remote_committed(chat, Generation(1), MessageId(5));
        tokio::time::timeout(short, waiting).await.unwrap();

        // A marker that never comes: the wait ends at `patience`, and the run
        // is then bypassed.
        let started = tokio::time::Instant::now();
        hub.relayed_up_to(chat, Generation(1), MessageId(9), patience)
            .await;
        assert_eq!(started.elapsed(), patience);
        tokio::time::timeout(
            short,
            hub.relayed_up_to(chat, Generation(1), MessageId(12), patience),
        )
        .await
        .expect("a lagging run's messages do not wait");

        // The relayed run ending releases its waiters.
        hub.expect_remote(chat, Generation(2));
        let waiting = hub.relayed_up_to(chat, Generation(2), MessageId(20), patience);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(short, waiting.as_mut()).await.is_err());
        hub.remote_ended(chat, Generation(2));
        tokio::time::timeout(short, waiting).await.unwrap();
    }

    #[tokio::test]
    async fn a_full_buffer_evicts_the_oldest_parts() {
        let hub = hub(
            BufferLimits {
                max_parts: 3,
                max_bytes: usize::MAX,
            },
            100,
        );
        let chat = ChatId::new_v7();
        let mut run = hub.begin_run(chat, Generation(1));
        for _ in 0..5 {
            run.part(0, Part::TextDelta { text: "x".into() });
        }
        let seqs: Vec<u64> = hub
            .subscribe(chat)
            .run
            .unwrap()
            .1
            .iter()
            .map(|p| p.seq)
            .collect();
        assert_eq!(seqs, [2, 3, 4]);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_cut_off_without_slowing_the_run_or_others() {
        let hub = hub(BufferLimits::default(), 4);
        let chat = ChatId::new_v7();
        let slow = hub.subscribe(chat).receiver;
        let fast = hub.subscribe(chat).receiver;
        let mut run = hub.begin_run(chat, Generation(1));
        for index in 0..10 {
            run.part(0, Part::TextDelta { text: "x".into() });
            // The fast one keeps up.
            while let Some(item) = fast.try_recv().unwrap() {
                if let HubItem::Event(event) = item
                    && let Some(seq) = seq_of(&event)
                {
                    assert_eq!(seq, index);
                }
            }
        }
        assert_eq!(slow.try_recv(), Err(Overflowed));
        assert_eq!(hub.subscriber_count(chat), 1, "the slow one was dropped");
    }
}
