//! The HTTP server: routes, the request flow shared by both wire formats, and
//! [`MockLlm`], the handle to a running server.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::anthropic::Anthropic;
use crate::behaviour::{Behaviour, InvalidBehaviour};
use crate::engine::Engine;
use crate::openai::OpenAi;
use crate::plan::{Failure, Malformed, Plan, Reply};
use crate::recording::{DEFAULT_RECORD_LIMIT, RecordedRequest, Recorder};
use crate::streaming::Schedule;
use crate::wire::{
    EVENT_STREAM, GARBAGE, HTML_PAGE, ResponseOptions, TRUNCATED_JSON, WireFormat, error_response,
};

/// Largest accepted request body (Anthropic's documented limit); bigger ones
/// get a 413 in the provider's error shape.
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port (see [`MockLlm::addr`]).
    pub addr: SocketAddr,
    /// How to answer.
    pub behaviour: Behaviour,
    /// How many recent requests to keep for [`MockLlm::requests`]; 0 records
    /// nothing (what a load test wants).
    pub record_limit: usize,
}

impl Default for ServerConfig {
    /// Loopback on a free port, default behaviour, the last 10,000 requests recorded.
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            behaviour: Behaviour::default(),
            record_limit: DEFAULT_RECORD_LIMIT,
        }
    }
}

/// Why a server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The behaviour is invalid.
    #[error(transparent)]
    InvalidBehaviour(#[from] InvalidBehaviour),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the mock LLM server failed")]
    Serve(#[source] io::Error),
    /// The server task panicked or was cancelled.
    #[error("the mock LLM server task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

/// A running mock LLM server.
///
/// Dropping it stops the server at once: it stops accepting and every
/// in-flight response is cut. [`MockLlm::shutdown`] is the graceful way.
#[derive(Debug)]
pub struct MockLlm {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    /// Stops accepting connections; in-flight responses finish.
    shutdown: CancellationToken,
    /// Cuts in-flight responses (on drop).
    stop: CancellationToken,
    /// The serve loop; `None` once awaited by `shutdown`.
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockLlm {
    /// Starts a server on `127.0.0.1` on a free port, recording requests.
    pub async fn start(behaviour: Behaviour) -> Result<Self, ServerError> {
        Self::start_with(ServerConfig {
            behaviour,
            ..ServerConfig::default()
        })
        .await
    }

    /// Starts a server as configured. Returns once it is listening, so a
    /// request sent right after is served.
    pub async fn start_with(config: ServerConfig) -> Result<Self, ServerError> {
        let engine = Arc::new(Engine::new(config.behaviour)?);
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })?;
        let recorder = Arc::new(Recorder::new(config.record_limit));
        let shutdown = CancellationToken::new();
        let stop = CancellationToken::new();
        let app = router(AppState {
            engine,
            recorder: Arc::clone(&recorder),
            stop: stop.clone(),
        });
        let task = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        );
        tracing::debug!(%addr, "mock LLM listening");
        Ok(Self {
            addr,
            recorder,
            shutdown,
            stop,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's root URL, `http://IP:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL for OpenAI clients (`…/v1`; they append `/chat/completions`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The base URL for Anthropic clients (no `/v1`; they append `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        self.url()
    }

    /// The recorded requests, oldest first; at most the configured limit
    /// (10,000 by default), older ones are forgotten.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorder.snapshot()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.recorder.clear();
    }

    /// Stops accepting connections, lets in-flight responses finish (at
    /// their configured pace) and waits until the server has stopped.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        task.await
            .map_err(ServerError::Task)?
            .map_err(ServerError::Serve)
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        // The serve task ends by itself once every connection is closed,
        // which the cut makes immediate.
        self.stop.cancel();
        self.shutdown.cancel();
    }
}

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    recorder: Arc<Recorder>,
    /// Cancelled when in-flight responses must end now.
    stop: CancellationToken,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(OpenAi::API.path(), post(complete::<OpenAi>))
        .route(Anthropic::API.path(), post(complete::<Anthropic>))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// One model call in wire format `W`: record, authenticate, parse, plan, answer.
async fn complete<W: WireFormat>(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let failure = Failure::new(rejection.status().as_u16(), rejection.body_text());
            return error_response::<W>(&failure);
        }
    };
    state.recorder.record(W::API, &headers, &body);

    if let Some(key) = &state.engine.behaviour().require_api_key
        && !W::authorized(&headers, key)
    {
        return error_response::<W>(&Failure::new(401, "mock: invalid API key"));
    }

    let request = match serde_json::from_slice::<W::Request>(&body) {
        Ok(request) => request,
        Err(error) => {
            let failure = Failure::new(400, format!("invalid request body: {error}"));
            return error_response::<W>(&failure);
        }
    };
    if let Err(message) = W::validate(&request) {
        return error_response::<W>(&Failure::new(400, message));
    }
    let options = W::options(&request);
    let conversation = W::conversation(request);
    match state.engine.plan(&conversation, W::API) {
        Plan::Fail(failure) => error_response::<W>(&failure),
        Plan::Malformed(kind) => malformed::<W>(kind, &options),
        Plan::Reply(reply) if options.stream => streamed::<W>(&reply, &options, state.stop),
        Plan::Reply(reply) => whole::<W>(&reply, &options, state.stop).await,
    }
}

fn streamed<W: WireFormat>(
    reply: &Reply,
    options: &ResponseOptions,
    stop: CancellationToken,
) -> Response {
    let schedule = Schedule::streamed(
        W::stream(reply, options),
        reply.ttft,
        reply.token_delay,
        reply.cut_after,
    );
    event_stream(schedule.into_body(stop))
}

/// A non-streamed reply arrives after the time the stream would have taken.
async fn whole<W: WireFormat>(
    reply: &Reply,
    options: &ResponseOptions,
    stop: CancellationToken,
) -> Response {
    let pauses = u32::try_from(reply.events.len().saturating_sub(1)).unwrap_or(u32::MAX);
    let delay = reply
        .ttft
        .saturating_add(reply.token_delay.saturating_mul(pauses));
    if !delay.is_zero() {
        tokio::select! {
            () = stop.cancelled() => {
                return error_response::<W>(&Failure::new(503, "mock: server stopped"));
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
    let body = Bytes::from(W::message(reply, options).to_string());
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    if reply.cut_after.is_some() {
        let truncated = Schedule::truncated(body).into_body(stop);
        return (content_type, truncated).into_response();
    }
    (content_type, body).into_response()
}

fn malformed<W: WireFormat>(kind: Malformed, options: &ResponseOptions) -> Response {
    let (content_type, body): (&'static str, Bytes) = match (kind, options.stream) {
        (Malformed::ContentType, _) => (
            "text/html; charset=utf-8",
            Bytes::from_static(HTML_PAGE.as_bytes()),
        ),
        (Malformed::Json, true) => (EVENT_STREAM, W::broken_json_stream(options)),
        (Malformed::Json, false) => (
            "application/json",
            Bytes::from_static(TRUNCATED_JSON.as_bytes()),
        ),
        (Malformed::Sse, true) => (EVENT_STREAM, Bytes::from_static(GARBAGE)),
        (Malformed::Sse, false) => ("application/json", Bytes::from_static(GARBAGE)),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn event_stream(body: axum::body::Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, EVENT_STREAM),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
