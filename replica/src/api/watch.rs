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
use chatd_shared::{
    api::{self, WatchEvent, WatchKind},
    db::{DbError, chats},
    pubsub::{Delivery, OwnerEventKind, OwnerNotice, Subscription},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    transport::{EventSource, Next, respond, transport},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(watch_chats))
}

/// Live changes to the caller's chats (list them first with `GET /chats`).
#[utoipa::path(
    get, path = "/chats/watch", tag = "streams",
    responses(
        (status = 101, description = "WebSocket of WatchEvent"),
        (status = 200, description = "SSE of WatchEvent", content_type = "text/event-stream", body = WatchEvent),
        (status = 400, body = chatd_shared::api::ErrorResponse),
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
    let source = Watcher {
        notices: state.pubsub.subscribe_owner(caller.user_id),
        state: state.clone(),
    };
    Ok(respond(state, transport, source))
}

/// One watcher: the owner's notices, each turned into the chat as it is now.
struct Watcher {
    state: AppState,
    notices: Subscription<OwnerNotice>,
}

impl Watcher {
    async fn event(&self, notice: OwnerNotice) -> Result<Option<WatchEvent>, DbError> {
        let kind = match notice.kind {
            OwnerEventKind::Deleted => {
                return Ok(Some(WatchEvent::Deleted {
                    chat_id: notice.chat_id,
                }));
            }
            OwnerEventKind::Created => WatchKind::Created,
            OwnerEventKind::Status => WatchKind::Status,
            OwnerEventKind::Title => WatchKind::Title,
            OwnerEventKind::Archived => WatchKind::Archived,
        };
        let client = self.state.pool.get().await?;
        // Gone since the notice: its deletion notice follows.
        Ok(chats::get_with_queue(&client, notice.chat_id)
            .await?
            .map(|(chat, queued)| WatchEvent::Chat {
                kind,
                chat: api::Chat::from_row(&chat, queued),
            }))
    }

    async fn next_event(&mut self) -> Next<WatchEvent> {
        loop {
            match self.notices.recv().await {
                Some(Delivery::Notice(notice)) => match self.event(notice).await {
                    Ok(Some(event)) => return Next::Event(Box::new(event), None),
                    Ok(None) => {}
                    Err(_) => return Next::Event(Box::new(WatchEvent::Refresh), None),
                },
                // Lost notices (reconnect, or this watcher fell behind):
                // the client re-reads the list.
                Some(Delivery::Resync) => return Next::Event(Box::new(WatchEvent::Refresh), None),
                None => return Next::Reconnect("replica_shutting_down"),
            }
        }
    }
}

impl EventSource for Watcher {
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
