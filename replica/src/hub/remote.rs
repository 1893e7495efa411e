//! The hub and the relay: this replica's runs are served to peers
//! ([`PartSource`]), and parts of runs on peers are buffered and fanned out
//! here like local ones ([`PartSink`]), so local subscribers see one stream
//! whichever replica runs the chat.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use chatd_relay::{PartSink, PartSource, SourceItem, Watch, WatchItems, protocol::RelayPart};
use chatd_shared::{
    ids::{ChatId, Generation, MessageId},
    stream::StreamEvent,
};

use super::{
    BufferedPart, HubItem, HubReceiver, Overflowed, RunBuffer, StreamHub, approximate_size,
};

/// Runs that ended here lately (bounded): a peer that subscribes to a run
/// after its end is told so at once instead of waiting for it to start.
#[derive(Default)]
pub(super) struct RecentlyEnded {
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

impl StreamHub {
    /// This replica's run `generation` of `chat_id` ended.
    pub(super) fn run_ended(&self, chat_id: ChatId, generation: Generation) {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(chat_id, generation);
    }

    /// True when this replica ran `chat_id`'s run `generation` (or a later
    /// one) and it ended.
    fn ended_here(&self, chat_id: ChatId, generation: Generation) -> bool {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .runs
            .get(&chat_id)
            .is_some_and(|ended| *ended >= generation)
    }

    /// Parts of `chat_id`'s run `generation` relayed from the replica that
    /// runs it, expected since [`Self::expect_remote`]. Parts of an older
    /// generation than the one buffered, of a run this replica runs itself,
    /// or of a chat no longer followed are discarded: they can only be stale.
    pub fn remote_parts(&self, chat_id: ChatId, generation: Generation, parts: &[RelayPart]) {
        let mut chats = self.lock();
        let Some(state) = chats.get_mut(&chat_id) else {
            // Nobody here watches the chat any more.
            return;
        };
        match &state.run {
            // Not expected (the chat was unfollowed), this replica's own run,
            // or a run a newer one replaced: only stale parts get here.
            None => {
                self.stale.add(parts.len() as u64, &[]);
                return;
            }
            Some(run) if run.local || run.generation > generation => {
                self.stale.add(parts.len() as u64, &[]);
                return;
            }
            Some(run) if run.generation == generation => {}
            Some(_) => {
                state.run = Some(RunBuffer::new(generation, false));
                // Feeds waiting on the replaced run wait no more.
                state.relay_progress.notify_waiters();
            }
        }
        let Some(run) = state.run.as_mut() else {
            return;
        };
        let mut evicted = 0;
        for relayed in parts {
            let event = Arc::new(StreamEvent::Part {
                chat_id,
                generation,
                step: relayed.step,
                seq: relayed.seq,
                part: relayed.part.clone(),
            });
            evicted += run.push(
                BufferedPart {
                    step: relayed.step,
                    seq: relayed.seq,
                    event: event.clone(),
                    bytes: approximate_size(&relayed.part),
                },
                self.limits,
            );
            self.fan_out(&mut state.subscribers, &HubItem::Event(event));
        }
        if evicted > 0 {
            self.evictions.add(evicted, &[]);
        }
    }

    /// A peer runs `chat_id` as `generation`, and its parts will be relayed
    /// here: until they are, messages of that run wait (see
    /// [`Self::relayed_up_to`]). Only while someone here watches the chat.
    pub fn expect_remote(&self, chat_id: ChatId, generation: Generation) {
        let mut chats = self.lock();
        let Some(state) = chats.get_mut(&chat_id) else {
            return;
        };
        match &state.run {
            Some(run) if run.local || run.generation >= generation => {}
            _ => {
                state.run = Some(RunBuffer::new(generation, false));
                state.relay_progress.notify_waiters();
            }
        }
    }

    /// The chat runs on no peer (as far as this replica knows): drops any
    /// relayed run, and nobody waits for it any more.
    pub fn forget_remote(&self, chat_id: ChatId) {
        let mut chats = self.lock();
        if let Some(state) = chats.get_mut(&chat_id)
            && state.run.as_ref().is_some_and(|run| !run.local)
        {
            state.run = None;
            state.relay_progress.notify_waiters();
            if state.subscribers.is_empty() {
                chats.remove(&chat_id);
            }
        }
    }

