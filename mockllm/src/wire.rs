//! What a provider wire format must provide to be served, and the pieces the
//! two formats share (SSE framing, error responses, deliberately broken bodies).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::Api;
use crate::conversation::Conversation;
use crate::plan::{Failure, Reply};

/// The `created` timestamp of every OpenAI object: fixed, so that the same
/// seed and request give a byte-for-byte identical body.
pub(crate) const CREATED: u64 = 1_735_689_600;

/// `text/event-stream`, the content type of every streamed reply.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// One provider's wire format. Renderers only translate a [`Reply`]; every
/// decision was made by the engine.
pub(crate) trait WireFormat: Send + Sync + 'static {
    /// The API this format serves.
    const API: Api;
    /// The request body.
    type Request: DeserializeOwned + Send;

    /// True when `headers` carry `key` where this provider expects it.
    fn authorized(headers: &HeaderMap, key: &str) -> bool;
    /// Checks what serde cannot express; the error becomes a 400.
    fn validate(request: &Self::Request) -> Result<(), String>;
    /// What the response must echo or honour.
    fn options(request: &Self::Request) -> ResponseOptions;
    /// The provider-neutral view the engine plans from.
    fn conversation(request: Self::Request) -> Conversation;
    /// The JSON error body for `failure`.
    fn error_body(failure: &Failure) -> Value;
    /// The streamed reply, cut into the frames of each event.
    fn stream(reply: &Reply, options: &ResponseOptions) -> RenderedStream;
    /// The non-streamed reply.
    fn message(reply: &Reply, options: &ResponseOptions) -> Value;
    /// A stream that starts well and then carries a chunk that is not JSON,
    /// followed by the normal terminator.
    fn broken_json_stream(options: &ResponseOptions) -> Bytes;
}

/// Request settings the response depends on.
#[derive(Debug, Clone)]
pub(crate) struct ResponseOptions {
    /// The requested model, echoed back.
    pub(crate) model: String,
    /// Stream (SSE) or answer with one JSON object.
    pub(crate) stream: bool,
    /// OpenAI `stream_options.include_usage`: send a usage chunk at the end.
    pub(crate) include_usage: bool,
}

/// A streamed reply as bytes, split so pacing and cuts fall between events.
#[derive(Debug, Default)]
pub(crate) struct RenderedStream {
    /// What precedes the first event (OpenAI role chunk, Anthropic `message_start`).
    pub(crate) preamble: BytesMut,
    /// The frames of each [`Reply::events`] entry, same index (possibly empty).
    pub(crate) events: Vec<Bytes>,
    /// The finish: stop reason, usage and terminator.
    pub(crate) epilogue: Bytes,
}

/// Appends an unnamed SSE frame (`data: …`), as OpenAI sends them.
pub(crate) fn data_frame(buffer: &mut BytesMut, data: &impl Serialize) {
    buffer.put_slice(b"data: ");
    write_json(buffer, data);
    buffer.put_slice(b"\n\n");
}

/// Appends a named SSE frame (`event: …` then `data: …`), as Anthropic sends them.
pub(crate) fn event_frame(buffer: &mut BytesMut, event: &str, data: &impl Serialize) {
    buffer.put_slice(b"event: ");
    buffer.put_slice(event.as_bytes());
    buffer.put_slice(b"\n");
    data_frame(buffer, data);
}

/// Serialises straight into the buffer. The frames are plain structs and
/// `serde_json::Value`s, which always serialise, and writing to memory
/// cannot fail; an error would be a bug, so it is logged rather than sent.
fn write_json(buffer: &mut BytesMut, data: &impl Serialize) {
    if let Err(error) = serde_json::to_writer((&mut *buffer).writer(), data) {
        tracing::error!(%error, "cannot serialise a stream frame");
    }
}

/// The HTTP response for `failure` in format `W`, with `Retry-After` when set.
pub(crate) fn error_response<W: WireFormat>(failure: &Failure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(W::error_body(failure))).into_response();
    if let Some(seconds) = failure.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// What a misconfigured proxy returns: an HTML page with status 200.
pub(crate) const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>\n";

/// A JSON body cut short.
pub(crate) const TRUNCATED_JSON: &str =
    r#"{"id": "mock-broken", "choices": [{"index": 0, "message": {"#;

/// Bytes that are neither server-sent events nor JSON: no `data:` field, no
/// valid UTF-8.
pub(crate) const GARBAGE: &[u8] =
    b"\xff\xfe\x00garbage <not> an event stream\r\n\x00\x01\x02 ~~~\n";
