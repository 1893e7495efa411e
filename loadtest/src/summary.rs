//! The result of a run, as written by `--out` and printed as a table.

use std::{collections::BTreeMap, path::Path};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    config::{RunConfig, StreamTransport},
    database::DatabaseCost,
    stats::{Latencies, Stage, StageFailures},
};

/// The fields of the JSON summary, for `--help`. Keep in step with
/// [`Summary`]; a test checks that every field is named here.
pub const FIELDS_HELP: &str = "\
The JSON summary (--out) has these fields; latencies are in microseconds:
  version                        format version (1)
  started_at                     when the run started (UTC, RFC 3339)
  parameters                     targets, chats, turns, concurrency, ramp_ms,
                                 barrier, transport, message, timeout_ms,
                                 staleness_sample, staleness_chats, pg
  turns.planned                  chats × turns
  turns.completed                turns that reached `waiting`
  turns.failed                   turns that ended in a failure
  turns.not_run                  turns never started (their chat failed before)
  turns.phase_seconds            first send to last completed turn
  turns.per_second               completed / phase_seconds
  latency_us.<figure>            count, p50, p90, p99, max (null when count is 0)
                                 for each figure: create (POST /chats),
                                 time_to_running (send → status running),
                                 time_to_first_part (send → first part on the
                                 chat's stream; only turns whose parts reached it),
                                 turn (send → status waiting),
                                 relay_staleness (per part of a sampled chat: arrival
                                 on the chat's stream minus the earliest arrival on
                                 any target's stream)
  streams.reconnects             streams resumed from their cursor
  streams.requests_retried       requests sent again to another target
  streams.repeats_dropped        parts and messages a server repeated below a
                                 stream's cursor (dropped; a correct server sends none)
  streams.parts_not_delivered    parts of sampled chats another target's stream
                                 delivered and the chat's stream never did
  failures.<stage>               count and first messages (examples), for the
                                 stages create, stream, send, turn, timeout
  cpu                            per process: name, seconds (CPU time in the
                                 measured window), cores (seconds / window),
                                 us_per_turn (CPU microseconds per completed turn)
  machine                        cores (CPUs of this machine) and busy_cores
                                 (cores busy on average in the window, every
                                 process on the machine included)
  measured_seconds               the measured window: the turn phase with the
                                 barrier, the whole run without it
  harness_peak_rss_bytes         the harness's peak resident memory
  database                       with --pg-url (else null): database, window,
                                 transactions, transactions_per_turn, statements
                                 (total, per_turn, notify, notify_per_turn,
                                 top_by_calls, top_by_time: calls, per_turn,
                                 total_ms, query), statements_unavailable
  budgets                        bench only: name, budget, measured, verdict
                                 (met, not met, not measured), note
  ceiling                        bench only: the database-only ceiling measured
                                 before the load: turns_per_sec,
                                 postgres_cpu_us_per_turn, statements_per_turn,
                                 connections, window_secs";

/// The summary of one run, as written by `--out` (JSON). Latencies are in
/// microseconds. `bench` adds the CPU of the replicas and PostgreSQL to
/// `cpu`, and `budgets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Format version of this document: 1.
    pub version: u32,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// What was run.
    pub parameters: Parameters,
    /// Turn counts and throughput.
    pub turns: Turns,
    /// Latency percentiles, microseconds.
    pub latency_us: Latencies,
    /// Stream health.
    pub streams: Streams,
    /// Failures by stage; empty when nothing failed.
    pub failures: BTreeMap<Stage, StageFailures>,
    /// CPU time per process in the measured window: the harness first.
    pub cpu: Vec<CpuUse>,
    /// The whole machine in the measured window, when `/proc/stat` could
    /// be read: shows what else kept it busy.
    pub machine: Option<MachineUse>,
    /// Length of the measured window (the turn phase with the barrier, the
    /// whole run without it), seconds.
    pub measured_seconds: f64,
    /// The harness's peak resident memory, when known.
    pub harness_peak_rss_bytes: Option<u64>,
    /// What the window cost the database (with `--pg-url`).
    pub database: Option<DatabaseCost>,
    /// The budgets of ARCHITECTURE.md §15 (`bench` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Vec<BudgetCheck>>,
    /// The database-only ceiling measured right before the load (`bench`
    /// only, unless `--no-ceiling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Ceiling>,
}

/// The database-only ceiling a bench measured before its load (see
/// `bench::ceiling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// Turns stored per second in the window.
    pub turns_per_sec: f64,
    /// PostgreSQL's CPU per turn in the window, in µs (none when its
    /// process could not be read).
    pub postgres_cpu_us_per_turn: Option<f64>,
    /// Statements per turn (sends, claims, prompt reads, turn ends).
    pub statements_per_turn: f64,
    /// Sessions used.
    pub connections: usize,
    /// Length of the measured window, in seconds.
    pub window_secs: f64,
}

