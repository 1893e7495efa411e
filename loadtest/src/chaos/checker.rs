//! What each client checks as it goes (ARCHITECTURE.md §18; invariants 2, 3, 14):
//!
//! - parts: per generation in seq order, none twice, none skipped (a gap
//!   is allowed only where a message of that generation arrived since the
//!   last part: the worker drops a step's parts once its message commits,
//!   so a client that was away then gets the message instead);
//! - no part of a generation older than the newest status, no status older
//!   than one already shown;
//! - messages in id order, none twice (the failover stream drops repeats
//!   and counts them; any is a violation);
//! - the message of a step matches what the client showed of it: the
//!   draft's text is a prefix of the message's (equal unless the message
//!   overtook the last parts); no draft of an older generation is still
//!   shown once a newer generation committed a message (old parts are
//!   never shown as final).
//!
//! Each client also keeps what the end-of-run check against the database
//! needs (the message ids it received, the sends acknowledged), and puts
//! its disruptions down to the fault under way (see [`super::faults`]).

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chatd_shared::{
    client::{Applied, ChatView, Committed, Delivery, Draft},
    ids::{ChatId, Generation, MessageId},
    parts::Part,
    status::{ChatStatus, MessageRole},
    stream::{PartCursor, StreamEvent},
};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::faults::{FaultLog, FaultRef};
use crate::user::{ChatWatch, Watch};

/// Violations kept with their text; the rest are counted.
const EXAMPLES: usize = 50;
/// Characters of a text quoted in a violation.
const QUOTE: usize = 60;

