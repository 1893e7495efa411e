//! One span per HTTP request (ARCHITECTURE.md §11), through tower-http's
//! `TraceLayer`: a root span (the request's `traceparent`, when it has one,
//! is its parent) named [`span::HTTP_REQUEST`] with the method, the route
//! template, the status and the replica's id. A chat transition made
//! inside it stores its context, so the run it starts links back to it.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, Request},
    http::Response,
};
use chatd_shared::ids::ReplicaId;
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::{MakeSpan, OnResponse, TraceLayer},
};
use tracing::{Span, field::Empty};

use crate::traces::{self, span};

/// The layer, for every route of `replica_id`'s API.
pub fn layer(
    replica_id: ReplicaId,
) -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan, (), RecordStatus, (), (), ()>
{
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan { replica_id })
        .on_request(())
        .on_response(RecordStatus)
        .on_body_chunk(())
        .on_eos(())
        // No log line per 5xx (readiness answers 503 while starting and
        // draining): `chatd_http_requests` counts them by status.
        .on_failure(())
}

/// Makes a request's span.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan {
    replica_id: ReplicaId,
}

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        // The template, never the raw path: ids would make every span
        // name unique.
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let span = tracing::info_span!(
            parent: None,
            "http_request",
            otel.name = %format_args!("{} {route}", request.method()),
            http.request.method = %request.method(),
            http.route = route,
            http.response.status_code = Empty,
            replica_id = %self.replica_id,
        );
        debug_assert_eq!(span::HTTP_REQUEST, "http_request");
        traces::adopt_remote_parent(&span, request.headers());
        span
    }
}

/// Records the response's status on the request's span.
#[derive(Debug, Clone, Copy)]
pub struct RecordStatus;

impl<B> OnResponse<B> for RecordStatus {
    fn on_response(self, response: &Response<B>, _latency: Duration, span: &Span) {
        span.record("http.response.status_code", response.status().as_u16());
    }
}