/// The parameters of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// Replica API base URLs.
    pub targets: Vec<String>,
    /// Chats (virtual users).
    pub chats: usize,
    /// Turns per chat.
    pub turns: u32,
    /// Chats in flight at most.
    pub concurrency: usize,
    /// Chat starts spread over this long, milliseconds.
    pub ramp_ms: u64,
    /// Every chat was set up before the first turns started together.
    pub barrier: bool,
    /// `ws` or `sse`.
    pub transport: StreamTransport,
    /// The user message.
    pub message: String,
    /// Per-turn timeout, milliseconds.
    pub timeout_ms: u64,
    /// The fraction of chats streamed from every target.
    pub staleness_sample: f64,
    /// How many chats that is.
    pub staleness_chats: usize,
    /// Whether the database was read (`--pg-url`).
    pub pg: bool,
}

impl Parameters {
    /// The parameters of `config`.
    pub fn of(config: &RunConfig) -> Self {
        Self {
            targets: config.targets.clone(),
            chats: config.chats,
            turns: config.turns,
            concurrency: config.concurrency,
            ramp_ms: millis(config.ramp),
            barrier: config.barrier,
            transport: config.transport,
            message: config.message.clone(),
            timeout_ms: millis(config.timeout),
            staleness_sample: config.staleness_sample,
            staleness_chats: (0..config.chats).filter(|&i| config.is_sampled(i)).count(),
            pg: config.pg_url.is_some(),
        }
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Turn counts and throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Turns {
    /// Chats × turns.
    pub planned: u64,
    /// Turns that reached `waiting`.
    pub completed: u64,
    /// Turns that ended in a failure.
    pub failed: u64,
    /// Turns never started because their chat failed earlier.
    pub not_run: u64,
    /// From the first send to the last completed turn, seconds.
    pub phase_seconds: f64,
    /// Completed turns per second of the turn phase.
    pub per_second: f64,
}

/// Stream health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streams {
    /// Streams resumed from their cursor after the server closed them.
    pub reconnects: u64,
    /// Requests sent again to another target after a retryable failure.
    pub requests_retried: u64,
    /// Parts and messages a server sent again at or below a stream's
    /// cursor, which the client dropped (a correct server sends none).
    pub repeats_dropped: u64,
    /// Parts of sampled chats that another target's stream delivered and
    /// the chat's own stream never did.
    pub parts_not_delivered: u64,
}

/// CPU time of one process (or process tree) in the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Which process.
    pub name: String,
    /// CPU seconds used (user + system).
    pub seconds: f64,
    /// `seconds` / the window's length: cores kept busy on average.
    pub cores: f64,
    /// CPU microseconds per turn completed in the window; `null` when none was.
    pub us_per_turn: Option<f64>,
}

/// How busy the machine was in the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MachineUse {
    /// CPUs of the machine.
    pub cores: f64,
    /// Cores busy on average, every process on the machine included.
    pub busy_cores: f64,
}

/// A budget of ARCHITECTURE.md §15 against what was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheck {
    /// What is budgeted.
    pub name: String,
    /// The budget, as ARCHITECTURE.md §15 states it.
    pub budget: String,
    /// What was measured (`-` when nothing was).
    pub measured: String,
    /// Met or not.
    pub verdict: Verdict,
    /// Why, when the verdict needs explaining.
    pub note: Option<String>,
}

/// Whether a budget was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within budget.
    Met,
    /// Over budget.
    NotMet,
    /// The run could not measure it.
    NotMeasured,
}

impl Verdict {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "not met",
            Self::NotMeasured => "not measured",
        }
    }
}

