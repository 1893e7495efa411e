//! `chatd_pubsub_*` instruments.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use opentelemetry::metrics::{Counter, Histogram, Meter};

/// The pubsub's counters and histograms.
#[derive(Clone)]
pub(crate) struct PubSubMetrics {
    pub publishes: Counter<u64>,
    pub publish_batches: Counter<u64>,
    pub publish_bytes: Counter<u64>,
    pub publish_dropped: Counter<u64>,
    pub publish_failures: Counter<u64>,
    pub received: Counter<u64>,
    pub reconnects: Counter<u64>,
    pub resyncs: Counter<u64>,
    pub latency: Histogram<f64>,
}

impl PubSubMetrics {
    pub(crate) fn new(meter: &Meter, connected: Arc<AtomicBool>) -> Self {
        use crate::metrics::{counter, histogram, unlabelled};
        meter
            .u64_observable_gauge("chatd_pubsub_connected")
            .with_description("1 while the LISTEN connection is up")
            .with_callback(move |observer| {
                observer.observe(u64::from(connected.load(Ordering::Relaxed)), &[])
            })
            .build();
        Self {
            publishes: counter(
                meter,
                "chatd_pubsub_publishes",
                "Notifications published",
                unlabelled(),
            ),
            publish_batches: counter(
                meter,
                "chatd_pubsub_publish_batches",
                "pg_notify statements sent (each carries a batch)",
                unlabelled(),
            ),
            publish_bytes: counter(
                meter,
                "chatd_pubsub_publish_bytes",
                "Payload bytes published",
                unlabelled(),
            ),
            publish_dropped: counter(
                meter,
                "chatd_pubsub_publish_dropped",
                "Notifications dropped because the publish queue was full",
                unlabelled(),
            ),
            publish_failures: counter(
                meter,
                "chatd_pubsub_publish_failures",
                "Batches the database refused (their notifications are lost; receivers poll)",
                unlabelled(),
            ),
            received: counter(
                meter,
                "chatd_pubsub_received",
                "Notifications received by the listener",
                unlabelled(),
            ),
            reconnects: counter(
                meter,
                "chatd_pubsub_reconnects",
                "Times the listener connection was re-established",
                unlabelled(),
            ),
            resyncs: counter(
                meter,
                "chatd_pubsub_resyncs",
                "Resync signals raised (reconnects and subscriber overflows)",
                unlabelled(),
            ),
            latency: histogram(
                meter,
                "chatd_pubsub_latency_seconds",
                "Notify-to-receive latency of the periodic probe",
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ],
            ),
        }
    }
}
