//! `chatd_relay_*` instruments.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

/// The relay's counters, gauges and latency histogram.
#[derive(Clone)]
pub struct RelayMetrics {
    pub(crate) peers_connected: Arc<AtomicI64>,
    pub(crate) subscriptions: Arc<AtomicI64>,
    pub(crate) served: Arc<AtomicI64>,
    pub(crate) frames: Counter<u64>,
    pub(crate) parts: Counter<u64>,
    pub(crate) bytes: Counter<u64>,
    pub(crate) overflows: Counter<u64>,
    pub(crate) reconnects: Counter<u64>,
    pub(crate) stale: Counter<u64>,
    pub(crate) rejected: Counter<u64>,
    pub(crate) latency: Histogram<f64>,
}

/// A gauge that reports the value of the returned cell.
fn gauge(meter: &Meter, name: &'static str, description: &'static str) -> Arc<AtomicI64> {
    let value = Arc::new(AtomicI64::new(0));
    let observed = value.clone();
    meter
        .i64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |o| o.observe(observed.load(Ordering::Relaxed), &[]))
        .build();
    value
}

impl RelayMetrics {
    /// Registers the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        use chatd_shared::metrics::{counter, histogram, one_label, unlabelled};
        let peers_connected = gauge(
            meter,
            "chatd_relay_peers_connected",
            "Peer replicas this replica holds a relay connection to",
        );
        let subscriptions = gauge(
            meter,
            "chatd_relay_subscriptions",
            "Chats this replica follows on peers",
        );
        let served = gauge(
            meter,
            "chatd_relay_connections_served",
            "Relay connections peers hold to this replica",
        );
        Self {
            peers_connected,
            subscriptions,
            served,
            frames: counter(
                meter,
                "chatd_relay_frames",
                "Relay frames, by direction",
                one_label("direction", &["sent", "received"]),
            ),
            parts: counter(
                meter,
                "chatd_relay_parts",
                "Parts relayed, by direction",
                one_label("direction", &["sent", "received"]),
            ),
            bytes: counter(
                meter,
                "chatd_relay_bytes",
                "Relay frame bytes, by direction",
                one_label("direction", &["sent", "received"]),
            ),
            overflows: counter(
                meter,
                "chatd_relay_overflows",
                "Chats whose relay subscription overflowed and was restarted",
                unlabelled(),
            ),
            reconnects: counter(
                meter,
                "chatd_relay_reconnects",
                "Peer connections lost and dialed again",
                unlabelled(),
            ),
            stale: counter(
                meter,
                "chatd_relay_stale_discarded",
                "Relayed parts discarded for a stale worker or generation",
                unlabelled(),
            ),
            rejected: counter(
                meter,
                "chatd_relay_rejected",
                "Relay connections refused (bad or missing secret)",
                unlabelled(),
            ),
            // Loopback relays take tens of microseconds: sub-millisecond buckets.
            latency: histogram(
                meter,
                "chatd_relay_latency_seconds",
                "From the worker sending a parts frame to this replica receiving it",
                &[
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.5, 1.0,
                ],
            ),
        }
    }

    pub(crate) fn frame(&self, direction: &'static str, bytes: usize, parts: usize) {
        let labels = [KeyValue::new("direction", direction)];
        self.frames.add(1, &labels);
        self.bytes.add(bytes as u64, &labels);
        if parts > 0 {
            self.parts.add(parts as u64, &labels);
        }
    }
}
