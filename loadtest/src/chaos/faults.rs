//! The faults a chaos run injects, the log of those it did, and the
//! failover time of each chat they reached.
//!
//! A fault reaches a chat when it hits the replica running the chat or
//! serving its stream (kill, rolling, partition), when it stops PostgreSQL
//! while the chat runs (pg-restart), or when it cuts the relay link the
//! chat's parts travel (relay-cut: run on one replica, streamed from
//! another): the harness marks those chats as it injects the fault. A chat
//! is also counted when its client had to act while a fault lasted or
//! within a grace period after it: its stream was reopened, its send moved
//! to another replica, or its turn started over under a newer generation.
//!
//! A chat's failover time for a fault is the longest it waited for a part
//! or message from the fault until the fault's window closed (its end plus
//! the grace, or the next fault): the outage its client saw. Parts that
//! kept coming after the fault (a draining replica, a worker streaming
//! until it needs the database) are no outage; the wait that ends with the
//! first data after the window still counts.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::stats::Percentiles;

/// A kind of fault.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a random replica; start it again after a pause.
    Kill,
    /// Replace every replica in turn: SIGTERM, a fresh process, readiness.
    Rolling,
    /// PostgreSQL stopped immediately, started again.
    PgRestart,
    /// Every relay connection cut (and refused for a moment).
    RelayCut,
    /// A random replica's path to PostgreSQL black-holed while clients
    /// and peers still reach it.
    Partition,
}

impl FaultKind {
    /// Every kind, in the order of the command line.
    pub const ALL: [Self; 5] = [
        Self::Kill,
        Self::Rolling,
        Self::PgRestart,
        Self::RelayCut,
        Self::Partition,
    ];

    /// The name on the command line and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Rolling => "rolling",
            Self::PgRestart => "pg-restart",
            Self::RelayCut => "relay-cut",
            Self::Partition => "partition",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fault as it happened (the summary lists them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEntry {
    /// What it was.
    pub kind: FaultKind,
    /// Seconds from the start of the turn phase.
    pub at_seconds: f64,
    /// How long it lasted (until the cluster was whole again), seconds.
    pub seconds: Option<f64>,
    /// What was hit and how (`replica 2`, …).
    pub note: String,
}

/// A fault under way or past, as chats refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRef {
    /// Its place in the log.
    pub id: usize,
    /// Its kind.
    pub kind: FaultKind,
    /// When it was injected.
    pub started: Instant,
}

/// The failover figures of one kind of fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverFigures {
    /// Faults of this kind injected.
    pub faults: u64,
    /// Chats a fault of this kind reached.
    pub chats_affected: u64,
    /// Of those, chats that received a part or message again.
    pub chats_recovered: u64,
    /// Per chat reached: the longest wait for a part or message in the
    /// fault's window, microseconds.
    pub failover_us: Percentiles,
    /// Per chat the hit replica was running (kill, partition): from the
    /// fault to the chat running on another replica, read from the
    /// database, microseconds.
    #[serde(default)]
    pub moved_us: Percentiles,
}

#[derive(Debug)]
struct Record {
    fault: FaultRef,
    target: String,
    ended: Option<Instant>,
}

struct Figures {
    faults: u64,
    affected: u64,
    recovered: u64,
    histogram: Histogram<u64>,
    moved: Histogram<u64>,
}

