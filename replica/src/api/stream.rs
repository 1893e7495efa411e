//! `GET /chats/{id}/stream`: a chat's events over WebSocket (on upgrade) or
//! SSE (`Accept: text/event-stream`), resumable with a cursor (DESIGN §6).

use std::convert::Infallible;

use axum::{
    extract::{
        State,
        ws::{
            Message as WsMessage, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
        },
    },
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use chatd_shared::{
    ids::{ChatId, MessageId},
    stream::{Cursor, PartCursor, StreamEvent},
};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    chats::visible_chat,
    error::{ApiError, ApiResult},
    extract::{ApiPath, ApiQuery},
    subscriber::{ChatSubscriber, Next},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_stream))
}

/// Query of a chat stream: where the client is.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// Messages up to this id were received.
    after_message_id: Option<i64>,
    /// Parts up to `G.S` (generation, seq) were received.
    after_part: Option<String>,
}

/// How the client wants the stream.
pub(super) enum Transport {
    WebSocket(WebSocketUpgrade),
    Sse,
}

/// WebSocket when the request upgrades, SSE when it accepts
/// `text/event-stream`, else 400.
pub(super) fn transport(
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

fn cursor(query: &StreamQuery, headers: &HeaderMap) -> ApiResult<Cursor> {
    // SSE reconnects send the last event id; it wins over the query.
    if let Some(id) = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
    {
        return Cursor::from_event_id(id)
            .map_err(|err| ApiError::bad_request("invalid_cursor", err.to_string()));
    }
    let after_part = match query.after_part.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<PartCursor>()
                .map_err(|err| ApiError::bad_request("invalid_cursor", err.to_string()))?,
        ),
    };
    Ok(Cursor {
        after_message_id: query.after_message_id.filter(|id| *id > 0).map(MessageId),
        after_part,
    })
}

/// A chat's events: a snapshot (status, messages after the cursor, queue,
/// parts of the step in progress), then live events. WebSocket: one JSON
/// event per text frame. SSE: `event: <type>`, `id: <cursor>`, `data: <json>`.
#[utoipa::path(
    get, path = "/chats/{id}/stream", tag = "streams",
    params(("id" = ChatId, Path), StreamQuery, ("Last-Event-ID" = Option<String>, Header, description = "SSE resume cursor N.G.S")),
    responses(
        (status = 101, description = "WebSocket of StreamEvent"),
        (status = 200, description = "SSE of StreamEvent", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, body = chatd_shared::api::ErrorResponse),
        (status = 404, body = chatd_shared::api::ErrorResponse),
    )
)]
async fn chat_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let transport = transport(upgrade, &headers)?;
    let cursor = cursor(&query, &headers)?;
    visible_chat(&state, &caller, id).await?;
    if state.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "this replica is shutting down; connect to another",
        ));
    }
    let subscriber = ChatSubscriber::open(&state, id, cursor).await?;
    Ok(match transport {
        Transport::WebSocket(upgrade) => {
            upgrade.on_upgrade(move |socket| serve_websocket(state, id, subscriber, socket))
        }
        Transport::Sse => serve_sse(state, id, subscriber).into_response(),
    })
}

fn reconnect(chat_id: ChatId, reason: &str) -> StreamEvent {
    StreamEvent::Reconnect {
        chat_id: Some(chat_id),
        reason: reason.to_owned(),
    }
}

/// Frames out, pings and pongs, until the subscriber ends, the client
/// leaves, the client stops answering pings, or the replica shuts down.
async fn serve_websocket(
    state: AppState,
    chat_id: ChatId,
    mut subscriber: ChatSubscriber,
    socket: WebSocket,
) {
    let _gauge = state.streams.open("websocket");
    let (mut outbound, mut inbound) = socket.split();
    let mut ping = tokio::time::interval(state.config.keepalive);
    ping.reset();
    let mut unanswered = 0u32;
    loop {
        let event = tokio::select! {
            _ = state.shutdown.cancelled() => Some(reconnect(chat_id, "replica_shutting_down")),
            next = subscriber.next() => match next {
                Next::Event(event, _) => {
                    if send_json(&mut outbound, &event).await.is_err() {
                        return;
                    }
                    continue;
                }
                Next::Reconnect(reason) => Some(reconnect(chat_id, reason)),
                Next::Close => None,
            },
            _ = ping.tick() => {
                // Two pings without a pong: the client is gone.
                if unanswered >= 2 || outbound.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return;
                }
                unanswered += 1;
                continue;
            }
            incoming = inbound.next() => match incoming {
                Some(Ok(WsMessage::Pong(_))) => {
                    unanswered = 0;
                    continue;
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        if let Some(event) = event {
            if matches!(event, StreamEvent::Reconnect { .. }) {
                state.streams.reconnect_sent(&event);
            }
            let _ = send_json(&mut outbound, &event).await;
        }
        let _ = outbound.send(WsMessage::Close(None)).await;
        return;
    }
}

async fn send_json(
    outbound: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    value: &impl serde::Serialize,
) -> Result<(), axum::Error> {
    let text = serde_json::to_string(value).map_err(axum::Error::new)?;
    outbound.send(WsMessage::Text(text.into())).await
}

/// The SSE body: pulled as the client reads, so a slow reader leaves events
/// in its hub queue until that overflows into `reconnect`.
fn serve_sse(
    state: AppState,
    chat_id: ChatId,
    subscriber: ChatSubscriber,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let keepalive = state.config.keepalive;
    let gauge = state.streams.open("sse");
    let events = futures::stream::unfold(
        Some((state, subscriber, gauge)),
        move |open| async move {
            let (state, mut subscriber, gauge) = open?;
            let (event, cursor, last) = tokio::select! {
                _ = state.shutdown.cancelled() => (reconnect(chat_id, "replica_shutting_down"), None, true),
                next = subscriber.next() => match next {
                    Next::Event(event, cursor) => (*event, Some(cursor), false),
                    Next::Reconnect(reason) => (reconnect(chat_id, reason), None, true),
                    Next::Close => return None,
                },
            };
            if last {
                state.streams.reconnect_sent(&event);
            }
            let sse = sse_event(&event, cursor);
            let rest = (!last).then_some((state, subscriber, gauge));
            Some((Ok(sse), rest))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive"))
}

fn sse_event(event: &StreamEvent, cursor: Option<Cursor>) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    let sse = SseEvent::default().event(event.kind()).data(data);
    match cursor {
        Some(cursor) => sse.id(cursor.to_event_id()),
        None => sse,
    }
}
