//! Following one turn on a chat's stream: which events start, advance and
//! end it. Kept free of I/O so the rules can be tested on their own.
//!
//! A turn begins when its message is sent. Only statuses and parts of a
//! generation newer than the one the chat had before the send belong to
//! it: a snapshot after a reconnect repeats the old status, and must not
//! end the turn early.

use std::time::Duration;

use chatd_shared::{ids::Generation, status::ChatStatus, stream::StreamEvent};
use tokio::time::Instant;

/// What an event means for the turn being watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Nothing that changes the turn's course.
    Nothing,
    /// The turn is running, this long after the send (first time only).
    Running(Duration),
    /// The turn's first part, this long after the send.
    FirstPart(Duration),
    /// The chat is idle again: the turn is done.
    Finished {
        /// The generation the turn ran as.
        generation: Generation,
        /// Send to `waiting`.
        latency: Duration,
    },
    /// The turn ended in error; what the server said.
    Failed(String),
}

/// The state of one turn, as seen on the chat's stream.
#[derive(Debug)]
pub struct TurnWatch {
    /// The chat's generation before the send.
    before: Generation,
    sent_at: Instant,
    running_seen: bool,
    part_seen: bool,
    /// The newest status of this turn, for timeout messages.
    last_status: Option<(ChatStatus, Generation)>,
}

impl TurnWatch {
    /// Watches the turn started at `sent_at` on a chat at generation `before`.
    pub fn new(before: Generation, sent_at: Instant) -> Self {
        Self {
            before,
            sent_at,
            running_seen: false,
            part_seen: false,
            last_status: None,
        }
    }

    /// What `event`, received at `at`, means for the turn.
    pub fn observe(&mut self, event: &StreamEvent, at: Instant) -> Seen {
        let since_send = at.saturating_duration_since(self.sent_at);
        match event {
            StreamEvent::Status {
                status, generation, ..
            } if *generation > self.before => {
                self.last_status = Some((*status, *generation));
                match status {
                    ChatStatus::Running if !self.running_seen => {
                        self.running_seen = true;
                        Seen::Running(since_send)
                    }
                    ChatStatus::Waiting => Seen::Finished {
                        generation: *generation,
                        latency: since_send,
                    },
                    ChatStatus::Error => Seen::Failed(format!(
                        "the chat's status became error (generation {})",
                        generation.0
                    )),
                    // Waiting on tool results or subagents is still the
                    // turn: it goes on with the next generation's `running`.
                    ChatStatus::RequiresAction | ChatStatus::WaitingOnAgents => Seen::Nothing,
                    ChatStatus::Pending | ChatStatus::Running => Seen::Nothing,
                }
            }
            StreamEvent::Part { generation, .. }
                if *generation > self.before && !self.part_seen =>
            {
                self.part_seen = true;
                Seen::FirstPart(since_send)
            }
            StreamEvent::Error { error, .. } => {
                Seen::Failed(format!("{}: {}", error.code, error.message))
            }
            _ => Seen::Nothing,
        }
    }

    /// Where the turn got to, for a timeout's message.
    pub fn progress(&self) -> String {
        match self.last_status {
            None => "no status of the turn arrived".to_owned(),
            Some((status, generation)) => format!(
                "the last status was {status} (generation {}), {} part received",
                generation.0,
                if self.part_seen { "a" } else { "no" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use chatd_shared::{
        ids::ChatId,
        parts::Part,
        stream::{ErrorBody, StreamEvent},
    };

    use super::*;

    fn status(status: ChatStatus, generation: i64) -> StreamEvent {
        StreamEvent::Status {
            chat_id: ChatId::new_random(),
            status,
            generation: Generation(generation),
        }
    }

    fn part(generation: i64, seq: u64) -> StreamEvent {
        StreamEvent::Part {
            chat_id: ChatId::new_random(),
            generation: Generation(generation),
            step: 0,
            seq,
            part: Part::TextDelta { text: "a".into() },
        }
    }

    #[test]
    fn a_turn_runs_streams_and_finishes_in_a_newer_generation() {
        let sent = Instant::now();
        let ms = |n| sent + Duration::from_millis(n);
        let mut watch = TurnWatch::new(Generation(2), sent);
        // The snapshot of a resumed stream repeats the old status.
        assert_eq!(
            watch.observe(&status(ChatStatus::Waiting, 2), ms(1)),
            Seen::Nothing
        );
        assert_eq!(
            watch.observe(&status(ChatStatus::Pending, 2), ms(1)),
            Seen::Nothing
        );
        assert_eq!(
            watch.observe(&status(ChatStatus::Running, 3), ms(4)),
            Seen::Running(Duration::from_millis(4))
        );
        assert_eq!(
            watch.observe(&part(3, 1), ms(6)),
            Seen::FirstPart(Duration::from_millis(6))
        );
        assert_eq!(watch.observe(&part(3, 2), ms(7)), Seen::Nothing);
        assert_eq!(
            watch.observe(&status(ChatStatus::Running, 3), ms(8)),
            Seen::Nothing
        );
        assert_eq!(
            watch.observe(&status(ChatStatus::Waiting, 3), ms(9)),
            Seen::Finished {
                generation: Generation(3),
                latency: Duration::from_millis(9)
            }
        );
    }

    #[test]
    fn parts_of_an_older_generation_are_not_the_first_part() {
        let sent = Instant::now();
        let mut watch = TurnWatch::new(Generation(5), sent);
        assert_eq!(watch.observe(&part(5, 9), sent), Seen::Nothing);
        assert!(matches!(
            watch.observe(&part(6, 1), sent),
            Seen::FirstPart(_)
        ));
    }

    #[test]
    fn errors_are_reported() {
        let sent = Instant::now();
        let mut watch = TurnWatch::new(Generation(0), sent);
        let error = StreamEvent::Error {
            chat_id: ChatId::new_random(),
            error: ErrorBody {
                code: "turn_failed".into(),
                message: "provider error 500".into(),
            },
        };
        assert_eq!(
            watch.observe(&error, sent),
            Seen::Failed("turn_failed: provider error 500".into())
        );
        assert!(matches!(
            watch.observe(&status(ChatStatus::Error, 1), sent),
            Seen::Failed(message) if message.contains("generation 1")
        ));
    }

    #[test]
    fn a_timeout_says_how_far_the_turn_got() {
        let sent = Instant::now();
        let mut watch = TurnWatch::new(Generation(0), sent);
        assert_eq!(watch.progress(), "no status of the turn arrived");
        watch.observe(&status(ChatStatus::Running, 1), sent);
        assert_eq!(
            watch.progress(),
            "the last status was running (generation 1), no part received"
        );
    }
}