impl Figures {
    fn new() -> Self {
        Self {
            faults: 0,
            affected: 0,
            recovered: 0,
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            moved: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }
}

/// Every fault of a run and the failover times measured against them.
pub struct FaultLog {
    /// When the turn phase began: fault times are counted from it.
    epoch: Instant,
    /// How long after a fault ended a disruption is still put down to it.
    grace: Duration,
    records: Mutex<Vec<Record>>,
    figures: Mutex<BTreeMap<FaultKind, Figures>>,
    unattributed: Mutex<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FaultLog {
    /// An empty log; disruptions up to `grace` after a fault ended are put
    /// down to it.
    pub fn new(epoch: Instant, grace: Duration) -> Self {
        Self {
            epoch,
            grace,
            records: Mutex::new(Vec::new()),
            figures: Mutex::new(BTreeMap::new()),
            unattributed: Mutex::new(0),
        }
    }

    /// A fault of `kind` begins now, hitting `target`.
    pub fn begin(&self, kind: FaultKind, target: String) -> FaultRef {
        let mut records = lock(&self.records);
        let fault = FaultRef {
            id: records.len(),
            kind,
            started: Instant::now(),
        };
        records.push(Record {
            fault,
            target,
            ended: None,
        });
        lock(&self.figures)
            .entry(kind)
            .or_insert_with(Figures::new)
            .faults += 1;
        fault
    }

    /// `fault` is over: the cluster is whole again.
    pub fn end(&self, fault: FaultRef) {
        if let Some(record) = lock(&self.records).get_mut(fault.id) {
            record.ended = Some(Instant::now());
        }
    }

    /// The fault a disruption noticed at `at` is put down to: the newest
    /// one that had begun, if it has not ended more than the grace ago.
    pub fn attribute(&self, at: Instant) -> Option<FaultRef> {
        let records = lock(&self.records);
        let newest = records.iter().rev().find(|r| r.fault.started <= at)?;
        let current = newest.ended.is_none_or(|ended| at <= ended + self.grace);
        current.then_some(newest.fault)
    }

    /// `fault` reached a chat.
    pub fn affected(&self, fault: FaultRef) {
        if let Some(figures) = lock(&self.figures).get_mut(&fault.kind) {
            figures.affected += 1;
        }
    }

    /// A chat `fault` reached waited this long at most for a part or message.
    pub fn recovered(&self, fault: FaultRef, outage: Duration) {
        let micros = u64::try_from(outage.as_micros()).unwrap_or(u64::MAX);
        if let Some(figures) = lock(&self.figures).get_mut(&fault.kind) {
            figures.recovered += 1;
            figures.histogram.saturating_record(micros);
        }
    }

    /// A chat the replica `fault` hit was running ran on another replica
    /// this long after the fault.
    pub fn moved(&self, fault: FaultRef, after: Duration) {
        let micros = u64::try_from(after.as_micros()).unwrap_or(u64::MAX);
        if let Some(figures) = lock(&self.figures).get_mut(&fault.kind) {
            figures.moved.saturating_record(micros);
        }
    }

    /// When the fault after `fault` began, if one did.
    pub fn next_start(&self, fault: FaultRef) -> Option<Instant> {
        lock(&self.records)
            .get(fault.id + 1)
            .map(|record| record.fault.started)
    }

    /// How long after a fault ended a disruption is still put down to it.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// When the last fault's window closes (its end plus the grace): a
    /// chat it disrupted has had its chance to recover by then. `None`
    /// without faults, or while one is under way.
    pub fn windows_closed_at(&self) -> Option<Instant> {
        let records = lock(&self.records);
        let last = records.last()?;
        last.ended.map(|ended| ended + self.grace)
    }

    /// A chat was disrupted while no fault was under way (a slow consumer,
    /// a stall): counted, not timed.
    pub fn unattributed(&self) {
        *lock(&self.unattributed) += 1;
    }

    /// Disruptions no fault explains.
    pub fn unattributed_count(&self) -> u64 {
        *lock(&self.unattributed)
    }

    /// The figures per kind of fault injected.
    pub fn figures(&self) -> BTreeMap<FaultKind, FailoverFigures> {
        lock(&self.figures)
            .iter()
            .map(|(kind, figures)| {
                (
                    *kind,
                    FailoverFigures {
                        faults: figures.faults,
                        chats_affected: figures.affected,
                        chats_recovered: figures.recovered,
                        failover_us: Percentiles::of(&figures.histogram),
                        moved_us: Percentiles::of(&figures.moved),
                    },
                )
            })
            .collect()
    }

    /// The faults, in order.
    pub fn entries(&self) -> Vec<FaultEntry> {
        let seconds = |at: Instant| at.saturating_duration_since(self.epoch).as_secs_f64();
        lock(&self.records)
            .iter()
            .map(|record| FaultEntry {
                kind: record.fault.kind,
                at_seconds: seconds(record.fault.started),
                seconds: record
                    .ended
                    .map(|ended| ended.duration_since(record.fault.started).as_secs_f64()),
                note: record.target.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn disruptions_are_put_down_to_the_newest_fault_within_its_grace() {
        let log = FaultLog::new(Instant::now(), Duration::from_secs(5));
        assert_eq!(log.attribute(Instant::now()), None);
        let kill = log.begin(FaultKind::Kill, "replica 1".into());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(log.attribute(Instant::now()), Some(kill));
        log.end(kill);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            log.attribute(Instant::now()),
            Some(kill),
            "within the grace"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(log.attribute(Instant::now()), None, "past the grace");

        log.affected(kill);
        log.recovered(kill, Duration::from_millis(1500));
        let figures = log.figures()[&FaultKind::Kill];
        assert_eq!(
            (
                figures.faults,
                figures.chats_affected,
                figures.chats_recovered
            ),
            (1, 1, 1)
        );
        let p50 = figures.failover_us.p50.unwrap();
        assert!((1_499_000..=1_501_000).contains(&p50), "{p50}");
        assert_eq!(log.entries()[0].seconds, Some(2.0));
    }
}
