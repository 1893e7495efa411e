//! The turn loop's instruments (ARCHITECTURE.md §11).

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

/// Tens of milliseconds to ten minutes: a turn is one or more model calls
/// and their tools.
const TURN_SECONDS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A millisecond to a minute (the first-chunk timeout).
const FIRST_TOKEN_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Turn, step, provider and tool instruments.
#[derive(Clone)]
pub struct TurnMetrics {
    turns: Counter<u64>,
    turn_duration: Histogram<f64>,
    step_duration: Histogram<f64>,
    first_token: Histogram<f64>,
    provider_requests: Counter<u64>,
    retries: Counter<u64>,
    tool_calls: Counter<u64>,
    compactions: Counter<u64>,
    spend_refusals: Counter<u64>,
    suspended: Counter<u64>,
}

impl TurnMetrics {
    /// Registers the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        use chatd_shared::metrics::{counter, histogram, one_label, unlabelled};
        Self {
            turns: counter(
                meter,
                "chatd_turns",
                "Turns ended, by outcome",
                one_label("outcome", &["released", "stopped"]),
            ),
            turn_duration: histogram(
                meter,
                "chatd_turn_duration_seconds",
                "From the start of a turn to its release",
                &TURN_SECONDS,
            ),
            step_duration: histogram(
                meter,
                "chatd_step_duration_seconds",
                "One model call plus its tools",
                &TURN_SECONDS,
            ),
            first_token: histogram(
                meter,
                "chatd_time_to_first_token_seconds",
                "From sending a model request to its first event",
                &FIRST_TOKEN_SECONDS,
            ),
            // Providers and tools are named by configuration: no zero per name.
            provider_requests: counter(
                meter,
                "chatd_provider_requests",
                "Model calls, by provider and outcome",
                unlabelled(),
            ),
            retries: counter(
                meter,
                "chatd_provider_retries",
                "Model calls retried, by provider and error kind",
                unlabelled(),
            ),
            tool_calls: counter(
                meter,
                "chatd_tool_calls",
                "Tool calls, by tool and outcome",
                unlabelled(),
            ),
            suspended: counter(
                meter,
                "chatd_runs_suspended",
                "Runs that ended waiting on the client or on subagents, by the status they left (requires_action, waiting_on_agents, pending)",
                one_label(
                    "status",
                    &["requires_action", "waiting_on_agents", "pending"],
                ),
            ),
            compactions: counter(
                meter,
                "chatd_compactions",
                "Context compactions, by outcome",
                unlabelled(),
            ),
            spend_refusals: counter(
                meter,
                "chatd_spend_refusals",
                "Model calls the spend limit refused",
                unlabelled(),
            ),
        }
    }

    pub(crate) fn turn(&self, outcome: &'static str, seconds: f64) {
        self.turns.add(1, &[KeyValue::new("outcome", outcome)]);
        self.turn_duration
            .record(seconds, &[KeyValue::new("outcome", outcome)]);
    }

    pub(crate) fn compaction(&self, outcome: &'static str) {
        self.compactions
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    pub(crate) fn spend_refusal(&self) {
        self.spend_refusals.add(1, &[]);
    }

    pub(crate) fn step(&self, seconds: f64) {
        self.step_duration.record(seconds, &[]);
    }

    pub(crate) fn first_token(&self, seconds: f64) {
        self.first_token.record(seconds, &[]);
    }

    pub(crate) fn provider_request(&self, provider: &str, outcome: &'static str) {
        self.provider_requests.add(
            1,
            &[
                KeyValue::new("provider", provider.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub(crate) fn retry(&self, provider: &str, kind: &'static str) {
        self.retries.add(
            1,
            &[
                KeyValue::new("provider", provider.to_owned()),
                KeyValue::new("kind", kind),
            ],
        );
    }

    pub(crate) fn suspended(&self, status: &'static str) {
        self.suspended.add(1, &[KeyValue::new("status", status)]);
    }

    pub(crate) fn tool_call(&self, tool: &str, is_error: bool) {
        let outcome = if is_error { "error" } else { "ok" };
        self.tool_calls.add(
            1,
            &[
                KeyValue::new("tool", tool.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}
