//! The runtime's instruments (ARCHITECTURE.md §11).

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

use super::registry::Registry;

/// Counters and histograms of acquire, lease, recovery and hand-back.
#[derive(Clone)]
pub struct RuntimeMetrics {
    pub(crate) acquires: Counter<u64>,
    pub(crate) acquire_batch: Histogram<u64>,
    pub(crate) queue_wait: Histogram<f64>,
    pub(crate) recoveries: Counter<u64>,
    pub(crate) hand_backs: Counter<u64>,
    pub(crate) lease_renew: Histogram<f64>,
    pub(crate) lease_failures: Counter<u64>,
    pub(crate) lease_lost: Counter<u64>,
    pub(crate) reconcile: Counter<u64>,
    pub(crate) run_panics: Counter<u64>,
    pub(crate) deaths: Counter<u64>,
    pub(crate) death_recovery: Histogram<f64>,
    pub(crate) pending: Arc<AtomicI64>,
}

/// Sub-millisecond to seconds: heartbeats and claims are single statements,
/// a death is found within milliseconds of a session ending.
const STATEMENT_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Milliseconds to minutes: a pending chat waits for a free slot.
const QUEUE_SECONDS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

impl RuntimeMetrics {
    /// `max_running` is `CHATD_MAX_RUNNING_CHATS`: with `chatd_running_chats`
    /// it gives a replica's free slots.
    pub(crate) fn new(meter: &Meter, registry: Arc<Registry>, max_running: usize) -> Self {
        use chatd_shared::metrics::{counter, histogram, one_label, u64_histogram, unlabelled};
        meter
            .u64_observable_gauge("chatd_running_chats")
            .with_description("Chats this replica is running")
            .with_callback(move |observer| observer.observe(registry.len() as u64, &[]))
            .build();
        meter
            .u64_observable_gauge("chatd_max_running_chats")
            .with_description("Chats this replica runs at most (CHATD_MAX_RUNNING_CHATS)")
            .with_callback(move |observer| observer.observe(max_running as u64, &[]))
            .build();
        let pending = Arc::new(AtomicI64::new(0));
        let observed = pending.clone();
        meter
            .i64_observable_gauge("chatd_pending_chats")
            .with_description("Pending chats in the whole cluster (counted every 15 s)")
            .with_callback(move |observer| observer.observe(observed.load(Ordering::Relaxed), &[]))
            .build();
        Self {
            acquires: counter(
                meter,
                "chatd_acquires",
                "Chats acquired by this replica",
                unlabelled(),
            ),
            acquire_batch: u64_histogram(
                meter,
                "chatd_acquire_batch_size",
                "Chats claimed per claim statement",
                &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            ),
            queue_wait: histogram(
                meter,
                "chatd_queue_wait_seconds",
                "Time from pending to running",
                &QUEUE_SECONDS,
            ),
            recoveries: counter(
                meter,
                "chatd_recoveries",
                "Chats of dead replicas put back to pending by this replica",
                unlabelled(),
            ),
            hand_backs: counter(
                meter,
                "chatd_hand_backs",
                "Chats this replica handed back to pending, by reason",
                one_label("reason", &["shutdown", "orphan", "phantom"]),
            ),
            lease_renew: histogram(
                meter,
                "chatd_lease_renew_seconds",
                "Duration of the heartbeat statement",
                &STATEMENT_SECONDS,
            ),
            lease_failures: counter(
                meter,
                "chatd_lease_renew_failures",
                "Heartbeats that failed or timed out",
                unlabelled(),
            ),
            lease_lost: counter(
                meter,
                "chatd_lease_lost",
                "Times the lease lapsed and the replica fenced itself",
                unlabelled(),
            ),
            reconcile: counter(
                meter,
                "chatd_reconcile_actions",
                "Reconciliation actions, by action",
                one_label("action", &["cancel_stale", "interrupt", "hand_back_orphan"]),
            ),
            run_panics: counter(
                meter,
                "chatd_run_panics",
                "Runs that panicked (the chat ends in error)",
                unlabelled(),
            ),
            deaths: counter(
                meter,
                "chatd_replica_deaths_detected",
                "Dead replicas this replica found, by cause (lock_released, lease_expired)",
                one_label("cause", &["lock_released", "lease_expired"]),
            ),
            death_recovery: histogram(
                meter,
                "chatd_death_recovery_seconds",
                "Time from finding a replica dead to its chats being pending again",
                &STATEMENT_SECONDS,
            ),
            pending,
        }
    }

    pub(crate) fn hand_back(&self, count: usize, reason: &'static str) {
        self.hand_backs
            .add(count as u64, &[KeyValue::new("reason", reason)]);
    }

    /// A dead replica was found (and its chats recovered within `took`).
    pub(crate) fn death(&self, cause: &'static str, took: std::time::Duration) {
        self.deaths.add(1, &[KeyValue::new("cause", cause)]);
        self.death_recovery.record(took.as_secs_f64(), &[]);
    }

    pub(crate) fn reconciled(&self, count: usize, action: &'static str) {
        if count > 0 {
            self.reconcile
                .add(count as u64, &[KeyValue::new("action", action)]);
        }
    }
}
