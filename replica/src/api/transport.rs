//! Putting a stream of events on the wire: WebSocket (one JSON event per
//! text frame, pings, a client that stops answering is dropped) or SSE
//! (`event:`, `id:`, `data:`, keep-alive comments). The same rules for chat
//! streams and chat-list streams.

use std::{convert::Infallible, future::Future};

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

use super::{
    AppState,
    error::{ApiError, ApiResult},
};

/// Read buffer of a server WebSocket (clients send pongs and closes only).
const READ_BUFFER: usize = 4 * 1024;
/// Largest message a client may send on a stream.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

pub use crate::streams::Next;

/// Where a stream's events come from.
pub trait EventSource: Send + 'static {
    /// The events.
    type Event: Serialize + Send + Sync + 'static;
    /// The next thing to put on the wire.
    fn next(&mut self) -> impl Future<Output = Next<Self::Event>> + Send;
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
        // read buffer per connection would dominate a replica's memory.
        Transport::WebSocket(upgrade) => upgrade
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(MAX_CLIENT_MESSAGE)
            .max_frame_size(MAX_CLIENT_MESSAGE)
            .on_upgrade(move |socket| websocket(state, source, socket)),
        Transport::Sse => sse(state, source).into_response(),
    }
}

/// Frames out, pings and pongs, until the source ends, the client leaves,
/// the client stops answering pings, or the replica shuts down.
async fn websocket<S: EventSource>(state: AppState, mut source: S, socket: WebSocket) {
    let _open = state.stream_metrics.open("websocket");
    let (mut outbound, mut inbound) = socket.split();
    let mut ping = tokio::time::interval(state.config.keepalive);
    ping.reset();
    let mut unanswered = 0u32;
    let last = loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break Some("replica_shutting_down"),
            next = source.next() => match next {
                Next::Event(event, _) => {
                    if send_json(&mut outbound, event.as_ref()).await.is_err() {
                        return;
                    }
                }
                Next::Reconnect(reason) => break Some(reason),
                Next::Close => break None,
            },
            _ = ping.tick() => {
                // Two pings without a pong: the client is gone.
                if unanswered >= 2 || outbound.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return;
                }
                unanswered += 1;
            }
            incoming = inbound.next() => match incoming {
                Some(Ok(WsMessage::Pong(_))) => unanswered = 0,
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

async fn send_json(
    outbound: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    value: &impl Serialize,
) -> Result<(), axum::Error> {
    let text = serde_json::to_string(value).map_err(axum::Error::new)?;
    outbound.send(WsMessage::Text(text.into())).await
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
