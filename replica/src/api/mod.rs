//! The public API (ARCHITECTURE.md §9): routes under `/api/v1` with bearer-token
//! auth, streams over WebSocket and SSE, and the operations endpoints.
//!
//! One module per resource. Every handler returns [`ApiResult`]; every
//! failure becomes the JSON error body in [`error`]. The OpenAPI document is
//! generated from the handlers' annotations (`/api/v1/openapi.json`).

mod admin;
pub mod auth;
mod chats;
pub mod error;
mod extract;
mod files;
mod messages;
mod metrics;
mod models;
mod openapi;
mod ops;
mod prompts;
mod queue;
mod request;
mod spend;
mod stream;
mod tools;
pub mod trace;
mod transport;
mod usage;
mod users;
mod watch;
mod webhooks;

use std::{ops::Deref, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use chatd_shared::{db::Pool, ids::ReplicaId, pubsub::PubSub};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use self::error::{ApiError, ApiResult};
use self::{
    auth::TokenCache,
    metrics::{HttpMetrics, StreamMetrics},
};
use crate::{
    files::Files,
    operations::{Accounts, Catalog, ChatOps, Diagnosis, McpServers, Settings},
    streams::Streams,
    telemetry::Telemetry,
    tools::mcp::McpTools,
    webhooks::Webhooks,
};

/// Limits and intervals of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body (413 past it).
    pub body_limit: usize,
    /// Longest a plain request may take (streams are exempt).
    pub request_timeout: Duration,
    /// Keep-alive interval of streams (WebSocket ping, SSE comment).
    pub keepalive: Duration,
    /// Events queued per stream subscriber before it is cut off as slow.
    pub subscriber_queue: usize,
    /// Largest file upload (`CHATD_MAX_FILE_SIZE`, 413 past it).
    pub max_file_size: usize,
    /// Longest a file upload may take (uploads are exempt from
    /// `request_timeout`: a 25 MiB body takes a while on a slow link).
    pub upload_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            subscriber_queue: 1024,
            max_file_size: crate::files::DEFAULT_MAX_SIZE,
            upload_timeout: Duration::from_secs(300),
        }
    }
}

/// Whether the replica should get traffic (`/readyz`).
pub type ReadinessProbe = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// The parts of readiness, for a precise `/readyz` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Registered and holding a lease (so the database answers).
    pub database: bool,
    /// The LISTEN connection is up.
    pub listener: bool,
    /// Shutting down.
    pub draining: bool,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// The contents of [`AppState`].
