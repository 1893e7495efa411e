//! Putting a stream of events on the wire: WebSocket (one JSON event per
//! text frame, pings, a client that stops answering is dropped) or SSE
//! (`event:`, `id:`, `data:`, keep-alive comments). The same rules for chat
//! streams and chat-list streams.

use std::{convert::Infallible, future::Future, time::Duration};

use axum::{
    extract::ws::{
        Message as WsMessage, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
    },
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

use super::{
    AppState,
    error::{ApiError, ApiResult},
};

/// Read buffer of a server WebSocket (clients send pongs and closes only).
const READ_BUFFER: usize = 4 * 1024;
/// Frames are gathered up to this many bytes before a socket write, so the
/// events [`write_ready`] feeds in one go leave in one `write`, not one
/// each. A connection's buffer only grows to what one burst needs (at most
/// this plus one frame), so an idle subscriber keeps it small.
const WRITE_BUFFER: usize = 8 * 1024;
/// Largest message a client may send on a stream.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

pub use crate::streams::Next;

/// Where a stream's events come from.
pub trait EventSource: Send + 'static {
    /// The events.
    type Event: Serialize + Send + Sync + 'static;
    /// The next thing to put on the wire.
    fn next(&mut self) -> impl Future<Output = Next<Self::Event>> + Send;
    /// An event that is ready now, without waiting: written in the same
    /// WebSocket write as the one before it. None by default.
    fn ready(&mut self) -> Option<Box<Self::Event>> {
        None
    }
    /// The event that tells the client to reconnect.
    fn reconnect(&self, reason: &str) -> Self::Event;
    /// The event's `type` (the SSE event name).
    fn kind(event: &Self::Event) -> &'static str;
}

/// How the client wants the stream.
pub enum Transport {
    /// Upgrade to a WebSocket.
    WebSocket(WebSocketUpgrade),
    /// Server-sent events.
    Sse,
}

/// WebSocket when the request upgrades, SSE when it accepts
/// `text/event-stream`, else 400.
pub fn transport(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: &HeaderMap,
) -> ApiResult<Transport> {
    if let Ok(upgrade) = upgrade {
        return Ok(Transport::WebSocket(upgrade));
    }
    let accepts_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"));
    if accepts_sse {
        return Ok(Transport::Sse);
    }
    Err(ApiError::bad_request(
        "stream_transport",
        "open this as a WebSocket, or send Accept: text/event-stream for SSE",
    ))
}

/// The response that serves `source` over `transport`.
pub fn respond<S: EventSource>(state: AppState, transport: Transport, source: S) -> Response {
    match transport {
        // Clients only send pongs and closes: tungstenite's default 128 KiB
        // read and write buffers per connection would dominate a replica's
        // memory.
        Transport::WebSocket(upgrade) => upgrade
            .protocols([super::auth::WEBSOCKET_PROTOCOL])
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(MAX_CLIENT_MESSAGE)
            .max_frame_size(MAX_CLIENT_MESSAGE)
            .on_upgrade(move |socket| websocket(state, source, socket)),
        Transport::Sse => sse(state, source).into_response(),
    }
}

/// The WebSocket keep-alive rule (ARCHITECTURE.md §6): a ping every interval; a
/// client that left two pings unanswered when the next is due is gone.
struct PingClock {
    interval: Duration,
    next_ping: Instant,
    /// Pings sent since the last pong.
    unanswered: u32,
}

/// What is due when the ping timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingDue {
    /// Send a ping.
    Ping,
    /// Two pings went unanswered: the client is gone.
    Gone,
}

impl PingClock {
    /// Pings missed in a row that mean the client is gone.
    const MISSED_PONGS: u32 = 2;

    /// The first ping is due one interval from now.
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_ping: Instant::now() + interval,
            unanswered: 0,
        }
    }

    /// When the next ping is due.
    fn due(&self) -> Instant {
        self.next_ping
    }

    /// The ping due now: send it, or give up on the client.
    fn fire(&mut self) -> PingDue {
        if self.unanswered >= Self::MISSED_PONGS {
            return PingDue::Gone;
        }
        self.unanswered += 1;
        self.next_ping = Instant::now() + self.interval;
        PingDue::Ping
    }

    /// The client answered.
    fn pong(&mut self) {
        self.unanswered = 0;
    }
}

