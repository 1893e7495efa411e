//! The stream hub (ARCHITECTURE.md §6): per chat with local activity, the run
//! buffered here (this replica's own, or one relayed from its worker), the
//! local subscribers its parts and the chat's other events fan out to, and
//! how far committed messages reached them.
//!
//! Everything about one chat changes under one lock, so a subscriber that
//! registers gets the buffered parts and every later event, with nothing
//! falling in between.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chatd_relay::protocol::RelayPart;
use chatd_shared::{
    ids::{ChatId, Generation, MessageId},
    status::ChatStatus,
    stream::StreamEvent,
    sync::lock,
};
use opentelemetry::metrics::{Counter, Meter};

use super::{
    buffer::{BufferLimits, BufferedPart, LocalRun, PartBuffer, RelayedRun, Run},
    queue::{HubItem, Overflowed, SubscriberQueue},
};

/// One chat's local state.
#[derive(Default)]
struct ChatState {
    run: Option<Run>,
    subscribers: Vec<(u64, Arc<SubscriberQueue>)>,
    /// Messages up to here reached every local subscriber, in id order
    /// (fanned out by the run or a feed, or read by each subscriber itself):
    /// a feed reads only what comes after it.
    watermark: Option<MessageId>,
    /// Woken when a relayed run makes progress or ends.
    relay_progress: Arc<tokio::sync::Notify>,
}

impl ChatState {
    /// Replaces the buffered run; whoever waited on a relayed one waits no more.
    fn replace_run(&mut self, run: Option<Run>) {
        self.run = run;
        self.relay_progress.notify_waiters();
    }

    fn relayed_mut(&mut self, generation: Generation) -> Option<&mut RelayedRun> {
        self.run
            .as_mut()
            .and_then(Run::relayed_mut)
            .filter(|run| run.generation == generation)
    }
}

/// A buffered run as a new subscriber finds it.
#[derive(Debug, Clone)]
pub enum RunSnapshot {
    /// This replica runs it.
    Local {
        /// Its generation.
        generation: Generation,
        /// The parts of its step in progress.
        parts: Vec<BufferedPart>,
    },
    /// A peer runs it; these parts were relayed so far.
    Relayed {
        /// Its generation.
        generation: Generation,
        /// The parts of its step in progress relayed so far.
        parts: Vec<BufferedPart>,
    },
}

impl RunSnapshot {
    /// Its generation.
    pub fn generation(&self) -> Generation {
        match self {
            Self::Local { generation, .. } | Self::Relayed { generation, .. } => *generation,
        }
    }

    /// Its buffered parts, in seq order.
    pub fn parts(&self) -> &[BufferedPart] {
        match self {
            Self::Local { parts, .. } | Self::Relayed { parts, .. } => parts,
        }
    }
}

/// What a new subscriber gets: the run buffered here (if any), then live
/// events through the receiver.
pub struct Subscribed {
    /// The run buffered here, with its parts.
    pub run: Option<RunSnapshot>,
    /// Messages up to here reached the subscribers already.
    pub watermark: Option<MessageId>,
    /// Live events from now on.
    pub receiver: HubReceiver,
}

/// Receives one subscriber's events. Dropping it unsubscribes.
pub struct HubReceiver {
    queue: Arc<SubscriberQueue>,
    hub: Arc<StreamHub>,
    chat_id: ChatId,
    id: u64,
}

impl HubReceiver {
    /// The next item; `Err(Overflowed)` once the subscriber was cut off.
    pub async fn recv(&mut self) -> Result<HubItem, Overflowed> {
        self.queue.recv().await
    }

    /// The next item if one is queued.
    pub fn try_recv(&self) -> Result<Option<HubItem>, Overflowed> {
        self.queue.try_recv()
    }
}

impl Drop for HubReceiver {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.chat_id, self.id);
    }
}

