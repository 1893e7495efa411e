//! `GET /chats/{id}/stream`: a chat's events over WebSocket (on upgrade) or
//! SSE (`Accept: text/event-stream`), resumable with a cursor (ARCHITECTURE.md §6).

use axum::{
    extract::{
        State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::HeaderMap,
    response::Response,
};
use chatd_shared::{
    api::ErrorResponse,
    ids::{ChatId, MessageId},
    stream::{Cursor, PartCursor, StreamEvent},
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::{ApiPath, ApiQuery},
    request::{ChatPath, NO_CHAT},
    transport::{EventSource, Next, respond, transport},
};
use crate::streams::ChatSubscriber;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_stream))
}

/// Query of a chat stream: where the client is (unknown parameters are
/// refused).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// Messages up to this id were received.
    #[schema(nullable = false)]
    after_message_id: Option<i64>,
    /// Parts up to `G.S` (generation, seq) were received.
    #[schema(nullable = false, pattern = r"^([+-]?[0-9]+\.\+?[0-9]+)?$")]
    after_part: Option<String>,
}

/// The `Last-Event-ID` header of an SSE reconnect.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct LastEventId {
    /// The `id` of the last event received (`N.G.S`): resume after it. It
    /// wins over the query.
    #[param(
        rename = "Last-Event-ID",
        pattern = r"^[+-]?[0-9]+(\.[+-]?[0-9]+\.\+?[0-9]+)?$"
    )]
    last_event_id: Option<String>,
}

/// The 400 of a stream.
const STREAM_REFUSED: &str = "Neither a WebSocket upgrade nor `Accept: text/event-stream` \
    (`stream_transport`), or a malformed id, cursor or query parameter (`invalid_path`, \
    `invalid_cursor`, `invalid_query`)";

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
    params(
        ChatPath,
        ("query" = inline(Option<StreamQuery>), Query, style = Form, explode),
        LastEventId,
    ),
    responses(
        (status = 101, description = "WebSocket of StreamEvent"),
        (status = 200, description = "SSE of StreamEvent", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, body = ErrorResponse, description = STREAM_REFUSED),
        (status = 404, body = ErrorResponse, description = NO_CHAT),
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
    if state.ops.chat(caller.access(), id).await?.is_none() {
        return Err(ApiError::not_found("chat"));
    }
    if state.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "this replica is shutting down; connect to another",
        ));
    }
    let subscriber = state.streams.open_chat(id, cursor).await?;
    Ok(respond(state, transport, subscriber))
}

impl EventSource for ChatSubscriber {
    type Event = StreamEvent;

    fn next(&mut self) -> impl std::future::Future<Output = Next<StreamEvent>> + Send {
        self.next_event()
    }

    fn ready(&mut self) -> Option<Box<StreamEvent>> {
        self.ready_event()
    }

    fn reconnect(&self, reason: &str) -> StreamEvent {
        StreamEvent::Reconnect {
            chat_id: Some(self.chat_id()),
            reason: reason.to_owned(),
        }
    }

    fn kind(event: &StreamEvent) -> &'static str {
        event.kind()
    }
}