/// Every violation a run found.
#[derive(Debug, Default)]
pub struct Violations {
    count: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Violations {
    /// Records one, naming its chat.
    pub fn add(&self, chat_id: ChatId, what: impl Into<String>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut examples = lock(&self.examples);
        if examples.len() < EXAMPLES {
            examples.push(format!("chat {chat_id}: {}", what.into()));
        }
    }

    /// How many so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The first ones, as text.
    pub fn examples(&self) -> Vec<String> {
        lock(&self.examples).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a client knew of its chat when its user was done, for the check
/// against the database.
#[derive(Debug, Clone, Default)]
pub struct ChatRecord {
    /// Every message id received, in order.
    pub messages: Vec<MessageId>,
    /// Sends answered with a success.
    pub sends_acknowledged: u64,
    /// A failure ended the user's run (a send's fate may be unknown).
    pub failed: bool,
}

/// What the harness shares with each chat's checker while the run goes on.
#[derive(Debug, Default)]
pub struct ChatProbe {
    /// The replica serving the chat's stream now.
    pub stream_replica: AtomicUsize,
    /// Set by the harness when a fault reaches the chat, whether or not
    /// its client will notice (a relay cut shows nothing but silence).
    mark: Mutex<Option<FaultRef>>,
}

impl ChatProbe {
    /// The chat was cut off by `fault`.
    pub fn mark(&self, fault: FaultRef) {
        *lock(&self.mark) = Some(fault);
    }
}

/// The state every checker of a run shares.
pub struct Checks {
    /// The faults and failover times.
    pub faults: Arc<FaultLog>,
    /// The violations.
    pub violations: Violations,
    probes: Mutex<HashMap<ChatId, Arc<ChatProbe>>>,
    records: Mutex<HashMap<ChatId, ChatRecord>>,
    /// Messages that arrived before the last parts of their step.
    drafts_overtaken: AtomicU64,
}

impl Checks {
    /// Checks that put disruptions down to the faults in `faults`.
    pub fn new(faults: Arc<FaultLog>) -> Self {
        Self {
            faults,
            violations: Violations::default(),
            probes: Mutex::new(HashMap::new()),
            records: Mutex::new(HashMap::new()),
            drafts_overtaken: AtomicU64::new(0),
        }
    }

    /// The probes of the chats being followed.
    pub fn probes(&self) -> Vec<(ChatId, Arc<ChatProbe>)> {
        lock(&self.probes)
            .iter()
            .map(|(id, probe)| (*id, probe.clone()))
            .collect()
    }

    /// What each client knew when its user was done.
    pub fn records(&self) -> HashMap<ChatId, ChatRecord> {
        lock(&self.records).clone()
    }

    /// Messages that arrived before the last parts of their step (their
    /// draft was a proper prefix): allowed, counted.
    pub fn drafts_overtaken(&self) -> u64 {
        self.drafts_overtaken.load(Ordering::Relaxed)
    }
}

/// [`Checks`] as the load test's [`Watch`].
pub struct CheckingWatch(pub Arc<Checks>);

impl Watch for CheckingWatch {
    fn chat(&self, _index: usize, chat_id: ChatId) -> Box<dyn ChatWatch> {
        let probe = Arc::new(ChatProbe::default());
        lock(&self.0.probes).insert(chat_id, probe.clone());
        Box::new(ChatChecker::new(chat_id, self.0.clone(), probe))
    }
}

/// A fault that reached a chat, and the longest the chat waited for a part
/// or message since.
struct Outage {
    fault: FaultRef,
    longest: Option<Duration>,
}

/// One client's checks.
pub struct ChatChecker {
    chat_id: ChatId,
    checks: Arc<Checks>,
    probe: Arc<ChatProbe>,
    view: ChatView,
    last_part: Option<PartCursor>,
    /// A message of `last_part`'s generation arrived after it.
    committed_since_part: bool,
    /// The newest generation a message was received of.
    message_generation: Option<Generation>,
    record: ChatRecord,
    /// The generation the turn in progress first ran as.
    turn_generation: Option<Generation>,
    /// The fault that reached the chat, while its window lasts.
    outage: Option<Outage>,
    /// Faults whose window closed (a later fault reached the chat) before
    /// any part or message came: the next data ends their outage too,
    /// measured up to the start of the fault that cut their window short.
    superseded: Vec<FaultRef>,
    /// When the last part or message arrived.
    last_data: Option<Instant>,
    /// The last fault the chat was counted for.
    counted: Option<usize>,
    /// The newest message is the final answer of a turn.
    answered: bool,
}

impl ChatChecker {
    fn new(chat_id: ChatId, checks: Arc<Checks>, probe: Arc<ChatProbe>) -> Self {
        Self {
            chat_id,
            checks,
            probe,
            view: ChatView::new(),
            last_part: None,
            committed_since_part: false,
            message_generation: None,
            record: ChatRecord::default(),
            turn_generation: None,
            outage: None,
            superseded: Vec::new(),
            last_data: None,
            counted: None,
            answered: true,
        }
    }

    fn violation(&self, what: impl Into<String>) {
        self.checks.violations.add(self.chat_id, what);
    }

    /// The client had to act at `at`: put it down to the fault under way.
    fn disrupted(&mut self, at: Instant) {
        match self.checks.faults.attribute(at) {
            Some(fault) => self.reached_by(fault),
            None => self.checks.faults.unattributed(),
        }
    }

    /// `fault` reached the chat: its longest wait for data is watched from
    /// the fault until the fault's window closes.
    fn reached_by(&mut self, fault: FaultRef) {
        if self.counted == Some(fault.id) {
            return;
        }
        match self.outage.take() {
            Some(Outage {
                fault: earlier,
                longest: None,
            }) => self.superseded.push(earlier),
            outage => {
                self.outage = outage;
                self.close_outage();
            }
        }
        self.checks.faults.affected(fault);
        self.counted = Some(fault.id);
        self.outage = Some(Outage {
            fault,
            longest: None,
        });
    }

    /// A part or message arrived at `at`.
    fn data_arrived(&mut self, at: Instant) {
        for fault in std::mem::take(&mut self.superseded) {
            let faults = &self.checks.faults;
            let since = self
                .last_data
                .map_or(fault.started, |last| last.max(fault.started));
            let until = faults.next_start(fault).map_or(at, |next| at.min(next));
            faults.recovered(fault, until.saturating_duration_since(since));
        }
        if let Some(outage) = &mut self.outage {
            let faults = &self.checks.faults;
            let open = faults.attribute(at) == Some(outage.fault);
            // The wait that ends now began at the fault at the earliest, and
            // what came after the next fault began is that fault's.
            let since = self
                .last_data
                .map_or(outage.fault.started, |last| last.max(outage.fault.started));
            let until = match faults.next_start(outage.fault) {
                Some(next) if !open => at.min(next),
                _ => at,
            };
            let wait = until.saturating_duration_since(since);
            outage.longest = outage.longest.max(Some(wait));
            if !open {
                self.close_outage();
            }
        }
        self.last_data = Some(at);
    }

    /// Records the longest wait of the outage being watched, if data came.
    fn close_outage(&mut self) {
        if let Some(Outage {
            fault,
            longest: Some(longest),
        }) = self.outage.take()
        {
            self.checks.faults.recovered(fault, longest);
        }
    }

    fn event(&mut self, event: &StreamEvent, at: Instant) {
        match event {
            StreamEvent::Status {
                status, generation, ..
            } => self.status(*status, *generation, at),
            StreamEvent::Part {
                generation, seq, ..
            } => self.part(*generation, *seq),
            StreamEvent::Message { message, .. } => {
                self.record.messages.push(message.id);
                if let Some(generation) = message.generation {
                    self.message_generation = self.message_generation.max(Some(generation));
                    if self.last_part.is_some_and(|p| p.generation == generation) {
                        self.committed_since_part = true;
                    }
                }
                self.answered = message.role == MessageRole::Assistant
                    && !message
                        .content
                        .iter()
                        .any(|part| matches!(part, Part::ToolCall { .. }));
            }
            _ => {}
        }
        let applied = self.view.apply(event);
        self.applied(event, applied);
        if matches!(
            event,
            StreamEvent::Part { .. } | StreamEvent::Message { .. }
        ) {
            self.data_arrived(at);
        }
    }

    fn status(&mut self, status: ChatStatus, generation: Generation, at: Instant) {
        if status != ChatStatus::Running {
            return;
        }
        match self.turn_generation {
            // The turn started over under a newer generation: its run was
            // recovered or handed back.
            Some(first) if generation > first => self.disrupted(at),
            Some(_) => {}
            None => self.turn_generation = Some(generation),
        }
    }

    fn part(&mut self, generation: Generation, seq: u64) {
        let position = PartCursor { generation, seq };
        match self.last_part {
            Some(last) if position <= last => {
                self.violation(format!("part {position} after part {last}"));
            }
            Some(last) if last.generation == generation => {
                if seq != last.seq + 1 && !self.committed_since_part {
                    self.violation(format!(
                        "parts skipped: {position} after {last} with no message between"
                    ));
                }
            }
            _ => {
                if seq != 0 && self.message_generation != Some(generation) {
                    self.violation(format!(
                        "the first part of generation {} has seq {seq} and no message of it came before",
                        generation.0
                    ));
                }
            }
        }
        self.last_part = self.last_part.max(Some(position));
        self.committed_since_part = false;
    }

    /// Checks what the view made of an event.
    fn applied(&mut self, event: &StreamEvent, applied: Applied) {
        match (event, applied) {
            (StreamEvent::Part { generation, .. }, Applied::StalePart) => {
                let shown = self.view.status().map_or(0, |(_, g)| g.0);
                self.violation(format!(
                    "a part of generation {} after the status of generation {shown}",
                    generation.0
                ));
            }
            (StreamEvent::Status { generation, .. }, Applied::StaleStatus) => {
                let shown = self.view.status().map_or(0, |(_, g)| g.0);
                self.violation(format!(
                    "the status of generation {} after that of generation {shown}",
                    generation.0
                ));
            }
            (StreamEvent::Message { message, .. }, Applied::Message { replaced }) => {
                if let Some(draft) = replaced {
                    self.compare(message.id, &draft, &Committed::of(message));
                }
                self.no_older_draft(message.generation, message.id);
            }
            _ => {}
        }
    }

    /// The message of a step against the draft the client showed of it.
    fn compare(&self, id: MessageId, draft: &Draft, committed: &Committed) {
        let text_ok = committed.text.starts_with(&draft.text);
        let reasoning_ok = committed.reasoning.starts_with(&draft.reasoning);
        if !(text_ok && reasoning_ok) {
            let mut what = format!(
                "message {} (generation {}, step {}) differs from the {} parts shown: shown ",
                id.0, draft.generation.0, draft.step, draft.parts
            );
            let _ = write!(
                what,
                "{:?}, committed {:?}",
                quote(&draft.text),
                quote(&committed.text)
            );
            self.violation(what);
        } else if draft.text.len() < committed.text.len()
            || draft.reasoning.len() < committed.reasoning.len()
        {
            self.checks.drafts_overtaken.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Once generation `committed` wrote a message, no draft of an older
    /// generation may still be shown.
    fn no_older_draft(&self, committed: Option<Generation>, id: MessageId) {
        let (Some(committed), Some(draft)) = (committed, self.view.draft()) else {
            return;
        };
        if draft.generation < committed {
            self.violation(format!(
                "a draft of generation {} ({:?}) is still shown after message {} of generation {}",
                draft.generation.0,
                quote(&draft.text),
                id.0,
                committed.0
            ));
        }
    }
}

/// The start of `text`, for a violation's message.
fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(QUOTE).collect();
    if chars.next().is_some() {
        quoted.push('…');
    }
    quoted
}

impl ChatWatch for ChatChecker {
    fn sent(&mut self, status: StatusCode, moved: bool, at: Instant) {
        if status.is_success() {
            self.record.sends_acknowledged += 1;
        }
        if moved {
            self.disrupted(at);
        }
    }

    fn delivered(&mut self, delivery: &Delivery, replica: usize, at: Instant) {
        self.probe.stream_replica.store(replica, Ordering::Relaxed);
        let marked = lock(&self.probe.mark).take();
        if let Some(fault) = marked {
            self.reached_by(fault);
        }
        match delivery {
            Delivery::Resumed(_) => self.disrupted(at),
            Delivery::Event(event) => self.event(event, at),
        }
    }

    fn turn_finished(&mut self, _generation: Generation, _at: Instant) {
        self.turn_generation = None;
    }

    fn wants_more(&self) -> bool {
        !self.answered || self.view.draft().is_some()
    }

    fn done(&mut self, failed: bool, repeats_dropped: u64) {
        self.close_outage();
        if repeats_dropped > 0 {
            self.violation(format!(
                "servers sent {repeats_dropped} parts or messages again at or below the client's cursor"
            ));
        }
        if !failed {
            let shown = self.view.status().map(|(_, generation)| generation);
            if let Some(draft) = self.view.draft()
                && shown.is_some_and(|shown| draft.generation < shown)
            {
                self.violation(format!(
                    "a draft of generation {} ({:?}) is still shown at the end",
                    draft.generation.0,
                    quote(&draft.text)
                ));
            }
        }
        let mut record = std::mem::take(&mut self.record);
        record.failed = failed;
        lock(&self.checks.records).insert(self.chat_id, record);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chatd_shared::{api::Message, parts::Usage};
    use chrono::DateTime;

    use super::*;

    fn checker() -> (ChatChecker, Arc<Checks>) {
        let faults = Arc::new(FaultLog::new(Instant::now(), Duration::from_secs(10)));
        let checks = Arc::new(Checks::new(faults));
        let chat_id = ChatId::new_random();
        let checker = ChatChecker::new(chat_id, checks.clone(), Arc::default());
        (checker, checks)
    }

    fn feed(checker: &mut ChatChecker, events: &[StreamEvent]) {
        for event in events {
            checker.delivered(&Delivery::Event(event.clone()), 0, Instant::now());
        }
    }

    fn status(generation: i64) -> StreamEvent {
        StreamEvent::Status {
            chat_id: ChatId::new_random(),
            status: ChatStatus::Running,
            generation: Generation(generation),
        }
    }

    fn part(generation: i64, seq: u64, text: &str) -> StreamEvent {
        StreamEvent::Part {
            chat_id: ChatId::new_random(),
            generation: Generation(generation),
            step: 0,
            seq,
            part: Part::TextDelta { text: text.into() },
        }
    }

    fn message(id: i64, generation: i64, text: &str) -> StreamEvent {
        StreamEvent::Message {
            chat_id: ChatId::new_random(),
            message: Message {
                id: MessageId(id),
                chat_id: ChatId::new_random(),
                role: MessageRole::Assistant,
                content: vec![Part::text(text)],
                created_by: None,
                generation: Some(Generation(generation)),
                step: Some(0),
                usage: Usage::default(),
                cost_micros: None,
                created_at: DateTime::UNIX_EPOCH,
            },
        }
    }

    #[test]
    fn a_regenerated_step_that_replaces_its_draft_is_no_violation() {
        let (mut checker, checks) = checker();
        feed(
            &mut checker,
            &[
                status(1),
                part(1, 0, "Hel"),
                part(1, 1, "lo wor"),
                status(2),
                part(2, 0, "Hello "),
                part(2, 1, "world"),
                message(5, 2, "Hello world"),
            ],
        );
        assert_eq!(checks.violations.examples(), Vec::<String>::new());
    }

    #[test]
    fn skipped_repeated_and_stale_parts_are_violations() {
        let (mut checker, checks) = checker();
        feed(
            &mut checker,
            &[status(1), part(1, 0, "a"), part(1, 2, "c"), part(1, 2, "c")],
        );
        feed(&mut checker, &[status(2), part(1, 3, "d")]);
        let found = checks.violations.examples();
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].contains("parts skipped: 1.2 after 1.0"));
        assert!(found[1].contains("part 1.2 after part 1.2"));
        assert!(found[2].contains("a part of generation 1 after the status of generation 2"));
    }

    #[test]
    fn a_gap_is_allowed_where_a_message_of_the_generation_came_between() {
        let (mut checker, checks) = checker();
        feed(
            &mut checker,
            &[
                status(1),
                part(1, 0, "He"),
                message(5, 1, "Hello"),
                part(1, 7, "x"),
            ],
        );
        assert_eq!(checks.violations.count(), 0);
        assert_eq!(checks.drafts_overtaken(), 1);
    }

    #[test]
    fn a_message_that_differs_from_its_draft_is_a_violation() {
        let (mut checker, checks) = checker();
        feed(
            &mut checker,
            &[status(1), part(1, 0, "Hello"), message(5, 1, "Goodbye")],
        );
        let found = checks.violations.examples();
        assert!(
            found[0].contains("differs from the 1 parts shown"),
            "{found:?}"
        );
    }
}
