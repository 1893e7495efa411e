//! What a run measures, shared by every virtual user: latency histograms
//! (hdrhistogram, microseconds), turn counters, stream counters and
//! failures by stage.
//!
//! Recording takes a short uncontended lock (a few per turn), never across
//! an await, so thousands of users share one set of histograms instead of
//! each keeping its own.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The highest latency a histogram tells apart: one hour, in microseconds.
/// Longer values are recorded as one hour.
const HIGHEST_US: u64 = 3_600_000_000;
/// Significant figures the histograms keep (0.1 % resolution).
const SIGNIFICANT_FIGURES: u8 = 3;
/// Error messages kept per stage.
pub const EXAMPLES_PER_STAGE: usize = 5;

/// Where a chat's run failed. Each failure ends that chat's run; its turns
/// not yet taken are counted as not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `POST /chats` failed.
    Create,
    /// The chat stream could not be opened, resumed or read.
    Stream,
    /// `POST /chats/{id}/messages` failed.
    Send,
    /// The turn ended in `error`.
    Turn,
    /// The turn did not reach `waiting` within `--timeout`.
    Timeout,
}

impl Stage {
    /// The stage's name, as in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Stream => "stream",
            Self::Send => "send",
            Self::Turn => "turn",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A latency the run records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `POST /chats`, request to answer.
    Create,
    /// Send to `status: running` on the stream.
    TimeToRunning,
    /// Send to the first `part` on the stream.
    TimeToFirstPart,
    /// Send to `status: waiting` on the stream.
    Turn,
    /// How much later a part reached the chat's stream than the earliest
    /// stream of the same chat on any target.
    RelayStaleness,
}

/// The failures of one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageFailures {
    /// How many times the stage failed.
    pub count: u64,
    /// The first few error messages (`chat <id>: <error>`).
    pub examples: Vec<String>,
}

/// Percentiles of one latency, in microseconds; all `null` when nothing was
/// recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// Largest value.
    pub max: Option<u64>,
}

impl Percentiles {
    /// The percentiles of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50: Some(histogram.value_at_quantile(0.50)),
            p90: Some(histogram.value_at_quantile(0.90)),
            p99: Some(histogram.value_at_quantile(0.99)),
            max: Some(histogram.max()),
        }
    }
}

/// The histograms, one per [`Metric`].
struct Histograms {
    create: Histogram<u64>,
    time_to_running: Histogram<u64>,
    time_to_first_part: Histogram<u64>,
    turn: Histogram<u64>,
    relay_staleness: Histogram<u64>,
}

impl Histograms {
    fn new() -> Self {
        let histogram = || {
            Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_FIGURES)
                .expect("constant histogram bounds are valid")
        };
        Self {
            create: histogram(),
            time_to_running: histogram(),
            time_to_first_part: histogram(),
            turn: histogram(),
            relay_staleness: histogram(),
        }
    }

    fn get_mut(&mut self, metric: Metric) -> &mut Histogram<u64> {
        match metric {
            Metric::Create => &mut self.create,
            Metric::TimeToRunning => &mut self.time_to_running,
            Metric::TimeToFirstPart => &mut self.time_to_first_part,
            Metric::Turn => &mut self.turn,
            Metric::RelayStaleness => &mut self.relay_staleness,
        }
    }
}

/// Everything recorded so far, shared by the users of one run.
pub struct Recorder {
    /// When the run began; turn-phase bounds are kept relative to it.
    epoch: Instant,
    histograms: Mutex<Histograms>,
    turns_completed: AtomicU64,
    turns_failed: AtomicU64,
    chats_ready: AtomicU64,
    reconnects: AtomicU64,
    parts_not_delivered: AtomicU64,
    /// Microseconds from `epoch` to the first send; `u64::MAX` before it.
    first_send_us: AtomicU64,
    /// Microseconds from `epoch` to the last turn's end; 0 before it.
    last_turn_end_us: AtomicU64,
    failures: Mutex<BTreeMap<Stage, StageFailures>>,
}

/// A copy of the counters, for the progress line and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Turns that reached `waiting`.
    pub turns_completed: u64,
    /// Turns that failed (stages send, turn, timeout, or stream mid-turn).
    pub turns_failed: u64,
    /// Chats created with their stream open.
    pub chats_ready: u64,
    /// Failures of every stage.
    pub failures: u64,
    /// Streams resumed from their cursor.
    pub reconnects: u64,
    /// Parts another target's stream delivered and the chat's stream never did.
    pub parts_not_delivered: u64,
}

/// The latency percentiles of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latencies {
    /// `POST /chats`.
    pub create: Percentiles,
    /// Send → `status: running`.
    pub time_to_running: Percentiles,
    /// Send → first `part` (only turns whose parts reached the chat's stream).
    pub time_to_first_part: Percentiles,
    /// Send → `status: waiting`.
    pub turn: Percentiles,
    /// Per part of a sampled chat: arrival on the chat's stream minus the
    /// earliest arrival on any target's stream.
    pub relay_staleness: Percentiles,
}

impl Recorder {
    /// An empty recorder; the run's clock starts now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            histograms: Mutex::new(Histograms::new()),
            turns_completed: AtomicU64::new(0),
            turns_failed: AtomicU64::new(0),
            chats_ready: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            parts_not_delivered: AtomicU64::new(0),
            first_send_us: AtomicU64::new(u64::MAX),
            last_turn_end_us: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    fn histograms(&self) -> MutexGuard<'_, Histograms> {
        // A panic while recording cannot leave a histogram half-written in
        // a way that matters for a report.
        self.histograms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one latency.
    pub fn record(&self, metric: Metric, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histograms().get_mut(metric).saturating_record(micros);
    }