/// Runs of this replica that ended lately (bounded): a peer that subscribes
/// to a run after its end is told so at once instead of waiting for it.
#[derive(Default)]
struct RecentlyEnded {
    runs: HashMap<ChatId, Generation>,
    order: VecDeque<ChatId>,
}

/// How many ended runs are remembered.
const REMEMBERED_RUNS: usize = 4096;

impl RecentlyEnded {
    fn record(&mut self, chat_id: ChatId, generation: Generation) {
        if self.runs.insert(chat_id, generation).is_none() {
            self.order.push_back(chat_id);
        }
        while self.order.len() > REMEMBERED_RUNS {
            if let Some(old) = self.order.pop_front() {
                self.runs.remove(&old);
            }
        }
    }
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
    ended: Mutex<RecentlyEnded>,
}

impl StreamHub {
    /// A hub with `limits` per run and `queue_capacity` events per subscriber.
    pub fn new(limits: BufferLimits, queue_capacity: usize, meter: &Meter) -> Arc<Self> {
        use chatd_shared::metrics::{counter, unlabelled};
        Arc::new(Self {
            chats: Mutex::new(HashMap::new()),
            ended: Mutex::default(),
            limits,
            queue_capacity,
            next_id: std::sync::atomic::AtomicU64::new(0),
            evictions: counter(
                meter,
                "chatd_hub_part_evictions",
                "Buffered parts evicted because a run's buffer was full",
                unlabelled(),
            ),
            overflows: counter(
                meter,
                "chatd_stream_overflows",
                "Subscribers cut off because they did not keep up",
                unlabelled(),
            ),
            stale: counter(
                meter,
                "chatd_hub_stale_parts",
                "Relayed parts discarded because a newer (or local) run was buffered",
                unlabelled(),
            ),
            relay_lagging: counter(
                meter,
                "chatd_hub_relay_lagging",
                "Relayed runs whose parts fell behind their messages (the messages went first)",
                unlabelled(),
            ),
        })
    }

