//! HTTP request metrics by route and status, with latency (ARCHITECTURE.md §11).

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};
use tokio::time::Instant;

use super::AppState;

/// `chatd_http_requests` and `chatd_http_request_duration_seconds`.
pub(super) struct HttpMetrics {
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

impl HttpMetrics {
    pub(super) fn new(meter: &Meter) -> Self {
        use chatd_shared::metrics::{counter, histogram, unlabelled};
        Self {
            // Routes and statuses are many: one zero without labels.
            requests: counter(
                meter,
                "chatd_http_requests",
                "HTTP requests, by method, route and status",
                unlabelled(),
            ),
            duration: histogram(
                meter,
                "chatd_http_request_duration_seconds",
                "Time to the response headers, by route",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
        }
    }
}

/// Counts every request under its route template (never the raw path: ids
/// would explode the label set).
pub(super) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        KeyValue::new("method", method),
        KeyValue::new("route", route),
        KeyValue::new("status", response.status().as_u16().to_string()),
    ];
    state.metrics.requests.add(1, &labels);
    state
        .metrics
        .duration
        .record(started.elapsed().as_secs_f64(), &labels[..2]);
    response
}

/// `chatd_stream_subscribers{transport}` and `chatd_stream_reconnects{reason}`.
pub struct StreamMetrics {
    subscribers: opentelemetry::metrics::UpDownCounter<i64>,
    reconnects: Counter<u64>,
}

/// Counts one open stream until dropped.
pub struct OpenStream {
    subscribers: opentelemetry::metrics::UpDownCounter<i64>,
    transport: &'static str,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.subscribers
            .add(-1, &[KeyValue::new("transport", self.transport)]);
    }
}

impl StreamMetrics {
    pub(super) fn new(meter: &Meter) -> Self {
        use chatd_shared::metrics::{counter, one_label};
        let subscribers = meter
            .i64_up_down_counter("chatd_stream_subscribers")
            .with_description("Open client streams, by transport")
            .build();
        for transport in ["websocket", "sse"] {
            subscribers.add(0, &[KeyValue::new("transport", transport)]);
        }
        Self {
            subscribers,
            reconnects: counter(
                meter,
                "chatd_stream_reconnects",
                "Streams the server ended with a reconnect event, by reason",
                one_label("reason", &["replica_shutting_down", "slow_consumer"]),
            ),
        }
    }

    /// A stream opened over `transport`; closed when the guard drops.
    pub fn open(&self, transport: &'static str) -> OpenStream {
        self.subscribers
            .add(1, &[KeyValue::new("transport", transport)]);
        OpenStream {
            subscribers: self.subscribers.clone(),
            transport,
        }
    }

    /// A `reconnect` event went out.
    pub fn reconnect_sent(&self, reason: &'static str) {
        self.reconnects.add(1, &[KeyValue::new("reason", reason)]);
    }
}