    /// The worker of the relayed run `generation` committed its messages up
    /// to `through`, after sending every part of their steps.
    pub fn remote_committed(&self, chat_id: ChatId, generation: Generation, through: MessageId) {
        let mut chats = self.lock();
        if let Some(state) = chats.get_mut(&chat_id)
            && let Some(run) = state
                .run
                .as_mut()
                .filter(|run| !run.local && run.generation == generation)
        {
            run.relayed_through = run.relayed_through.max(Some(through));
            state.relay_progress.notify_waiters();
        }
    }

    /// The relayed run `generation` of `chat_id` sends nothing more.
    pub fn remote_ended(&self, chat_id: ChatId, generation: Generation) {
        let mut chats = self.lock();
        if let Some(state) = chats.get_mut(&chat_id)
            && state
                .run
                .as_ref()
                .is_some_and(|run| !run.local && run.generation == generation)
        {
            state.run = None;
            state.relay_progress.notify_waiters();
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
    /// parts are superseded instead, as DESIGN §6 allows).
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
                    .lock()
                    .get_mut(&chat_id)
                    .and_then(|state| state.run.as_mut())
                    .filter(|run| !run.local && run.generation == generation)
                {
                    run.lagging = true;
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
        let chats = self.lock();
        let state = chats.get(&chat_id)?;
        let run = state.run.as_ref()?;
        let behind = !run.local
            && !run.lagging
            && run.generation == generation
            && run.relayed_through.is_none_or(|through| through < id);
        behind.then(|| state.relay_progress.clone())
    }
}

fn relay_part(event: &StreamEvent) -> Option<RelayPart> {
    match event {
        StreamEvent::Part {
            step, seq, part, ..
        } => Some(RelayPart {
            seq: *seq,
            step: *step,
            part: part.clone(),
        }),
        _ => None,
    }
}

struct Items(HubReceiver);

fn source_item(item: Result<HubItem, Overflowed>) -> SourceItem {
    match item {
        Ok(HubItem::Event(event)) => match (event.as_ref(), relay_part(&event)) {
            (StreamEvent::Part { generation, .. }, Some(part)) => SourceItem::Part {
                generation: *generation,
                part,
            },
            (StreamEvent::Message { message, .. }, _) => match message.generation {
                Some(generation) => SourceItem::Committed {
                    generation,
                    through: message.id,
                },
                None => SourceItem::Other,
            },
            _ => SourceItem::Other,
        },
        Ok(HubItem::RunStarted(generation)) => SourceItem::RunStarted(generation),
        Ok(HubItem::RunEnded(generation)) => SourceItem::RunEnded(generation),
        Ok(HubItem::Resync) => SourceItem::Other,
        Err(Overflowed) => SourceItem::Overflowed,
    }
}

#[async_trait::async_trait]
impl WatchItems for Items {
    async fn next(&mut self) -> SourceItem {
        source_item(self.0.recv().await)
    }

    fn try_next(&mut self) -> Option<SourceItem> {
        match self.0.try_recv() {
            Ok(Some(item)) => Some(source_item(Ok(item))),
            Ok(None) => None,
            Err(Overflowed) => Some(SourceItem::Overflowed),
        }
    }
}

/// The hub as the relay's sink, by way of an `Arc` (the relay holds it).
pub struct HubSink(pub Arc<StreamHub>);

impl PartSink for HubSink {
    fn parts(&self, chat_id: ChatId, generation: Generation, parts: &[RelayPart]) {
        self.0.remote_parts(chat_id, generation, parts);
    }

    fn committed(&self, chat_id: ChatId, generation: Generation, through: MessageId) {
        self.0.remote_committed(chat_id, generation, through);
    }

    fn ended(&self, chat_id: ChatId, generation: Generation) {
        self.0.remote_ended(chat_id, generation);
    }
}

/// The hub as the relay's source, by way of an `Arc`.
pub struct HubSource(pub Arc<StreamHub>);

impl PartSource for HubSource {
    fn watch(&self, chat_id: ChatId, generation: Generation) -> Watch {
        let subscribed = self.0.subscribe(chat_id);
        // Only runs of this replica are served; relayed ones are someone else's.
        let run = subscribed
            .run
            .filter(|_| subscribed.local)
            .map(|(generation, parts)| {
                let parts = parts
                    .iter()
                    .filter_map(|part| relay_part(&part.event))
                    .collect();
                (generation, parts)
            });
        let ended = run.is_none() && self.0.ended_here(chat_id, generation);
        Watch {
            run,
            committed: subscribed.watermark,
            ended,
            items: Box::new(Items(subscribed.receiver)),
        }
    }
}