    fn chats(&self) -> MutexGuard<'_, HashMap<ChatId, ChatState>> {
        lock(&self.chats)
    }

    /// Registers a subscriber of `chat_id` and returns what is buffered.
    pub fn subscribe(self: &Arc<Self>, chat_id: ChatId) -> Subscribed {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(SubscriberQueue::new(self.queue_capacity));
        let mut chats = self.chats();
        let state = chats.entry(chat_id).or_default();
        state.subscribers.push((id, queue.clone()));
        let run = state.run.as_ref().map(|run| {
            let (generation, parts) = (run.generation(), run.parts().snapshot());
            match run {
                Run::Local(_) => RunSnapshot::Local { generation, parts },
                Run::Relayed(_) => RunSnapshot::Relayed { generation, parts },
            }
        });
        Subscribed {
            run,
            watermark: state.watermark,
            receiver: HubReceiver {
                queue,
                hub: self.clone(),
                chat_id,
                id,
            },
        }
    }

    fn unsubscribe(&self, chat_id: ChatId, id: u64) {
        let mut chats = self.chats();
        if let Some(state) = chats.get_mut(&chat_id) {
            state.subscribers.retain(|(sub, _)| *sub != id);
            // A relayed run is kept for local subscribers only.
            if state.subscribers.is_empty() && !matches!(state.run, Some(Run::Local(_))) {
                chats.remove(&chat_id);
            }
        }
    }

    /// Sends `event` to every local subscriber of `chat_id` (durable events
    /// that arrive through pubsub take this path too).
    pub fn publish(&self, chat_id: ChatId, event: StreamEvent) {
        let event = Arc::new(event);
        if let Some(state) = self.chats().get_mut(&chat_id) {
            if let StreamEvent::Message { message, .. } = event.as_ref() {
                state.watermark = state.watermark.max(Some(message.id));
                // A committed step supersedes its parts, relayed ones too.
                if let (Some(run), Some(generation), Some(step)) =
                    (state.run.as_mut(), message.generation, message.step)
                    && run.generation() == generation
                {
                    run.parts_mut().drop_through(step);
                }
            }
            self.fan_out(&mut state.subscribers, &HubItem::Event(event));
        }
    }

    /// Tells every local subscriber of `chat_id` to re-read it (notices may
    /// have been lost).
    pub fn resync(&self, chat_id: ChatId) {
        if let Some(state) = self.chats().get_mut(&chat_id) {
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
        if let Some(state) = self.chats().get_mut(&chat_id) {
            let upto = upto.unwrap_or(MessageId(0));
            state.watermark = Some(state.watermark.map_or(upto, |current| current.min(upto)));
        }
    }

    /// Messages of `chat_id` up to this reached every local subscriber in order.
    pub fn watermark(&self, chat_id: ChatId) -> Option<MessageId> {
        self.chats().get(&chat_id).and_then(|state| state.watermark)
    }

    /// Number of local subscribers of `chat_id`.
    pub fn subscriber_count(&self, chat_id: ChatId) -> usize {
        self.chats()
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

    fn buffer(&self, parts: &mut PartBuffer, part: BufferedPart) {
        let evicted = parts.push(part, self.limits);
        if evicted > 0 {
            self.evictions.add(evicted, &[]);
        }
    }

    // This replica's own runs, through their `RunStream`.

    /// Starts buffering this replica's run `generation` of `chat_id` and
    /// tells local subscribers it is `running` (before any part of it can
    /// be sent). See [`super::RunStream::begin`].
    pub(super) fn start_local_run(&self, chat_id: ChatId, generation: Generation) {
        let status = Arc::new(StreamEvent::Status {
            chat_id,
            status: ChatStatus::Running,
            generation,
        });
        {
            let mut chats = self.chats();
            let state = chats.entry(chat_id).or_default();
            state.replace_run(Some(Run::Local(LocalRun {
                generation,
                parts: PartBuffer::default(),
            })));
            self.fan_out(&mut state.subscribers, &HubItem::Event(status));
            self.fan_out(&mut state.subscribers, &HubItem::RunStarted(generation));
        }
    }

    /// Applies `apply` to this replica's run `generation` of `chat_id` and
    /// the chat's state, if that run is still the one buffered here.
    fn with_local_run(
        &self,
        chat_id: ChatId,
        generation: Generation,
        apply: impl FnOnce(
            &Self,
            &mut PartBuffer,
            &mut Vec<(u64, Arc<SubscriberQueue>)>,
            &mut Option<MessageId>,
        ),
    ) {
        let mut chats = self.chats();
        let Some(ChatState {
            run: Some(Run::Local(run)),
            subscribers,
            watermark,
            ..
        }) = chats.get_mut(&chat_id)
        else {
            return;
        };
        if run.generation == generation {
            apply(self, &mut run.parts, subscribers, watermark);
        }
    }

    /// Buffers a part of this replica's run and fans it out.
    pub(super) fn local_part(&self, chat_id: ChatId, generation: Generation, part: BufferedPart) {
        self.with_local_run(chat_id, generation, |hub, parts, subscribers, _| {
            let event = part.event.clone();
            hub.buffer(parts, part);
            hub.fan_out(subscribers, &HubItem::Event(event));
        });
    }

    /// Messages of step `step` of this replica's run committed: they
    /// supersede its parts and go to local subscribers now.
    pub(super) fn local_committed(
        &self,
        chat_id: ChatId,
        generation: Generation,
        step: i32,
        messages: Vec<Arc<StreamEvent>>,
    ) {
        self.with_local_run(chat_id, generation, |hub, parts, subscribers, watermark| {
            parts.drop_through(step);
            for event in messages {
                if let StreamEvent::Message { message, .. } = event.as_ref() {
                    *watermark = (*watermark).max(Some(message.id));
                }
                hub.fan_out(subscribers, &HubItem::Event(event));
            }
        });
    }

    /// Step `step` of this replica's run is retried: its parts are dropped
    /// and subscribers told to drop theirs (`retry`).
    pub(super) fn local_retry(
        &self,
        chat_id: ChatId,
        generation: Generation,
        step: i32,
        retry: Arc<StreamEvent>,
    ) {
        self.with_local_run(chat_id, generation, |hub, parts, subscribers, _| {
            parts.drop_step(step);
            hub.fan_out(subscribers, &HubItem::Event(retry));
        });
    }

    /// This replica's run `generation` of `chat_id` ended.
    pub(super) fn end_local_run(&self, chat_id: ChatId, generation: Generation) {
        let mut chats = self.chats();
        let Some(state) = chats.get_mut(&chat_id) else {
            return;
        };
        if matches!(&state.run, Some(Run::Local(run)) if run.generation == generation) {
            state.replace_run(None);
            self.fan_out(&mut state.subscribers, &HubItem::RunEnded(generation));
            lock(&self.ended).record(chat_id, generation);
        }
        if state.run.is_none() && state.subscribers.is_empty() {
            chats.remove(&chat_id);
        }
    }

    /// True when this replica ran `chat_id`'s run `generation` (or a later
    /// one) and it ended.
    pub fn ended_here(&self, chat_id: ChatId, generation: Generation) -> bool {
        lock(&self.ended)
            .runs
            .get(&chat_id)
            .is_some_and(|ended| *ended >= generation)
    }

    // Runs on peers, followed through the relay for local subscribers.

    /// A peer runs `chat_id` as `generation`, and its parts will be relayed
    /// here: until they are, messages of that run wait (see
    /// [`Self::relayed_up_to`]). Only while someone here watches the chat.
    pub fn expect_remote(&self, chat_id: ChatId, generation: Generation) {
        let mut chats = self.chats();
        let Some(state) = chats.get_mut(&chat_id) else {
            return;
        };
        let newer_or_local = match &state.run {
            Some(Run::Local(_)) => true,
            Some(Run::Relayed(run)) => run.generation >= generation,
            None => false,
        };
        if !newer_or_local {
            state.replace_run(Some(Run::Relayed(RelayedRun::new(generation))));
        }
    }

    /// Parts of `chat_id`'s run `generation` relayed from the replica that
    /// runs it, expected since [`Self::expect_remote`]. Parts of an older
    /// generation than the one buffered, of a run this replica runs itself,
    /// or of a chat no longer followed are discarded: they can only be stale.
    pub fn remote_parts(&self, chat_id: ChatId, generation: Generation, parts: &[RelayPart]) {
        let mut chats = self.chats();
        let Some(state) = chats.get_mut(&chat_id) else {
            // Nobody here watches the chat any more.
            return;
        };
        match &state.run {
            Some(Run::Relayed(run)) if run.generation == generation => {}
            // A newer run relayed after an older one: it replaces it.
            Some(Run::Relayed(run)) if run.generation < generation => {
                state.replace_run(Some(Run::Relayed(RelayedRun::new(generation))));
            }
            // Not expected (the chat was unfollowed), this replica's own run,
            // or a run a newer one replaced: only stale parts get here.
            _ => {
                self.stale.add(parts.len() as u64, &[]);
                return;
            }
        }
        let Some(run) = state.relayed_mut(generation) else {
            return;
        };
        let mut events = Vec::with_capacity(parts.len());
        for relayed in parts {
            let part = BufferedPart::new(
                chat_id,
                generation,
                relayed.step,
                relayed.seq,
                relayed.part.clone(),
            );
            events.push(part.event.clone());
            self.buffer(&mut run.parts, part);
        }
        for event in events {
            self.fan_out(&mut state.subscribers, &HubItem::Event(event));
        }
    }

    /// The chat runs on no peer (as far as this replica knows): drops any
    /// relayed run, and nobody waits for it any more.
    pub fn forget_remote(&self, chat_id: ChatId) {
        let mut chats = self.chats();
        if let Some(state) = chats.get_mut(&chat_id)
            && matches!(state.run, Some(Run::Relayed(_)))
        {
            state.replace_run(None);
            if state.subscribers.is_empty() {
                chats.remove(&chat_id);
            }
        }
    }

    /// The worker of the relayed run `generation` committed its messages up
    /// to `through`, after sending every part of their steps.
    pub fn remote_committed(&self, chat_id: ChatId, generation: Generation, through: MessageId) {
        let mut chats = self.chats();
        if let Some(state) = chats.get_mut(&chat_id)
            && let Some(run) = state.relayed_mut(generation)
        {
            run.committed(through);
            state.relay_progress.notify_waiters();
        }
    }

    /// The relayed run `generation` of `chat_id` sends nothing more.
    pub fn remote_ended(&self, chat_id: ChatId, generation: Generation) {
        let mut chats = self.chats();
        if let Some(state) = chats.get_mut(&chat_id)
            && state.relayed_mut(generation).is_some()
        {
            state.replace_run(None);
            if state.subscribers.is_empty() {
                chats.remove(&chat_id);
            }
        }
    }

    /// Waits until the parts of message `id`'s step (of run `generation`)
    /// were relayed here, so that subscribers get the parts before the
    /// message that supersedes them: the message travels through the
    /// database, the parts through the relay, and either may come first.
    ///
    /// Returns at once unless a relayed run of `generation` is buffered.
    /// Waits at most `patience`: a run that makes a message wait that long
    /// is marked lagging, and its later messages do not wait (their steps'
    /// parts are superseded instead, as ARCHITECTURE.md §6 allows).
    pub async fn relayed_up_to(
        &self,
        chat_id: ChatId,
        generation: Generation,
        id: MessageId,
        patience: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + patience;
        while let Some(progress) = self.relay_behind(chat_id, generation, id) {
            let woken = progress.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // Progress made before `enable` is seen by checking again.
            if self.relay_behind(chat_id, generation, id).is_none() {
                return;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                if let Some(run) = self
                    .chats()
                    .get_mut(&chat_id)
                    .and_then(|state| state.relayed_mut(generation))
                {
                    run.lag();
                }
                self.relay_lagging.add(1, &[]);
                return;
            }
        }
    }

    /// The relayed run's progress signal, when message `id` must wait for it.
    fn relay_behind(
        &self,
        chat_id: ChatId,
        generation: Generation,
        id: MessageId,
    ) -> Option<Arc<tokio::sync::Notify>> {
        let chats = self.chats();
        let state = chats.get(&chat_id)?;
        match &state.run {
            Some(Run::Relayed(run)) if run.is_behind(generation, id) => {
                Some(state.relay_progress.clone())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use chatd_shared::{api, db::messages::Message, parts::Part};

    use super::*;
    use crate::streams::RunStream;

    fn hub(limits: BufferLimits, capacity: usize) -> Arc<StreamHub> {
        StreamHub::new(limits, capacity, &opentelemetry::global::meter("test"))
    }

    fn seq_of(event: &StreamEvent) -> Option<u64> {
        match event {
            StreamEvent::Part { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    fn seqs(run: &RunSnapshot) -> Vec<u64> {
        run.parts().iter().map(|p| p.seq).collect()
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
        let mut run = RunStream::begin(&hub, chat, Generation(1));
        assert_eq!(run.part(0, Part::TextDelta { text: "a".into() }), 0);
        assert_eq!(run.part(0, Part::TextDelta { text: "b".into() }), 1);

        let late = hub.subscribe(chat);
        let buffered = late.run.expect("a run is buffered");
        assert_eq!(buffered.generation(), Generation(1));
        assert_eq!(seqs(&buffered), [0, 1]);

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

        let after_commit = hub.subscribe(chat).run.unwrap();
        assert_eq!(seqs(&after_commit), [2], "committed parts left the buffer");
        drop(run);
        assert!(hub.subscribe(chat).run.is_none(), "the run ended");
        assert!(hub.ended_here(chat, Generation(1)));
    }

    /// A stored message of `chat` for a turn's history.
    fn stored(chat_id: ChatId, id: i64, role: chatd_shared::status::MessageRole) -> Message {
        chatd_shared::testing::stored_message(chat_id, id, role, vec![Part::text("stored")])
    }

    /// Invariant 3: the previous turn's reply, committed on another replica
    /// with its notice not read here yet, precedes the message that starts
    /// this replica's run; the feed, reading later from the watermark,
    /// would pass over it.
    #[tokio::test]
    async fn a_run_fans_out_what_its_history_has_above_the_watermark_in_order() {
        use chatd_shared::status::MessageRole::{Assistant, User};
        let hub = hub(BufferLimits::default(), 100);
        let chat = ChatId::new_v7();
        let subscribed = hub.subscribe(chat);
        // The subscriber's snapshot ended at message 5.
        hub.snapshot_read(chat, Some(MessageId(5)));
        let mut run = RunStream::begin(&hub, chat, Generation(2));
        let history = [
            stored(chat, 4, User),
            stored(chat, 5, Assistant),
            stored(chat, 8, Assistant),
            stored(chat, 9, User),
        ];
        run.preceding(&history);
        let mut ids = Vec::new();
        while let Some(item) = subscribed.receiver.try_recv().unwrap() {
            if let HubItem::Event(event) = item
                && let StreamEvent::Message { message, .. } = event.as_ref()
            {
                ids.push(message.id.0);
            }
        }
        assert_eq!(ids, [8, 9]);
        assert_eq!(hub.watermark(chat), Some(MessageId(9)));
    }

    #[tokio::test]
    async fn a_retry_drops_the_parts_of_its_step() {
        let hub = hub(BufferLimits::default(), 100);
        let chat = ChatId::new_v7();
        let mut run = RunStream::begin(&hub, chat, Generation(2));
        run.part(
            0,
            Part::TextDelta {
                text: "draft".into(),
            },
        );
        run.retry(0, 2, 1000, "rate limited");
        assert!(hub.subscribe(chat).run.unwrap().parts().is_empty());
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

    fn relayed(seqs: impl IntoIterator<Item = u64>) -> Vec<RelayPart> {
        seqs.into_iter()
            .map(|seq| RelayPart {
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
        let late = hub.subscribe(chat).run.unwrap();
        assert!(
            matches!(late, RunSnapshot::Relayed { .. }),
            "a relayed run is not this replica's"
        );
        assert_eq!(late.generation(), Generation(2));
        assert_eq!(seqs(&late), [0, 1]);

        // Once the chat is not followed, late parts go nowhere.
        hub.forget_remote(chat);
        hub.remote_parts(chat, Generation(2), &relayed([2]));
        assert!(drain_seqs(&watcher.receiver).is_empty());
        assert!(hub.subscribe(chat).run.is_none());

        // This replica's own run wins over anything relayed.
        let _run = RunStream::begin(&hub, chat, Generation(3));
        hub.remote_parts(chat, Generation(3), &relayed([0]));
        assert!(drain_seqs(&watcher.receiver).is_empty());
        hub.remote_ended(chat, Generation(3));
        assert!(
            matches!(hub.subscribe(chat).run, Some(RunSnapshot::Local { .. })),
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
        let mut run = RunStream::begin(&hub, chat, Generation(1));
        for _ in 0..5 {
            run.part(0, Part::TextDelta { text: "x".into() });
        }
        assert_eq!(seqs(&hub.subscribe(chat).run.unwrap()), [2, 3, 4]);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_cut_off_without_slowing_the_run_or_others() {
        let hub = hub(BufferLimits::default(), 4);
        let chat = ChatId::new_v7();
        let slow = hub.subscribe(chat).receiver;
        let fast = hub.subscribe(chat).receiver;
        let mut run = RunStream::begin(&hub, chat, Generation(1));
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
