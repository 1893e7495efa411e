//! What a client shows of one chat, built from the events of its stream
//! (ARCHITECTURE.md §6, invariant 14): the newest status, the newest committed
//! message, and the draft of the step in progress.
//!
//! The draft is a preview. A committed message of the same generation and
//! step replaces it; a `retry` discards it (the step starts over); a status
//! of a newer generation discards it too, because a step regenerated after a
//! crash is a new run whose parts start from nothing. Parts of a generation
//! older than the newest status are never shown.

use crate::{
    api::Message,
    ids::{Generation, MessageId},
    parts::Part,
    status::{ChatStatus, MessageRole},
    stream::StreamEvent,
};

/// The text of the step in progress, as its parts arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The run the parts belong to.
    pub generation: Generation,
    /// The step of that run.
    pub step: i32,
    /// The `text_delta`s, joined.
    pub text: String,
    /// The `reasoning_delta`s, joined.
    pub reasoning: String,
    /// Parts received for this step.
    pub parts: u64,
}

impl Draft {
    fn new(generation: Generation, step: i32) -> Self {
        Self {
            generation,
            step,
            text: String::new(),
            reasoning: String::new(),
            parts: 0,
        }
    }

    fn add(&mut self, part: &Part) {
        match part {
            Part::TextDelta { text } => self.text.push_str(text),
            Part::ReasoningDelta { text } => self.reasoning.push_str(text),
            _ => {}
        }
        self.parts += 1;
    }
}

/// What the text and reasoning of a committed message say, to set beside a
/// [`Draft`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The message's text parts, joined.
    pub text: String,
    /// The message's reasoning parts, joined.
    pub reasoning: String,
}

impl Committed {
    /// The text and reasoning of `message`.
    pub fn of(message: &Message) -> Self {
        let mut committed = Self::default();
        for part in &message.content {
            match part {
                Part::Text { text } => committed.text.push_str(text),
                Part::Reasoning { text, .. } => committed.reasoning.push_str(text),
                _ => {}
            }
        }
        committed
    }
}

/// What applying one event did to the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A status of a newer generation, or a new status of the current one;
    /// `dropped` is the draft it discarded (an older generation's).
    Status {
        /// The draft of an older generation that is no longer shown.
        dropped: Option<Draft>,
    },
    /// A status older than the one shown: ignored.
    StaleStatus,
    /// A part added to the draft.
    Part,
    /// A part of a generation older than the newest status: not shown.
    StalePart,
    /// A message committed. `replaced` is the draft of its step, when one
    /// was shown: the message now stands in its place.
    Message {
        /// The draft the message replaces.
        replaced: Option<Draft>,
    },
    /// The worker retries the step: `dropped` is the draft it discarded.
    Retry {
        /// The discarded draft.
        dropped: Option<Draft>,
    },
    /// Anything else (queue, title, refresh, error, reconnect).
    Other,
}

/// One chat as a client shows it. Feed it every event of the chat's stream,
/// in order, with [`ChatView::apply`].
#[derive(Debug, Clone, Default)]
pub struct ChatView {
    status: Option<(ChatStatus, Generation)>,
    last_message: Option<MessageId>,
    draft: Option<Draft>,
}

impl ChatView {
    /// An empty view (nothing received yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// The newest status and its generation.
    pub fn status(&self) -> Option<(ChatStatus, Generation)> {
        self.status
    }

    /// The newest committed message received.
    pub fn last_message(&self) -> Option<MessageId> {
        self.last_message
    }

    /// The draft of the step in progress, if any part of it arrived.
    pub fn draft(&self) -> Option<&Draft> {
        self.draft.as_ref()
    }

    fn generation(&self) -> Option<Generation> {
        self.status.map(|(_, generation)| generation)
    }

    /// Applies the next event of the stream.
    pub fn apply(&mut self, event: &StreamEvent) -> Applied {
        match event {
            StreamEvent::Status {
                status, generation, ..
            } => self.apply_status(*status, *generation),
            StreamEvent::Part {
                generation,
                step,
                part,
                ..
            } => self.apply_part(*generation, *step, part),
            StreamEvent::Message { message, .. } => self.apply_message(message),
            StreamEvent::Retry { generation, .. } => {
                let dropped = self.draft.take_if(|draft| draft.generation <= *generation);
                Applied::Retry { dropped }
            }
            _ => Applied::Other,
        }
    }

    fn apply_status(&mut self, status: ChatStatus, generation: Generation) -> Applied {
        if self.generation().is_some_and(|shown| generation < shown) {
            return Applied::StaleStatus;
        }
        self.status = Some((status, generation));
        // A newer generation is a new run: what an older one streamed will
        // never be committed as it was shown.
        let dropped = self.draft.take_if(|draft| draft.generation < generation);
        Applied::Status { dropped }
    }

