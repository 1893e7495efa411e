//! Server-sent events from a provider's streaming response: opening the
//! stream (status and content-type checks) and the reader that turns SSE
//! events into [`StreamEvent`]s through a wire format's [`Decoder`].

use std::collections::VecDeque;

use bytes::Bytes;
use eventsource_stream::{Event, EventStream as SseEvents, EventStreamError, Eventsource};
use futures::{StreamExt, stream::BoxStream};
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::{
    EventStream, ProviderError, StreamEvent,
    error::{self, Phase},
};

/// Bytes of the start of a body kept to quote when it turns out not to be
/// server-sent events.
const HEAD_BYTES: usize = 256;

/// One wire format's reading of its events.
pub(crate) trait Decoder: Send + 'static {
    /// The event that ends a complete response (`[DONE]`, `message_stop`),
    /// named when a stream ends without it.
    const TERMINAL: &'static str;

    /// Handles one SSE event, appending what it means to `out`. Returns
    /// [`Progress::Done`] after the terminal event; nothing is read after it.
    fn decode(
        &mut self,
        provider: &str,
        event: &Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError>;
}

/// Whether a response is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More events follow.
    More,
    /// That was the terminal event.
    Done,
}

/// Sends a streaming request and checks the response: an error status
/// becomes a classified error, and a success must be `text/event-stream`.
pub(crate) async fn open(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|error| error::transport(provider, error, Phase::Request))?;
    if !response.status().is_success() {
        return Err(error::from_response(provider, response).await);
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    if !is_event_stream(&content_type) {
        let head = head(response).await;
        let content_type = if content_type.is_empty() {
            "none"
        } else {
            &content_type
        };
        return Err(error::invalid_response(
            provider,
            format_args!("expected a text/event-stream response, got content type {content_type}"),
            &head,
        ));
    }
    Ok(response)
}

fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The first chunk of a body, for an excerpt; empty when there is none.
async fn head(mut response: reqwest::Response) -> Bytes {
    match response.chunk().await {
        Ok(Some(chunk)) => chunk.slice(..chunk.len().min(HEAD_BYTES)),
        Ok(None) | Err(_) => Bytes::new(),
    }
}

/// The events of an opened response, decoded by `decoder`. The stream ends
/// after the decoder's terminal event, or with an error: the decoder's, a
/// transport error, a body that is not server-sent events, or a body that
/// ended before the terminal event (a connection error, never a success).
pub(crate) fn events<D: Decoder>(
    provider: String,
    response: reqwest::Response,
    decoder: D,
) -> EventStream {
    let reader = Reader {
        provider,
        decoder,
        source: Source::Response(response),
        head: Bytes::new(),
        saw_event: false,
        pending: VecDeque::new(),
    };
    Box::pin(futures::stream::unfold(reader, Reader::next))
}

type Body = BoxStream<'static, Result<Bytes, reqwest::Error>>;

/// Where the reader is.
enum Source {
    /// Nothing read yet.
    Response(reqwest::Response),
    /// Reading events.
    Events(SseEvents<Body>),
    /// Done, or failed: nothing more is read.
    Finished,
}

struct Reader<D> {
    provider: String,
    decoder: D,
    source: Source,
    /// The start of the body, quoted if it is not server-sent events.
    head: Bytes,
    /// Whether any SSE event arrived (else the body is not SSE).
    saw_event: bool,
    /// Decoded events not yet yielded (one SSE event can mean several).
    pending: VecDeque<StreamEvent>,
}

impl<D: Decoder> Reader<D> {
    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            // `Finished` unless put back below: every error ends the stream.
            match std::mem::replace(&mut self.source, Source::Finished) {
                Source::Finished => return None,
                Source::Response(response) => match self.start(response).await {
                    Ok(events) => self.source = Source::Events(events),
                    Err(error) => return Some((Err(error), self)),
                },
                Source::Events(mut events) => {
                    let item = events.next().await;
                    match self.handle(item) {
                        Ok(Progress::More) => self.source = Source::Events(events),
                        Ok(Progress::Done) => {}
                        Err(error) => return Some((Err(error), self)),
                    }
                }
            }
        }
    }

    /// Reads the first chunk (keeping its start for error messages) and
    /// starts parsing events.
    async fn start(
        &mut self,
        mut response: reqwest::Response,
    ) -> Result<SseEvents<Body>, ProviderError> {
        let first = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Err(error::ended_early(&self.provider, D::TERMINAL)),
            Err(error) => return Err(error::transport(&self.provider, error, Phase::Body)),
        };
        // A copy, so the whole first chunk is not kept alive for the stream.
        self.head = Bytes::copy_from_slice(&first[..first.len().min(HEAD_BYTES)]);
        let body: Body = futures::stream::once(async move { Ok(first) })
            .chain(response.bytes_stream())
            .boxed();
        Ok(body.eventsource())
    }

    fn handle(
        &mut self,
        item: Option<Result<Event, EventStreamError<reqwest::Error>>>,
    ) -> Result<Progress, ProviderError> {
        let provider = &self.provider;
        match item {
            Some(Ok(event)) => {
                self.saw_event = true;
                self.decoder.decode(provider, &event, &mut self.pending)
            }
            Some(Err(EventStreamError::Transport(error))) => {
                Err(error::transport(provider, error, Phase::Body))
            }
            Some(Err(EventStreamError::Utf8(_))) => Err(error::invalid_response(
                provider,
                "the response is not server-sent events (not valid UTF-8)",
                &self.head,
            )),
            Some(Err(EventStreamError::Parser(parse))) => Err(error::invalid_response(
                provider,
                format_args!("the response is not server-sent events ({parse})"),
                &self.head,
            )),
            None if !self.saw_event => Err(error::invalid_response(
                provider,
                "the response is not server-sent events (no event in it)",
                &self.head,
            )),
            None => Err(error::ended_early(provider, D::TERMINAL)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_content_types() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("text/event-stream; charset=utf-8"));
        assert!(is_event_stream("Text/Event-Stream"));
        assert!(!is_event_stream("text/html"));
        assert!(!is_event_stream("application/json"));
        assert!(!is_event_stream(""));
    }
}
