//! Requests the server received, for tests that assert on what chatd sent.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use axum::http::HeaderMap;
use serde_json::Value;

use crate::api::Api;

/// How many requests a server keeps by default: enough for any test, small
/// enough that a load test cannot grow memory without bound.
pub const DEFAULT_RECORD_LIMIT: usize = 10_000;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Which endpoint it hit.
    pub api: Api,
    /// The request path.
    pub path: String,
    /// All request headers (API keys included; this is a test server).
    pub headers: HeaderMap,
    /// The body as JSON; `None` when it was not valid JSON.
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// The value of header `name` (case-insensitive), when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// The last `limit` requests, oldest first. The lock is held only to push or
/// copy, never across an await.
#[derive(Debug)]
pub(crate) struct Recorder {
    limit: usize,
    requests: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    /// A recorder keeping at most `limit` requests; 0 records nothing.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            requests: Mutex::new(VecDeque::new()),
        }
    }

    /// Records a request; the body is parsed only when recording is on.
    pub(crate) fn record(&self, api: Api, headers: &HeaderMap, body: &[u8]) {
        if self.limit == 0 {
            return;
        }
        let request = RecordedRequest {
            api,
            path: api.path().to_owned(),
            headers: headers.clone(),
            body: serde_json::from_slice(body).ok(),
        };
        let mut requests = self.lock();
        if requests.len() >= self.limit {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    /// A copy of the recorded requests, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().iter().cloned().collect()
    }

    /// Forgets every recorded request.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot leave the queue inconsistent.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_limit_requests() {
        let recorder = Recorder::new(3);
        for index in 0..5 {
            recorder.record(
                Api::OpenAi,
                &HeaderMap::new(),
                format!("{index}").as_bytes(),
            );
        }
        let bodies: Vec<_> = recorder
            .snapshot()
            .into_iter()
            .map(|request| request.body)
            .collect();
        assert_eq!(bodies, [Some(2.into()), Some(3.into()), Some(4.into())]);
    }

    #[test]
    fn limit_zero_records_nothing() {
        let recorder = Recorder::new(0);
        recorder.record(Api::Anthropic, &HeaderMap::new(), b"{}");
        assert!(recorder.snapshot().is_empty());
    }

    #[test]
    fn unparseable_body_is_recorded_without_json() {
        let recorder = Recorder::new(1);
        recorder.record(Api::Anthropic, &HeaderMap::new(), b"not json");
        let requests = recorder.snapshot();
        assert_eq!(requests[0].body, None);
        assert_eq!(requests[0].path, "/v1/messages");
    }
}
