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
        meter
            .u64_observable_gauge("chatd_pubsub_connected")
            .with_description("1 while the LISTEN connection is up")
            .with_callback(move |observer| {
                observer.observe(u64::from(connected.load(Ordering::Relaxed)), &[])
            })
            .build();
        Self {
            publishes: meter
                .u64_counter("chatd_pubsub_publishes")
                .with_description("Notifications published")
                .build(),
            publish_batches: meter
                .u64_counter("chatd_pubsub_publish_batches")
                .with_description("pg_notify statements sent (each carries a batch)")
                .build(),
            publish_bytes: meter
                .u64_counter("chatd_pubsub_publish_bytes")
                .with_description("Payload bytes published")
                .with_unit("By")
                .build(),
            publish_dropped: meter
                .u64_counter("chatd_pubsub_publish_dropped")
                .with_description("Notifications dropped because the publish queue was full")
                .build(),
            publish_failures: meter
                .u64_counter("chatd_pubsub_publish_failures")
                .with_description(
                    "Batches the database refused (their notifications are lost; receivers poll)",
                )
                .build(),
            received: meter
                .u64_counter("chatd_pubsub_received")
                .with_description("Notifications received by the listener")
                .build(),
            reconnects: meter
                .u64_counter("chatd_pubsub_reconnects")
                .with_description("Times the listener connection was re-established")
                .build(),
            resyncs: meter
                .u64_counter("chatd_pubsub_resyncs")
                .with_description("Resync signals raised (reconnects and subscriber overflows)")
                .build(),
            latency: meter
                .f64_histogram("chatd_pubsub_latency_seconds")
                .with_description("Notify-to-receive latency of the periodic probe")
                .with_unit("s")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
                .build(),
        }
    }
}
