//! Bearer-token authentication (ARCHITECTURE.md §2, §9).
//!
//! A token is looked up by its SHA-256 once, then cached for a minute, so a
//! busy client costs no statement per request. Revoking a token (or changing
//! a user) publishes `TokensChanged`, which empties every replica's cache;
//! the minute bounds how long a missed notice can matter. `last_used_at` is
//! written at most once a minute per token, off the request path.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::Instrument;

use axum::{extract::FromRequestParts, http::request::Parts};
use chatd_shared::{
    auth_token,
    ids::{TokenId, UserId},
    pubsub::PubSub,
    status::UserRole,
};
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{AppState, error::ApiError};
use crate::operations::{Access, Accounts};

/// How long a looked-up token is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// `last_used_at` is written at most this often per token.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// Entries kept at most (a flood of distinct valid tokens cannot grow it without bound).
const CACHE_CAPACITY: usize = 100_000;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: UserId,
    /// Their role.
    pub role: UserRole,
    /// The token they used.
    pub token_id: TokenId,
}

impl Caller {
    /// True for admins.
    pub fn is_admin(&self) -> bool {
        self.role == UserRole::Admin
    }

    /// Admins only (403 otherwise).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs an admin token"))
        }
    }

    /// Whose chats the caller may see and change: their own, or (admins)
    /// everyone's. Others get the same 404 as for a chat that does not exist.
    pub fn access(&self) -> Access {
        Access {
            user_id: self.user_id,
            admin: self.is_admin(),
        }
    }
}

struct Cached {
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
    fetched: Instant,
    touched: Instant,
}

/// Tokens recently seen valid, by hash.
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, Cached>>,
    /// Where token touches run: the span current when the cache was made
    /// (the replica's), not the request's they outlive.
    span: tracing::Span,
}

impl TokenCache {
    /// An empty cache; its background work runs in the current span.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            span: tracing::Span::current(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Cached>> {
        chatd_shared::sync::lock(&self.entries)
    }

    /// Forgets everything (a token or user changed somewhere).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Empties the cache on every `chatd_control` notice and resync, until `stop`.
    pub async fn watch(self: Arc<Self>, pubsub: PubSub, stop: CancellationToken) {
        pubsub.on_control_change(stop, || self.clear()).await;
    }

    /// The caller for a bearer secret, or a 401 saying what is wrong.
    pub async fn authenticate(
        &self,
        secret: &str,
        accounts: &Accounts,
        tracker: &TaskTracker,
    ) -> Result<Caller, ApiError> {
        if !auth_token::looks_valid(secret) {
            return Err(ApiError::unauthorized(
                "malformed token: expected chatd_ followed by 32 letters and digits",
            ));
        }
        let hash = auth_token::hash(secret);
        let now = Instant::now();
        let touch = {
            let mut entries = self.lock();
            match entries.get_mut(&hash) {
                Some(entry) if now.duration_since(entry.fetched) < CACHE_TTL => {
                    if entry.expires_at.is_some_and(|at| at <= Utc::now()) {
                        entries.remove(&hash);
                        return Err(ApiError::unauthorized("the token has expired"));
                    }
                    let touch = now.duration_since(entry.touched) >= TOUCH_INTERVAL;
                    if touch {
                        entry.touched = now;
                    }
                    let caller = entry.caller;
                    drop(entries);
                    if touch {
                        self.touch_later(accounts, tracker, caller.token_id);
                    }
                    return Ok(caller);
                }
                _ => true,
            }
        };
        let Some((token, user)) = accounts.login(&hash).await? else {
            return Err(ApiError::unauthorized("unknown, revoked or expired token"));
        };
        let caller = Caller {
            user_id: user.id,
            role: user.role,
            token_id: token.id,
        };
        {
            let mut entries = self.lock();
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(
                hash,
                Cached {
                    caller,
                    expires_at: token.expires_at,
                    fetched: now,
                    touched: now,
                },
            );
        }
        if touch {
            self.touch_later(accounts, tracker, token.id);
        }
        Ok(caller)
    }

    /// Records a use of the token in the background.
    fn touch_later(&self, accounts: &Accounts, tracker: &TaskTracker, token_id: TokenId) {
        let accounts = accounts.clone();
        // In the replica's span, not the request's: it outlives the request.
        let replica = self.span.clone();
        tracker.spawn(
            async move {
                if let Err(err) = accounts.touch(token_id).await {
                    tracing::debug!(error = %chatd_shared::error_chain::Chain(&err), "recording token use failed");
                }
            }
            .instrument(replica),
        );
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(header) => bearer_secret(header)?,
            // Browsers cannot set headers on a WebSocket.
            None => websocket_protocol_secret(&parts.headers)
                .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?,
        };
        state
            .tokens
            .authenticate(secret.trim(), &state.accounts, &state.tracker)
            .await
    }
}

/// The secret of an `Authorization: Bearer <token>` header.
fn bearer_secret(header: &axum::http::HeaderValue) -> Result<&str, ApiError> {
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

/// The WebSocket subprotocol the server answers with when a client offers
/// it (a browser that offers subprotocols needs one chosen).
pub const WEBSOCKET_PROTOCOL: &str = "chatd";

/// Browsers cannot set `Authorization` on a WebSocket, so they offer the
/// token as a subprotocol `chatd.bearer.<token>` beside [`WEBSOCKET_PROTOCOL`].
const BEARER_PROTOCOL_PREFIX: &str = "chatd.bearer.";

/// The token offered in `Sec-WebSocket-Protocol`, if any.
fn websocket_protocol_secret(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(BEARER_PROTOCOL_PREFIX))
}
