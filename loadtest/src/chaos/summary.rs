//! What a chaos run found, as JSON (`--out`) and as the table it prints.

use std::{collections::BTreeMap, fmt::Write, path::Path};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::faults::{FailoverFigures, FaultEntry, FaultKind};
use crate::{
    report::{format_micros, latency_table},
    stats::{Latencies, Percentiles, Stage, StageFailures},
};

/// The fields of the JSON summary, for `--help`.
pub const FIELDS_HELP: &str = "\
The JSON summary (--out) has these fields; times are in microseconds:
  version                      format version (1)
  started_at                   when the run started (UTC, RFC 3339)
  parameters                   targets, own_cluster, chats, duration_ms, every_ms,
                               faults (requested), skipped (kind and reason),
                               lease_ttl_ms, heartbeat_interval_ms, message,
                               transport, seed
  turns.completed / .failed    turns that reached `waiting` / that failed
  turns.per_second             completed turns per second of the turn phase
  latency_us.<figure>          count, p50, p90, p99, max: create, time_to_running,
                               time_to_first_part, turn, relay_staleness
  failover.<kind>              faults, chats_affected, chats_recovered and
                               failover_us (per chat a fault reached: the longest
                               wait for a part or message from the fault until its
                               window closed: count, p50, p90, p99, max) and
                               moved_us (kill, partition: per chat the hit replica
                               ran, from the fault to the chat running on another
                               replica, read from the database)
  faults                       each fault: kind, at_seconds, seconds, note
  streams                      reconnects, requests_retried, repeats_dropped,
                               drafts_overtaken, unattributed_disruptions,
                               parts_not_delivered
  violations                   count and the first examples (each names its chat)
  failures.<stage>             count and first messages, by stage";

/// The summary of a chaos run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosSummary {
    /// Format version of this document: 1.
    pub version: u32,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// What was run.
    pub parameters: ChaosParameters,
    /// Turn counts.
    pub turns: ChaosTurns,
    /// Latency percentiles, microseconds.
    pub latency_us: Latencies,
    /// Failover time per kind of fault.
    pub failover: BTreeMap<FaultKind, FailoverFigures>,
    /// Each fault injected.
    pub faults: Vec<FaultEntry>,
    /// What clients had to do.
    pub streams: ChaosStreams,
    /// Invariants broken.
    pub violations: ViolationList,
    /// Failures by stage.
    pub failures: BTreeMap<Stage, StageFailures>,
}

/// The parameters of a chaos run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosParameters {
    /// Replica API base URLs.
    pub targets: Vec<String>,
    /// The run started (and broke) its own cluster.
    pub own_cluster: bool,
    /// Chats (virtual users).
    pub chats: usize,
    /// Length of the load, milliseconds.
    pub duration_ms: u64,
    /// Time between fault starts, milliseconds.
    pub every_ms: u64,
    /// Fault kinds asked for.
    pub faults: Vec<FaultKind>,
    /// Kinds that could not be injected here, and why.
    pub skipped: Vec<Skipped>,
    /// The replicas' lease, milliseconds.
    pub lease_ttl_ms: u64,
    /// The replicas' heartbeat, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// The user message of every turn.
    pub message: String,
    /// `ws` or `sse`.
    pub transport: String,
    /// Seed of the random choices (which replica a fault hits).
    pub seed: u64,
}

/// A fault kind that was not injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The kind.
    pub kind: FaultKind,
    /// Why.
    pub reason: String,
}

/// Turn counts of a chaos run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChaosTurns {
    /// Turns that reached `waiting`.
    pub completed: u64,
    /// Turns that failed.
    pub failed: u64,
    /// Completed turns per second of the turn phase.
    pub per_second: f64,
}

/// What clients had to do to carry on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosStreams {
    /// Streams reopened from their cursor.
    pub reconnects: u64,
    /// Requests sent again to another replica.
    pub requests_retried: u64,
    /// Parts and messages servers sent again below a client's cursor
    /// (each is also a violation).
    pub repeats_dropped: u64,
    /// Messages that arrived before the last parts of their step.
    pub drafts_overtaken: u64,
    /// Disruptions no fault explains.
    pub unattributed_disruptions: u64,
    /// Parts of sampled chats another target's stream delivered and the
    /// chat's own stream never did.
    pub parts_not_delivered: u64,
}

