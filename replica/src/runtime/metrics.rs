//! The runtime's instruments (DESIGN §11).

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

const SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl RuntimeMetrics {
    pub(crate) fn new(meter: &Meter, registry: Arc<Registry>) -> Self {
        meter
            .u64_observable_gauge("chatd_running_chats")
            .with_description("Chats this replica is running")
            .with_callback(move |observer| observer.observe(registry.len() as u64, &[]))
            .build();
        let pending = Arc::new(AtomicI64::new(0));
        let observed = pending.clone();
        meter
            .i64_observable_gauge("chatd_pending_chats")
            .with_description("Pending chats in the whole cluster (counted every 15 s)")
            .with_callback(move |observer| observer.observe(observed.load(Ordering::Relaxed), &[]))
            .build();
        Self {
            acquires: meter
                .u64_counter("chatd_acquires")
                .with_description("Chats acquired by this replica")
                .build(),
            acquire_batch: meter
                .u64_histogram("chatd_acquire_batch_size")
                .with_description("Chats claimed per claim statement")
                .with_boundaries(vec![0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
                .build(),
            queue_wait: meter
                .f64_histogram("chatd_queue_wait_seconds")
                .with_description("Time from pending to running")
                .with_unit("s")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            recoveries: meter
                .u64_counter("chatd_recoveries")
                .with_description("Chats of dead replicas put back to pending by this replica")
                .build(),
            hand_backs: meter
                .u64_counter("chatd_hand_backs")
                .with_description("Chats this replica handed back to pending, by reason")
                .build(),
            lease_renew: meter
                .f64_histogram("chatd_lease_renew_seconds")
                .with_description("Duration of the heartbeat statement")
                .with_unit("s")
                .with_boundaries(SECONDS.to_vec())
                .build(),
            lease_failures: meter
                .u64_counter("chatd_lease_renew_failures")
                .with_description("Heartbeats that failed or timed out")
                .build(),
            lease_lost: meter
                .u64_counter("chatd_lease_lost")
                .with_description("Times the lease lapsed and the replica fenced itself")
                .build(),
            reconcile: meter
                .u64_counter("chatd_reconcile_actions")
                .with_description("Reconciliation actions, by action")
                .build(),
            run_panics: meter
                .u64_counter("chatd_run_panics")
                .with_description("Runs that panicked (the chat ends in error)")
                .build(),
            deaths: meter
                .u64_counter("chatd_replica_deaths_detected")
                .with_description(
                    "Dead replicas this replica found, by cause (lock_released, lease_expired)",
                )
                .build(),
            death_recovery: meter
                .f64_histogram("chatd_death_recovery_seconds")
                .with_description(
                    "Time from finding a replica dead to its chats being pending again",
                )
                .with_unit("s")
                .with_boundaries(SECONDS.to_vec())
                .build(),
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