/// Frames out, pings and pongs, until the source ends, the client leaves,
/// the client stops answering pings, or the replica shuts down.
async fn websocket<S: EventSource>(state: AppState, mut source: S, socket: WebSocket) {
    let _open = state.stream_metrics.open("websocket");
    let (mut outbound, mut inbound) = socket.split();
    let mut pings = PingClock::new(state.config.keepalive);
    let ping_timer = tokio::time::sleep_until(pings.due());
    tokio::pin!(ping_timer);
    let last = loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break Some("replica_shutting_down"),
            next = source.next() => match next {
                Next::Event(event, _) => {
                    if write_ready(&mut outbound, &mut source, event).await.is_err() {
                        return;
                    }
                }
                Next::Reconnect(reason) => break Some(reason),
                Next::Close => break None,
            },
            _ = &mut ping_timer => {
                if pings.fire() == PingDue::Gone
                    || outbound.send(WsMessage::Ping(Default::default())).await.is_err()
                {
                    return;
                }
                ping_timer.as_mut().reset(pings.due());
            }
            incoming = inbound.next() => match incoming {
                Some(Ok(WsMessage::Pong(_))) => pings.pong(),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some(reason) = last {
        state.stream_metrics.reconnect_sent(reason);
        let _ = send_json(&mut outbound, &source.reconnect(reason)).await;
    }
    let _ = outbound.send(WsMessage::Close(None)).await;
}

/// Events written in one go at most: bounds the write buffer and how long
/// a burst keeps the loop from pings and shutdown.
const COALESCED_EVENTS: usize = 64;

/// Writes `first` and every event the source has ready now (up to
/// [`COALESCED_EVENTS`]) as frames of one socket write: a burst of parts
/// costs one `write` instead of one per part, and the client reads them in
/// fewer segments. The frames are the usual ones; clients see no
/// difference.
async fn write_ready<S: EventSource>(
    outbound: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    source: &mut S,
    first: Box<S::Event>,
) -> Result<(), axum::Error> {
    outbound.feed(text_frame(first.as_ref())?).await?;
    for _ in 1..COALESCED_EVENTS {
        let Some(event) = source.ready() else {
            break;
        };
        outbound.feed(text_frame(event.as_ref())?).await?;
    }
    outbound.flush().await
}

fn text_frame(value: &impl Serialize) -> Result<WsMessage, axum::Error> {
    let text = serde_json::to_string(value).map_err(axum::Error::new)?;
    Ok(WsMessage::Text(text.into()))
}

async fn send_json(
    outbound: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    value: &impl Serialize,
) -> Result<(), axum::Error> {
    outbound.send(text_frame(value)?).await
}

/// The SSE body: pulled as the client reads, so a slow reader leaves events
/// waiting in its hub queue until that overflows into `reconnect`.
fn sse<S: EventSource>(
    state: AppState,
    source: S,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let keepalive = state.config.keepalive;
    let open = state.stream_metrics.open("sse");
    let events = futures::stream::unfold(Some((state, source, open)), |current| async move {
        let (state, mut source, open) = current?;
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => Next::Reconnect("replica_shutting_down"),
            next = source.next() => next,
        };
        let (event, cursor, last) = match next {
            Next::Event(event, cursor) => (*event, cursor, false),
            Next::Reconnect(reason) => {
                state.stream_metrics.reconnect_sent(reason);
                (source.reconnect(reason), None, true)
            }
            Next::Close => return None,
        };
        let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
        let mut frame = SseEvent::default().event(S::kind(&event)).data(data);
        if let Some(cursor) = cursor {
            frame = frame.id(cursor.to_event_id());
        }
        Some((Ok(frame), (!last).then_some((state, source, open))))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: Duration = Duration::from_secs(15);

    /// Fires the pings as they come due, the client answering the ones
    /// numbered in `answered` (from 1); returns when the client was given up on.
    async fn given_up_after(answered: &[u32]) -> Duration {
        let start = Instant::now();
        let mut pings = PingClock::new(KEEPALIVE);
        for sent in 1.. {
            tokio::time::sleep_until(pings.due()).await;
            if pings.fire() == PingDue::Gone {
                return start.elapsed();
            }
            if answered.contains(&sent) {
                tokio::time::advance(Duration::from_secs(1)).await;
                pings.pong();
            }
        }
        unreachable!()
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_answers_is_dropped_after_two_missed_pongs() {
        // Pings at 15 s and 30 s; at 45 s both are still unanswered.
        assert_eq!(given_up_after(&[]).await, Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn one_missed_pong_is_forgiven_by_the_next() {
        // Ping 2 (30 s) is missed, ping 3 (45 s) answered; 4 (60 s) and
        // 5 (75 s) are not, so at 90 s the client is gone.
        assert_eq!(given_up_after(&[1, 3]).await, Duration::from_secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_stays_and_is_pinged_every_interval() {
        let answered: Vec<u32> = (1..=20).collect();
        // Pings go every 15 s whatever the answers: 20 answered (to 300 s),
        // then two missed ones (315 s, 330 s).
        let gone = given_up_after(&answered).await;
        assert_eq!(gone, Duration::from_secs(345));
    }
}
