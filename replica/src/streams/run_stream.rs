//! The turn loop's handle on its run in the hub: every part gets the next
//! `seq`; committed messages and retries clear the parts they supersede.

use std::sync::Arc;

use chatd_shared::{
    api,
    db::messages::Message,
    ids::{ChatId, Generation},
    parts::Part,
    status::{MessageRole, MessageVisibility},
    stream::StreamEvent,
};

use super::{buffer::BufferedPart, hub::StreamHub};

/// This replica's run of one chat, as the turn loop writes it. Dropping it
/// ends the run in the hub.
pub struct RunStream {
    hub: Arc<StreamHub>,
    chat_id: ChatId,
    generation: Generation,
    next_seq: u64,
}

impl RunStream {
    /// Starts buffering this replica's run `generation` of `chat_id` in
    /// `hub`; local subscribers hear `running` before any part of it.
    pub fn begin(hub: &Arc<StreamHub>, chat_id: ChatId, generation: Generation) -> Self {
        hub.start_local_run(chat_id, generation);
        Self {
            hub: hub.clone(),
            chat_id,
            generation,
            next_seq: 0,
        }
    }

    /// The run's generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Buffers and fans out a part of `step`; returns its `seq`.
    pub fn part(&mut self, step: i32, part: Part) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let buffered = BufferedPart::new(self.chat_id, self.generation, step, seq, part);
        self.hub.local_part(self.chat_id, self.generation, buffered);
        seq
    }

    /// True when someone on this replica watches the chat.
    pub fn has_subscribers(&self) -> bool {
        self.hub.subscriber_count(self.chat_id) > 0
    }

    /// Messages committed before this run's steps that local subscribers
    /// may not have yet, from the `history` the turn read (in id order):
    /// fanned out first, so the run's own messages never overtake them and
    /// subscribers get every message in id order. That is every message
    /// users see above the hub's watermark: the one that started the turn,
    /// and any before it whose notice this replica has not read yet (a
    /// reply committed elsewhere a moment ago), which the watermark would
    /// otherwise pass over. With no watermark yet (a subscriber still
    /// reading its snapshot, which it merges), the trailing user messages.
    pub fn preceding(&mut self, history: &[Message]) {
        let shown = |m: &&Message| m.visibility != MessageVisibility::Model;
        let unseen: Vec<&Message> = match self.hub.watermark(self.chat_id) {
            Some(watermark) => history
                .iter()
                .filter(|m| m.id > watermark)
                .filter(shown)
                .collect(),
            None => {
                let users = history
                    .iter()
                    .rev()
                    .take_while(|m| m.role == MessageRole::User)
                    .count();
                history[history.len() - users..]
                    .iter()
                    .filter(shown)
                    .collect()
            }
        };
        for message in unseen {
            self.hub.publish(
                self.chat_id,
                StreamEvent::Message {
                    chat_id: message.chat_id,
                    message: api::Message::from(message),
                },
            );
        }
    }

    /// The messages of `step` committed: they supersede its parts, which
    /// leave the buffer; local subscribers get the messages now, before any
    /// part of a later step.
    pub fn committed(&mut self, step: i32, messages: &[api::Message]) {
        let events = messages
            .iter()
            .map(|message| {
                Arc::new(StreamEvent::Message {
                    chat_id: message.chat_id,
                    message: message.clone(),
                })
            })
            .collect();
        self.hub
            .local_committed(self.chat_id, self.generation, step, events);
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
        self.hub
            .local_retry(self.chat_id, self.generation, step, event);
    }

    /// Sends a non-part event of this run to local subscribers.
    pub fn event(&self, event: StreamEvent) {
        self.hub.publish(self.chat_id, event);
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        self.hub.end_local_run(self.chat_id, self.generation);
    }
}
