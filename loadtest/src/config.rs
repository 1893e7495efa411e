//! What one run does: the targets, how many chats and turns, how they are
//! paced, and what is measured besides the API (ARCHITECTURE.md §13).

use std::time::Duration;

use chatd_shared::client::Transport;
use serde::{Deserialize, Serialize};

use crate::cpu::CpuProbe;

/// The user message sent by default: a short reply from chatd's mock
/// models, so the run measures chatd rather than a model.
pub const DEFAULT_MESSAGE: &str = r#"@mock {"tokens": 20}"#;

/// Everything a run needs. Build it from the command line
/// ([`crate::cli::RunArgs`]) or directly (tests, `bench`).
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Replica API base URLs (`http://host:port`); at least one, no repeats.
    /// Chat `i` is created on target `i % n` and streamed from `(i + 1) % n`.
    pub targets: Vec<String>,
    /// The bearer token every request carries.
    pub token: String,
    /// Virtual users; each owns one chat.
    pub chats: usize,
    /// Turns per chat.
    pub turns: u32,
    /// Chats in flight at most (set up or taking turns).
    pub concurrency: usize,
    /// Chat starts are spread evenly over this long (zero: all at once).
    pub ramp: Duration,
    /// Create every chat and open its stream first, then start every first
    /// turn together; the turn phase then measures turns only.
    pub barrier: bool,
    /// How streams are carried.
    pub transport: StreamTransport,
    /// The text of every user message.
    pub message: String,
    /// A PostgreSQL URL of chatd's database, to read what the run cost it.
    pub pg_url: Option<String>,
    /// How long one turn (send → `waiting`) may take; also bounds each
    /// request and each stream (re)connection, over every target tried.
    pub timeout: Duration,
    /// How long one attempt at a request or a stream's opening may take
    /// before the next target is tried (default: `timeout`).
    pub attempt_timeout: Option<Duration>,
    /// Reopen a running chat's stream on another target after this long
    /// without an event (default: never; chaos sets it).
    pub stall_timeout: Option<Duration>,
    /// The fraction of chats (0–1) also streamed from every other target,
    /// to measure relay staleness.
    pub staleness_sample: f64,
    /// Print a progress line on stderr about once a second.
    pub progress: bool,
    /// Other processes whose CPU time the summary reports (bench: the
    /// replicas and PostgreSQL). The harness itself is always included.
    pub cpu_probes: Vec<CpuProbe>,
}

impl RunConfig {
    /// A run of `chats` × `turns` against `targets` with the defaults of
    /// `chatd-loadtest run` for everything else.
    pub fn new(targets: Vec<String>, token: impl Into<String>, chats: usize, turns: u32) -> Self {
        Self {
            targets,
            token: token.into(),
            chats,
            turns,
            concurrency: chats,
            ramp: Duration::ZERO,
            barrier: true,
            transport: StreamTransport::Ws,
            message: DEFAULT_MESSAGE.to_owned(),
            pg_url: None,
            timeout: Duration::from_secs(60),
            attempt_timeout: None,
            stall_timeout: None,
            staleness_sample: 0.1,
            progress: true,
            cpu_probes: Vec::new(),
        }
    }

    /// Turns the run will attempt.
    pub fn planned_turns(&self) -> u64 {
        self.chats as u64 * u64::from(self.turns)
    }

    /// Checks what the command line cannot: a sentence naming the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("give at least one --target".to_owned());
        }
        for (index, target) in self.targets.iter().enumerate() {
            if self.targets[..index].contains(target) {
                return Err(format!("--target {target} is given twice"));
            }
        }
        if self.chats == 0 || self.turns == 0 || self.concurrency == 0 {
            return Err("--chats, --turns and --concurrency must be at least 1".to_owned());
        }
        if u32::try_from(self.chats).is_err() {
            return Err(format!("--chats must be at most {}", u32::MAX));
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be above zero".to_owned());
        }
        if !(0.0..=1.0).contains(&self.staleness_sample) {
            return Err("--staleness-sample must be between 0 and 1 (or 0% and 100%)".to_owned());
        }
        if self.message.trim().is_empty() {
            return Err("--message must not be empty".to_owned());
        }
        Ok(())
    }

    /// True when chat `index` is one of the staleness sample: spread evenly,
    /// `round(chats × sample)` chats in all. Needs two targets or more.
    pub fn is_sampled(&self, index: usize) -> bool {
        if self.targets.len() < 2 {
            return false;
        }
        let share = |i: usize| (i as f64 * self.staleness_sample).floor();
        share(index + 1) > share(index)
    }
}

/// How streams are carried, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StreamTransport {
    /// WebSocket.
    Ws,
    /// Server-sent events.
    Sse,
}

impl StreamTransport {
    /// The client's transport.
    pub fn client(self) -> Transport {
        match self {
            Self::Ws => Transport::WebSocket,
            Self::Sse => Transport::Sse,
        }
    }

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: &[&str], chats: usize) -> RunConfig {
        RunConfig::new(
            targets.iter().map(|t| (*t).to_owned()).collect(),
            "chatd_x",
            chats,
            3,
        )
    }

    #[test]
    fn the_sample_is_spread_evenly_and_sized_by_the_fraction() {
        let mut run = config(&["http://a", "http://b"], 100);
        let sampled: Vec<usize> = (0..100).filter(|&i| run.is_sampled(i)).collect();
        assert_eq!(sampled.len(), 10);
        assert_eq!(sampled[..3], [9, 19, 29]);
        run.staleness_sample = 1.0;
        assert!((0..100).all(|i| run.is_sampled(i)));
        run.staleness_sample = 0.0;
        assert!(!(0..100).any(|i| run.is_sampled(i)));
    }

    #[test]
    fn one_target_has_nothing_to_compare_staleness_with() {
        let mut run = config(&["http://a"], 10);
        run.staleness_sample = 1.0;
        assert!(!(0..10).any(|i| run.is_sampled(i)));
    }

    #[test]
    fn validation_names_the_flag() {
        assert_eq!(config(&["http://a"], 1).validate(), Ok(()));
        let twice = config(&["http://a", "http://a"], 1).validate().unwrap_err();
        assert!(twice.contains("--target http://a"), "{twice}");
        assert!(config(&[], 1).validate().unwrap_err().contains("--target"));
        assert!(
            config(&["http://a"], 0)
                .validate()
                .unwrap_err()
                .contains("--chats")
        );
        let mut run = config(&["http://a"], 1);
        run.staleness_sample = 1.5;
        assert!(run.validate().unwrap_err().contains("--staleness-sample"));
    }
}
