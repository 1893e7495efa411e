//! Turning rendered bytes into a paced HTTP body that can be cut mid-stream.

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::wire::RenderedStream;

/// A body's chunks, each sent after its delay, and whether the connection is
/// dropped after the last one instead of finishing the response.
#[derive(Debug, PartialEq)]
pub(crate) struct Schedule {
    chunks: Vec<(Duration, Bytes)>,
    cut: bool,
}

impl Schedule {
    /// Lays out a streamed reply: the preamble and first event after `ttft`,
    /// each later event after `token_delay`, the epilogue right after the last
    /// event. With `cut_after: Some(n)`, only the preamble and the first `n`
    /// events are sent. Bytes with no pause between them share one chunk, so
    /// a reply without delays costs one write.
    pub(crate) fn streamed(
        rendered: RenderedStream,
        ttft: Duration,
        token_delay: Duration,
        cut_after: Option<usize>,
    ) -> Self {
        let mut builder = ScheduleBuilder {
            chunks: Vec::new(),
            pending: rendered.preamble,
            delay: ttft,
        };
        for (index, event) in rendered.events.into_iter().enumerate() {
            if cut_after == Some(index) {
                return builder.finish(true);
            }
            if index > 0 && !token_delay.is_zero() {
                builder.flush();
                builder.delay += token_delay;
            }
            builder.pending.extend_from_slice(&event);
        }
        if cut_after.is_some() {
            return builder.finish(true);
        }
        builder.pending.extend_from_slice(&rendered.epilogue);
        builder.finish(false)
    }

    /// The first half of a non-streamed body, then a dropped connection.
    pub(crate) fn truncated(body: Bytes) -> Self {
        Self {
            chunks: vec![(Duration::ZERO, body.slice(..body.len() / 2))],
            cut: true,
        }
    }

    /// The HTTP body. A cut ends it with an error, which makes the server
    /// drop the connection without finishing the response. `stop` ends the
    /// body the same way at once (the server is being dropped).
    pub(crate) fn into_body(self, stop: CancellationToken) -> Body {
        let state = BodyState {
            chunks: self.chunks.into_iter(),
            cut: self.cut,
            stop,
        };
        Body::from_stream(futures::stream::unfold(state, BodyState::next))
    }
}

struct ScheduleBuilder {
    chunks: Vec<(Duration, Bytes)>,
    pending: BytesMut,
    /// The pause before `pending`; it accumulates over events that render to
    /// nothing (an OpenAI reasoning signature).
    delay: Duration,
}

impl ScheduleBuilder {
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.chunks
                .push((self.delay, self.pending.split().freeze()));
            self.delay = Duration::ZERO;
        }
    }

    fn finish(mut self, cut: bool) -> Schedule {
        self.flush();
        Schedule {
            chunks: self.chunks,
            cut,
        }
    }
}

struct BodyState {
    chunks: std::vec::IntoIter<(Duration, Bytes)>,
    cut: bool,
    stop: CancellationToken,
}

impl BodyState {
    async fn next(mut self) -> Option<(Result<Bytes, io::Error>, Self)> {
        if self.stop.is_cancelled() {
            return self.abort("mock LLM server stopped");
        }
        let Some((delay, bytes)) = self.chunks.next() else {
            if !self.cut {
                return None;
            }
            // Returning `Pending` once lets the server flush what was sent so
            // far; failing at once could drop it with the connection, and the
            // client would see no response at all instead of a cut one.
            tokio::task::yield_now().await;
            return self.abort("mock LLM cut the stream");
        };
        if !delay.is_zero() {
            tokio::select! {
                () = self.stop.cancelled() => return self.abort("mock LLM server stopped"),
                () = tokio::time::sleep(delay) => {}
            }
        }
        Some((Ok(bytes), self))
    }

    /// Ends the body with an error and nothing after it.
    fn abort(mut self, reason: &'static str) -> Option<(Result<Bytes, io::Error>, Self)> {
        self.chunks = Vec::new().into_iter();
        self.cut = false;
        self.stop = CancellationToken::new();
        Some((
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, reason)),
            self,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(events: &[&'static str]) -> RenderedStream {
        RenderedStream {
            preamble: BytesMut::from("P"),
            events: events
                .iter()
                .map(|event| Bytes::from_static(event.as_bytes()))
                .collect(),
            epilogue: Bytes::from_static(b"E"),
        }
    }

    fn chunk(delay_ms: u64, bytes: &'static str) -> (Duration, Bytes) {
        (
            Duration::from_millis(delay_ms),
            Bytes::from_static(bytes.as_bytes()),
        )
    }

    #[test]
    fn without_delays_everything_is_one_chunk() {
        let schedule =
            Schedule::streamed(rendered(&["a", "b"]), Duration::ZERO, Duration::ZERO, None);
        assert_eq!(
            schedule,
            Schedule {
                chunks: vec![chunk(0, "PabE")],
                cut: false
            }
        );
    }

    #[test]
    fn ttft_precedes_the_first_event_and_delays_separate_the_rest() {
        let schedule = Schedule::streamed(
            rendered(&["a", "", "b"]),
            Duration::from_millis(50),
            Duration::from_millis(10),
            None,
        );
        assert_eq!(
            schedule,
            Schedule {
                chunks: vec![chunk(50, "Pa"), chunk(20, "bE")],
                cut: false
            }
        );
    }

    #[test]
    fn cut_keeps_the_first_events_and_never_the_epilogue() {
        let cut_one = Schedule::streamed(
            rendered(&["a", "b"]),
            Duration::ZERO,
            Duration::ZERO,
            Some(1),
        );
        assert_eq!(
            cut_one,
            Schedule {
                chunks: vec![chunk(0, "Pa")],
                cut: true
            }
        );
        let cut_past_end =
            Schedule::streamed(rendered(&["a"]), Duration::ZERO, Duration::ZERO, Some(9));
        assert_eq!(
            cut_past_end,
            Schedule {
                chunks: vec![chunk(0, "Pa")],
                cut: true
            }
        );
    }

    #[test]
    fn truncated_body_sends_half() {
        let schedule = Schedule::truncated(Bytes::from_static(b"abcd"));
        assert_eq!(
            schedule,
            Schedule {
                chunks: vec![chunk(0, "ab")],
                cut: true
            }
        );
    }
}
