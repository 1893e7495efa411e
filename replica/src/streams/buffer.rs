//! The parts of a run's step in progress, as a replica keeps them for
//! subscribers that join late (ARCHITECTURE.md §6): bounded, oldest evicted. A
//! replica buffers two kinds of run, kept apart as two types: its own
//! ([`LocalRun`]), and a run on a peer whose parts the relay brings here
//! ([`RelayedRun`]).

use std::{collections::VecDeque, sync::Arc};

use chatd_shared::{
    ids::{ChatId, Generation, MessageId},
    parts::Part,
    stream::StreamEvent,
};

/// Limits of one run's part buffer (ARCHITECTURE.md §6): past either, the oldest
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

impl BufferedPart {
    /// Part `seq` of step `step` of run `generation` of `chat_id`, as its
    /// stream event.
    pub(super) fn new(
        chat_id: ChatId,
        generation: Generation,
        step: i32,
        seq: u64,
        part: Part,
    ) -> Self {
        let bytes = approximate_size(&part);
        let event = Arc::new(StreamEvent::Part {
            chat_id,
            generation,
            step,
            seq,
            part,
        });
        Self {
            step,
            seq,
            event,
            bytes,
        }
    }
}

/// The parts of a run's steps that are not committed yet, in seq order.
#[derive(Debug, Default)]
pub(super) struct PartBuffer {
    parts: VecDeque<BufferedPart>,
    bytes: usize,
}

impl PartBuffer {
    /// Appends a part, evicting the oldest past the limits; returns how many
    /// were evicted.
    pub(super) fn push(&mut self, part: BufferedPart, limits: BufferLimits) -> u64 {
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

    /// Keeps the parts `keep` says yes to.
    fn retain(&mut self, keep: impl Fn(&BufferedPart) -> bool) {
        self.parts.retain(keep);
        self.bytes = self.parts.iter().map(|part| part.bytes).sum();
    }

    /// The steps up to `step` were committed: their messages supersede them.
    pub(super) fn drop_through(&mut self, step: i32) {
        self.retain(|part| part.step > step);
    }

    /// Step `step` is retried: its draft is void.
    pub(super) fn drop_step(&mut self, step: i32) {
        self.retain(|part| part.step != step);
    }

    /// Every buffered part, for a new subscriber.
    pub(super) fn snapshot(&self) -> Vec<BufferedPart> {
        self.parts.iter().cloned().collect()
    }
}

/// A run of this replica's own.
#[derive(Debug)]
pub(super) struct LocalRun {
    /// Its generation.
    pub(super) generation: Generation,
    /// The parts of its step in progress.
    pub(super) parts: PartBuffer,
}

/// A run on a peer whose parts the relay brings here, for local subscribers.
#[derive(Debug)]
pub(super) struct RelayedRun {
    /// Its generation.
    pub(super) generation: Generation,
    /// The parts relayed so far of its step in progress.
    pub(super) parts: PartBuffer,
    /// The worker committed its messages up to here, and sent every part of
    /// their steps before saying so.
    relayed_through: Option<MessageId>,
    /// The relay fell behind the database once: this run's messages no
    /// longer wait for its parts.
    lagging: bool,
}

impl RelayedRun {
    pub(super) fn new(generation: Generation) -> Self {
        Self {
            generation,
            parts: PartBuffer::default(),
            relayed_through: None,
            lagging: false,
        }
    }

    /// The worker says its messages up to `through` are committed.
    pub(super) fn committed(&mut self, through: MessageId) {
        self.relayed_through = self.relayed_through.max(Some(through));
    }

    /// True when message `id` of run `generation` must still wait for the
    /// parts of its step.
    pub(super) fn is_behind(&self, generation: Generation, id: MessageId) -> bool {
        !self.lagging
            && self.generation == generation
            && self.relayed_through.is_none_or(|through| through < id)
    }

    /// Its messages stop waiting for its parts.
    pub(super) fn lag(&mut self) {
        self.lagging = true;
    }
}

/// The run a replica buffers for one chat.
#[derive(Debug)]
pub(super) enum Run {
    /// This replica runs it.
    Local(LocalRun),
    /// A peer runs it; its parts are relayed.
    Relayed(RelayedRun),
}

impl Run {
    /// Its generation.
    pub(super) fn generation(&self) -> Generation {
        match self {
            Self::Local(run) => run.generation,
            Self::Relayed(run) => run.generation,
        }
    }

    /// Its parts.
    pub(super) fn parts(&self) -> &PartBuffer {
        match self {
            Self::Local(run) => &run.parts,
            Self::Relayed(run) => &run.parts,
        }
    }

    /// Its parts, to change.
    pub(super) fn parts_mut(&mut self) -> &mut PartBuffer {
        match self {
            Self::Local(run) => &mut run.parts,
            Self::Relayed(run) => &mut run.parts,
        }
    }

    /// The relayed run, if it is one.
    pub(super) fn relayed_mut(&mut self) -> Option<&mut RelayedRun> {
        match self {
            Self::Local(_) => None,
            Self::Relayed(run) => Some(run),
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