/// The invariants broken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationList {
    /// How many.
    pub count: u64,
    /// The first ones.
    pub examples: Vec<String>,
}

impl ChaosSummary {
    /// No turn failed and no invariant was broken.
    pub fn succeeded(&self) -> bool {
        self.turns.failed == 0 && self.failures.is_empty() && self.violations.count == 0
    }

    /// Writes the summary as pretty JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }

    /// The summary as a table, ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let p = &self.parameters;
        let kinds: Vec<&str> = p.faults.iter().map(|kind| kind.as_str()).collect();
        let _ = writeln!(
            out,
            "chaos: {} replicas{} · {} chats · {} s · a fault every {} s: {} · lease {} ms, heartbeat {} ms · seed {}",
            p.targets.len(),
            if p.own_cluster { " (own)" } else { "" },
            p.chats,
            p.duration_ms / 1000,
            p.every_ms / 1000,
            kinds.join(", "),
            p.lease_ttl_ms,
            p.heartbeat_interval_ms,
            p.seed,
        );
        for skipped in &p.skipped {
            let _ = writeln!(out, "skipped {}: {}", skipped.kind, skipped.reason);
        }
        let t = &self.turns;
        let _ = writeln!(
            out,
            "turns: {} completed, {} failed · {:.1} turns/s\nviolations: {}\n",
            t.completed, t.failed, t.per_second, self.violations.count
        );
        self.failover_table(&mut out);
        let l = &self.latency_us;
        latency_table(
            &mut out,
            &[
                ("turn", &l.turn),
                ("time to first part", &l.time_to_first_part),
                ("relay staleness", &l.relay_staleness),
            ],
        );
        let s = &self.streams;
        let _ = writeln!(
            out,
            "clients: {} streams reopened, {} requests retried, {} repeats dropped, {} messages overtook their parts, {} disruptions without a fault, {} sampled parts not delivered",
            s.reconnects,
            s.requests_retried,
            s.repeats_dropped,
            s.drafts_overtaken,
            s.unattributed_disruptions,
            s.parts_not_delivered
        );
        let _ = writeln!(out, "\nfaults:");
        for fault in &self.faults {
            let took = fault
                .seconds
                .map_or_else(|| "unfinished".to_owned(), |s| format!("{s:.1} s"));
            let _ = writeln!(
                out,
                "  {:>7.1} s  {:<10} {} ({took})",
                fault.at_seconds, fault.kind, fault.note
            );
        }
        self.problems(&mut out);
        out
    }

    fn failover_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>6} {:>10} {:>10}",
            "failover",
            "faults",
            "affected",
            "recovered",
            "p50",
            "p99",
            "max",
            "moved",
            "moved p50",
            "moved p99"
        );
        for (kind, figures) in &self.failover {
            let cell = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), format_micros);
            let Percentiles { p50, p99, max, .. } = figures.failover_us;
            let moved = figures.moved_us;
            let _ = writeln!(
                out,
                "{:<12} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>6} {:>10} {:>10}",
                kind.as_str(),
                figures.faults,
                figures.chats_affected,
                figures.chats_recovered,
                cell(p50),
                cell(p99),
                cell(max),
                moved.count,
                cell(moved.p50),
                cell(moved.p99)
            );
        }
        out.push('\n');
    }

    fn problems(&self, out: &mut String) {
        if !self.violations.examples.is_empty() {
            let _ = writeln!(out, "\nviolations ({}):", self.violations.count);
            for example in &self.violations.examples {
                let _ = writeln!(out, "  {example}");
            }
        }
        for (stage, failures) in &self.failures {
            let _ = writeln!(out, "\nfailures at {stage} ({}):", failures.count);
            for example in &failures.examples {
                let _ = writeln!(out, "  {example}");
            }
        }
    }
}