    fn apply_part(&mut self, generation: Generation, step: i32, part: &Part) -> Applied {
        if self.generation().is_some_and(|shown| generation < shown) {
            return Applied::StalePart;
        }
        if self.generation().is_none_or(|shown| generation > shown) {
            // `running` of a generation precedes its parts; a stream that
            // starts mid-run may show the part first.
            self.apply_status(ChatStatus::Running, generation);
        }
        match &mut self.draft {
            // Older generations' drafts were dropped with their status, so
            // the step alone tells drafts apart.
            Some(draft) if draft.step == step => draft.add(part),
            draft => {
                let mut fresh = Draft::new(generation, step);
                fresh.add(part);
                *draft = Some(fresh);
            }
        }
        Applied::Part
    }

    fn apply_message(&mut self, message: &Message) -> Applied {
        self.last_message = self.last_message.max(Some(message.id));
        let replaced = match (message.role, message.generation, message.step) {
            (MessageRole::Assistant, Some(generation), Some(step)) => self
                .draft
                .take_if(|draft| draft.generation == generation && draft.step == step),
            _ => None,
        };
        Applied::Message { replaced }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::{
        ids::ChatId,
        parts::{Part, Usage},
    };

    fn chat() -> ChatId {
        ChatId::new_random()
    }

    fn status(status: ChatStatus, generation: i64) -> StreamEvent {
        StreamEvent::Status {
            chat_id: chat(),
            status,
            generation: Generation(generation),
        }
    }

    fn part(generation: i64, step: i32, seq: u64, text: &str) -> StreamEvent {
        StreamEvent::Part {
            chat_id: chat(),
            generation: Generation(generation),
            step,
            seq,
            part: Part::TextDelta { text: text.into() },
        }
    }

    fn message(id: i64, generation: i64, step: i32, text: &str) -> StreamEvent {
        StreamEvent::Message {
            chat_id: chat(),
            message: Message {
                id: MessageId(id),
                chat_id: chat(),
                role: MessageRole::Assistant,
                content: vec![Part::text(text)],
                created_by: None,
                generation: Some(Generation(generation)),
                step: Some(step),
                usage: Usage::default(),
                cost_micros: None,
                created_at: DateTime::UNIX_EPOCH,
            },
        }
    }

    fn draft_text(view: &ChatView) -> Option<&str> {
        view.draft().map(|draft| draft.text.as_str())
    }

    #[test]
    fn a_message_replaces_the_draft_of_its_step() {
        let mut view = ChatView::new();
        view.apply(&status(ChatStatus::Running, 3));
        view.apply(&part(3, 0, 0, "Hel"));
        view.apply(&part(3, 0, 1, "lo"));
        assert_eq!(draft_text(&view), Some("Hello"));
        let Applied::Message {
            replaced: Some(draft),
        } = view.apply(&message(10, 3, 0, "Hello"))
        else {
            panic!("the message replaces the draft");
        };
        assert_eq!((draft.text.as_str(), draft.parts), ("Hello", 2));
        assert_eq!(view.draft(), None);
        assert_eq!(view.last_message(), Some(MessageId(10)));
    }

    #[test]
    fn a_newer_generation_drops_the_draft_and_old_parts_are_not_shown() {
        let mut view = ChatView::new();
        view.apply(&status(ChatStatus::Running, 3));
        view.apply(&part(3, 0, 0, "Hello wor"));
        let Applied::Status {
            dropped: Some(dropped),
        } = view.apply(&status(ChatStatus::Running, 4))
        else {
            panic!("the regenerated step drops the old draft");
        };
        assert_eq!(dropped.text, "Hello wor");
        assert_eq!(view.draft(), None);
        assert_eq!(view.apply(&part(3, 0, 1, "ld")), Applied::StalePart);
        assert_eq!(
            view.apply(&status(ChatStatus::Pending, 3)),
            Applied::StaleStatus
        );
        view.apply(&part(4, 0, 0, "Hi"));
        assert_eq!(draft_text(&view), Some("Hi"));
        assert!(matches!(
            view.apply(&message(11, 4, 0, "Hi")),
            Applied::Message { replaced: Some(_) }
        ));
    }

    #[test]
    fn a_retry_starts_the_step_over_and_steps_keep_separate_drafts() {
        let mut view = ChatView::new();
        view.apply(&part(2, 0, 0, "first try"));
        assert_eq!(view.status(), Some((ChatStatus::Running, Generation(2))));
        let retry = StreamEvent::Retry {
            chat_id: chat(),
            generation: Generation(2),
            attempt: 2,
            delay_ms: 10,
            error: "rate limited".into(),
        };
        assert!(matches!(
            view.apply(&retry),
            Applied::Retry { dropped: Some(_) }
        ));
        view.apply(&part(2, 0, 5, "second"));
        view.apply(&message(20, 2, 0, "second"));
        view.apply(&part(2, 1, 6, "next step"));
        assert_eq!(view.draft().map(|d| d.step), Some(1));
        // A message of another step leaves the draft alone.
        assert_eq!(
            view.apply(&message(19, 2, 0, "second")),
            Applied::Message { replaced: None }
        );
        assert_eq!(draft_text(&view), Some("next step"));
    }
}