impl Summary {
    /// This run's turns per second over the ceiling's, when measured.
    pub fn ceiling_ratio(&self) -> Option<f64> {
        let ceiling = self.ceiling.as_ref()?;
        (ceiling.turns_per_sec > 0.0).then(|| self.turns.per_second / ceiling.turns_per_sec)
    }

    /// True when every planned turn completed and nothing failed.
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty() && self.turns.completed == self.turns.planned
    }

    /// Writes the summary to `path` as pretty JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        json.push(b'\n');
        std::fs::write(path, json)
    }
}

/// Summaries for tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::{
        database::{StatementCost, TopStatement},
        stats::Percentiles,
    };

    /// A summary with every optional part present.
    pub(crate) fn full_summary() -> Summary {
        let config = RunConfig::new(vec!["http://a".into(), "http://b".into()], "t", 10, 2);
        let percentiles = Percentiles {
            count: 20,
            p50: Some(1_500),
            p90: Some(2_500),
            p99: Some(9_000),
            max: Some(12_000),
        };
        let top = TopStatement {
            calls: 20,
            per_turn: 1.0,
            total_ms: 3.5,
            query: "SELECT 1".into(),
        };
        Summary {
            version: 1,
            started_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            parameters: Parameters::of(&config),
            turns: Turns {
                planned: 20,
                completed: 18,
                failed: 1,
                not_run: 1,
                phase_seconds: 0.5,
                per_second: 36.0,
            },
            latency_us: Latencies {
                create: percentiles,
                time_to_running: percentiles,
                time_to_first_part: Percentiles::default(),
                turn: percentiles,
                relay_staleness: percentiles,
            },
            streams: Streams {
                reconnects: 2,
                requests_retried: 1,
                repeats_dropped: 0,
                parts_not_delivered: 0,
            },
            failures: BTreeMap::from([(
                Stage::Turn,
                StageFailures {
                    count: 1,
                    examples: vec!["chat x: turn_failed: boom".into()],
                },
            )]),
            cpu: vec![CpuUse {
                name: "chatd-loadtest".into(),
                seconds: 0.25,
                cores: 0.5,
                us_per_turn: Some(13_888.9),
            }],
            machine: Some(MachineUse {
                cores: 2.0,
                busy_cores: 1.5,
            }),
            measured_seconds: 0.5,
            harness_peak_rss_bytes: Some(1 << 20),
            database: Some(DatabaseCost {
                database: "chatd".into(),
                window: "turn phase".into(),
                transactions: 40,
                transactions_per_turn: 2.2,
                statements: Some(StatementCost {
                    total: 70,
                    per_turn: 3.9,
                    notify: 5,
                    notify_per_turn: 0.28,
                    top_by_calls: vec![top.clone()],
                    top_by_time: vec![top],
                }),
                statements_unavailable: None,
            }),
            ceiling: None,
            budgets: Some(vec![BudgetCheck {
                name: "turns per second".into(),
                budget: "≥ 1000".into(),
                measured: "36".into(),
                verdict: Verdict::NotMet,
                note: None,
            }]),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{fixtures::full_summary, *};

    fn keys(prefix: &str, value: &Value, out: &mut Vec<String>) {
        if let Value::Object(map) = value {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.push(key.clone());
                // Lists and per-figure objects are described as a group.
                if !matches!(key.as_str(), "latency_us" | "failures" | "cpu") {
                    keys(&path, value, out);
                }
            }
        }
    }

    #[test]
    fn every_field_of_the_summary_is_named_in_the_help() {
        let json = serde_json::to_value(full_summary()).unwrap();
        let mut names = Vec::new();
        keys("", &json, &mut names);
        for name in names {
            assert!(FIELDS_HELP.contains(&name), "--help does not name {name}");
        }
    }

    #[test]
    fn the_summary_round_trips_through_json() {
        let summary = full_summary();
        let json = serde_json::to_string(&summary).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["failures"]["turn"]["count"], 1);
        assert_eq!(value["parameters"]["transport"], "ws");
        assert_eq!(
            value["latency_us"]["time_to_first_part"]["p50"],
            Value::Null
        );
        assert!(!summary.succeeded());
    }
}
