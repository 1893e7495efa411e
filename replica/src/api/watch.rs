//! `GET /chats/watch`: the caller's chat list as it changes (created,
//! status, title, archived, deleted), over WebSocket or SSE.

use axum::{
    extract::{
        State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::HeaderMap,
    response::Response,
};
use chatd_shared::api::{ErrorResponse, WatchEvent};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    transport::{EventSource, Next, respond, transport},
};
use crate::streams::ChatListWatcher;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(watch_chats))
}

/// Live changes to the caller's chats (list them first with `GET /chats`).
#[utoipa::path(
    get, path = "/chats/watch", tag = "streams",
    responses(
        (status = 101, description = "WebSocket of WatchEvent"),
        (status = 200, description = "SSE of WatchEvent", content_type = "text/event-stream", body = WatchEvent),
        (status = 400, body = ErrorResponse, description = "Neither a WebSocket upgrade nor \
            `Accept: text/event-stream` (`stream_transport`)"),
    )
)]
async fn watch_chats(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let transport = transport(upgrade, &headers)?;
    if state.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "this replica is shutting down; connect to another",
        ));
    }
    let watcher = state.streams.watch_chats(caller.user_id);
    Ok(respond(state, transport, watcher))
}

impl EventSource for ChatListWatcher {
    type Event = WatchEvent;

    fn next(&mut self) -> impl std::future::Future<Output = Next<WatchEvent>> + Send {
        self.next_event()
    }

    fn reconnect(&self, reason: &str) -> WatchEvent {
        WatchEvent::Reconnect {
            reason: reason.to_owned(),
        }
    }

    fn kind(event: &WatchEvent) -> &'static str {
        match event {
            WatchEvent::Chat { .. } => "chat",
            WatchEvent::Deleted { .. } => "deleted",
            WatchEvent::Refresh => "refresh",
            WatchEvent::Reconnect { .. } => "reconnect",
        }
    }
}