    /// Notes that a turn's message is about to be sent at `at`.
    pub fn turn_sent(&self, at: Instant) {
        self.first_send_us
            .fetch_min(self.micros_since_epoch(at), Ordering::Relaxed);
    }

    /// Records a turn that reached `waiting` at `at`, `latency` after its send.
    pub fn turn_completed(&self, at: Instant, latency: Duration) {
        self.record(Metric::Turn, latency);
        self.last_turn_end_us
            .fetch_max(self.micros_since_epoch(at), Ordering::Relaxed);
        self.turns_completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a chat created with its stream open.
    pub fn chat_ready(&self) {
        self.chats_ready.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stream resumed from its cursor.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts parts the chat's stream never delivered.
    pub fn parts_not_delivered(&self, parts: u64) {
        if parts > 0 {
            self.parts_not_delivered.fetch_add(parts, Ordering::Relaxed);
        }
    }

    /// Records a failure of `stage`; `during_turn` when it cost a turn.
    pub fn failed(&self, stage: Stage, during_turn: bool, message: String) {
        if during_turn {
            self.turns_failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(stage).or_default();
        entry.count += 1;
        if entry.examples.len() < EXAMPLES_PER_STAGE {
            entry.examples.push(message);
        }
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Counters {
            turns_completed: self.turns_completed.load(Ordering::Relaxed),
            turns_failed: self.turns_failed.load(Ordering::Relaxed),
            chats_ready: self.chats_ready.load(Ordering::Relaxed),
            failures: failures.values().map(|stage| stage.count).sum(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            parts_not_delivered: self.parts_not_delivered.load(Ordering::Relaxed),
        }
    }

    /// The median turn latency so far.
    pub fn median_turn(&self) -> Option<Duration> {
        let histograms = self.histograms();
        (!histograms.turn.is_empty())
            .then(|| Duration::from_micros(histograms.turn.value_at_quantile(0.5)))
    }

    /// From the first send to the end of the last completed turn; `None`
    /// before a turn completed.
    pub fn turn_phase(&self) -> Option<Duration> {
        let first = self.first_send_us.load(Ordering::Relaxed);
        let last = self.last_turn_end_us.load(Ordering::Relaxed);
        (first != u64::MAX && last > first).then(|| Duration::from_micros(last - first))
    }

    /// The percentiles of every latency.
    pub fn latencies(&self) -> Latencies {
        let histograms = self.histograms();
        Latencies {
            create: Percentiles::of(&histograms.create),
            time_to_running: Percentiles::of(&histograms.time_to_running),
            time_to_first_part: Percentiles::of(&histograms.time_to_first_part),
            turn: Percentiles::of(&histograms.turn),
            relay_staleness: Percentiles::of(&histograms.relay_staleness),
        }
    }

    /// The failures, by stage.
    pub fn failures(&self) -> BTreeMap<Stage, StageFailures> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn micros_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_within_the_histograms_precision() {
        let recorder = Recorder::new();
        for ms in 1..=100 {
            recorder.record(Metric::Create, Duration::from_millis(ms));
        }
        let create = recorder.latencies().create;
        assert_eq!(create.count, 100);
        let close = |value: Option<u64>, expected: u64| {
            let value = value.unwrap() as f64;
            (value - expected as f64).abs() <= expected as f64 * 0.001 + 1.0
        };
        assert!(close(create.p50, 50_000), "{create:?}");
        assert!(close(create.p90, 90_000), "{create:?}");
        assert!(close(create.p99, 99_000), "{create:?}");
        assert!(close(create.max, 100_000), "{create:?}");
        assert!(create.p50 <= create.p90 && create.p90 <= create.p99 && create.p99 <= create.max);
    }

    #[test]
    fn nothing_recorded_has_no_percentiles() {
        let latencies = Recorder::new().latencies();
        assert_eq!(latencies.turn, Percentiles::default());
        assert_eq!(latencies.turn.p50, None);
    }

    #[test]
    fn latencies_beyond_an_hour_are_kept_as_an_hour() {
        let recorder = Recorder::new();
        recorder.record(Metric::Turn, Duration::from_secs(7200));
        let max = recorder.latencies().turn.max.unwrap();
        assert!((HIGHEST_US..=HIGHEST_US + HIGHEST_US / 1000).contains(&max));
    }

    #[test]
    fn failures_keep_a_count_and_the_first_messages() {
        let recorder = Recorder::new();
        for n in 0..8 {
            recorder.failed(Stage::Turn, true, format!("chat {n}: boom"));
        }
        recorder.failed(Stage::Create, false, "refused".into());
        let failures = recorder.failures();
        assert_eq!(failures[&Stage::Turn].count, 8);
        assert_eq!(failures[&Stage::Turn].examples.len(), EXAMPLES_PER_STAGE);
        assert_eq!(failures[&Stage::Turn].examples[0], "chat 0: boom");
        let counters = recorder.counters();
        assert_eq!(counters.failures, 9);
        assert_eq!(counters.turns_failed, 8);
    }

    #[test]
    fn the_turn_phase_runs_from_the_first_send_to_the_last_completion() {
        let recorder = Recorder::new();
        assert_eq!(recorder.turn_phase(), None);
        let start = recorder.epoch + Duration::from_millis(100);
        recorder.turn_sent(start + Duration::from_millis(5));
        recorder.turn_sent(start);
        recorder.turn_completed(start + Duration::from_millis(300), Duration::from_millis(1));
        recorder.turn_completed(start + Duration::from_millis(200), Duration::from_millis(1));
        assert_eq!(recorder.turn_phase(), Some(Duration::from_millis(300)));
        assert_eq!(recorder.counters().turns_completed, 2);
    }
}