pub struct AppInner {
    /// Chat transitions: what chat handlers call.
    pub ops: ChatOps,
    /// Providers and model configs: what admin and model handlers call.
    pub catalog: Catalog,
    /// Users and tokens: what admin and user handlers, and authentication, call.
    pub accounts: Accounts,
    /// System prompts, spend limits, usage: what their handlers call.
    pub settings: Settings,
    /// MCP servers: what `/admin/mcp-servers` calls.
    pub mcp_servers: McpServers,
    /// This replica's MCP clients: what listing a server's tools asks.
    pub mcp: Arc<McpTools>,
    /// The operators' reads: what the diagnosis handlers call.
    pub diagnosis: Diagnosis,
    /// Chat and chat-list streams.
    pub streams: Arc<Streams>,
    /// Recently seen tokens.
    pub tokens: Arc<TokenCache>,
    /// `/readyz`.
    pub readiness: ReadinessProbe,
    /// Limits.
    pub config: ApiConfig,
    /// Fires when the replica shuts down: streams send `reconnect` and end.
    pub shutdown: CancellationToken,
    /// Background work started by requests (token touches, streams).
    pub tracker: TaskTracker,
    /// `/metrics`.
    pub telemetry: Telemetry,
    /// Attachments: what file handlers call.
    pub files: Files,
    /// Turn-end webhooks: what webhook handlers call.
    pub webhooks: Webhooks,
    /// The replica (named on every request's span).
    pub replica_id: ReplicaId,
    metrics: HttpMetrics,
    stream_metrics: StreamMetrics,
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// What the API is built from.
pub struct ApiParts {
    /// The replica (named on every request's span).
    pub replica_id: ReplicaId,
    /// The replica's pool (for the admin operations).
    pub pool: Pool,
    /// The replica's pubsub (the admin operations announce through it).
    pub pubsub: PubSub,
    /// Chat transitions.
    pub ops: ChatOps,
    /// The replica's MCP clients.
    pub mcp: Arc<McpTools>,
    /// The replica's streams.
    pub streams: Arc<Streams>,
    /// `/readyz`.
    pub readiness: ReadinessProbe,
    /// Fires when the replica shuts down: streams send `reconnect` and end.
    pub shutdown: CancellationToken,
    /// Where background work started by requests runs.
    pub tracker: TaskTracker,
    /// `/metrics`.
    pub telemetry: Telemetry,
    /// Attachments.
    pub files: Files,
    /// Turn-end webhooks.
    pub webhooks: Webhooks,
}

impl AppState {
    /// The state of one replica's API. Make it in the replica's span: the
    /// work requests leave behind runs in it.
    pub fn new(parts: ApiParts, config: ApiConfig) -> Self {
        let meter = parts.telemetry.meter();
        Self(Arc::new(AppInner {
            metrics: HttpMetrics::new(&meter),
            stream_metrics: StreamMetrics::new(&meter),
            settings: Settings::new(
                parts.pool.clone(),
                parts.pubsub.clone(),
                parts.ops.settings().clone(),
            ),
            catalog: Catalog::new(parts.pool.clone(), parts.pubsub.clone()),
            mcp_servers: McpServers::new(parts.pool.clone(), parts.pubsub.clone()),
            diagnosis: Diagnosis::new(parts.pool.clone()),
            accounts: Accounts::new(parts.pool, parts.pubsub),
            ops: parts.ops,
            mcp: parts.mcp,
            streams: parts.streams,
            tokens: TokenCache::new(),
            readiness: parts.readiness,
            config,
            shutdown: parts.shutdown,
            tracker: parts.tracker,
            telemetry: parts.telemetry,
            files: parts.files,
            webhooks: parts.webhooks,
            replica_id: parts.replica_id,
        }))
    }
}

/// Every `/api/v1` route, with its OpenAPI description.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(chats::routes())
        .merge(messages::routes())
        .merge(queue::routes())
        .merge(tools::routes())
        .merge(users::routes())
        .merge(models::routes())
        .merge(admin::routes())
        .merge(prompts::routes())
        .merge(spend::routes())
        .merge(usage::routes())
        .merge(files::routes())
        .merge(webhooks::routes())
}

/// Stream routes: no request timeout (they live long).
fn stream_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(stream::routes())
        .merge(watch::routes())
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::complete(all_routes().into_openapi())
}

fn all_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::<AppState>::new()
        .nest("/api/v1", api_routes())
        .nest("/api/v1", stream_routes())
        .nest("/api/v1", files::upload_routes())
}

/// The API's router with its state and layers.
pub fn router(state: AppState) -> Router {
    let document = Arc::new(openapi());
    let (plain, _) = OpenApiRouter::<AppState>::new()
        .nest("/api/v1", api_routes())
        .split_for_parts();
    let (streams, _) = OpenApiRouter::<AppState>::new()
        .nest("/api/v1", stream_routes())
        .split_for_parts();
    let (uploads, _) = OpenApiRouter::<AppState>::new()
        .nest("/api/v1", files::upload_routes())
        .split_for_parts();
    let uploads = uploads.layer(middleware::from_fn_with_state(
        state.clone(),
        upload_timeout,
    ));
    let plain = plain
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .merge(streams)
        .merge(uploads)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .layer(crate::web::cors());
    plain
        .merge(ops::routes())
        .merge(crate::web::routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(trace::layer(state.replica_id))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}

/// Bounds how long an upload may take, reading its body included.
async fn upload_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.upload_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the upload took too long").into_response(),
    }
}

/// Bounds how long a plain request may take (streams are upgraded or
/// streamed before this returns, so only their setup is bounded).
async fn request_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the request took too long").into_response(),
    }
}
