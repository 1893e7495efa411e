//! A fake chatd for the client's tests: canned replies by method and path,
//! and a record of every request it got, so a test asserts both what the
//! client sent and what it made of the answer.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{
        Request, State,
        ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, Method, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use chatd_shared::{
    api::{Chat, Message, ModelConfig, Provider, QueuedMessage, Token, TokenCreated, User},
    client::Client,
    ids::{
        ChatId, Generation, MessageId, ModelConfigId, ProviderId, QueuedMessageId, TokenId, UserId,
    },
    parts::{Part, Usage},
    status::{ChatStatus, MessageRole, ProviderKind, UserRole},
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::{sync::Notify, task::JoinHandle};

/// The token every test client sends.
pub const TOKEN: &str = "chatd_test_token";
/// The `Authorization` header a client with [`TOKEN`] sends.
pub const BEARER: &str = "Bearer chatd_test_token";
/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// What the server answers on one route.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body.
    Json(StatusCode, Value),
    /// A text body (not JSON).
    Text(StatusCode, &'static str),
    /// No body.
    Empty(StatusCode),
    /// A `text/event-stream` body, sent whole; the stream ends with it.
    Sse(String),
    /// A `text/event-stream` body, then, once the test notifies, the
    /// response breaks off.
    SseCut(String, Arc<Notify>),
    /// A WebSocket upgrade, then these steps.
    WebSocket(Vec<WsStep>),
    /// Never an answer.
    Hang,
}

/// One step of a scripted WebSocket.
#[derive(Debug, Clone)]
pub enum WsStep {
    /// Send a text frame.
    Text(String),
    /// Send a binary frame.
    Binary(&'static [u8]),
    /// Ping, and go on only once the matching pong arrived.
    PingForPong(&'static [u8]),
    /// Send a close frame (the server then waits for the client's reply).
    Close(u16, &'static str),
    /// Drop the connection without a close frame.
    Drop,
}

/// A request the server got.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its method.
    pub method: Method,
    /// Its path (with `/api/v1`).
    pub path: String,
    /// Its query string, if any.
    pub query: Option<String>,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("header is text"))
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A running fake server; it stops when dropped.
pub struct FakeServer {
    base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    replies: Mutex<HashMap<(Method, String), Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

impl FakeServer {
    /// A server on a free loopback port, with no routes yet (every request
    /// gets a 404 `no_route` error body).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake server runs");
        });
        Self {
            base_url: format!("http://{address}"),
            shared,
            task,
        }
    }

    /// The base URL, as given to `Client::new`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A client of this server with [`TOKEN`].
    pub fn client(&self) -> Client {
        Client::new(&self.base_url, TOKEN).expect("client")
    }

    /// Answers `method path` (a full path: `/api/v1/chats`) with `reply`.
    pub fn reply(&self, method: Method, path: &str, reply: Reply) {
        lock(&self.shared.replies).insert((method, path.to_owned()), reply);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// The one request so far.
    pub fn only_request(&self) -> Recorded {
        let mut requests = self.requests();
        assert_eq!(requests.len(), 1, "expected one request: {requests:#?}");
        requests.remove(0)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records the request, then answers with the route's reply.
async fn handle(
    State(shared): State<Arc<Shared>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("read request body");
    let key = (parts.method.clone(), parts.uri.path().to_owned());
    lock(&shared.requests).push(Recorded {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    });
    let reply = lock(&shared.replies).get(&key).cloned();
    match reply {
        None => error_reply(StatusCode::NOT_FOUND, "no_route"),
        Some(Reply::Json(status, body)) => (status, Json(body)).into_response(),
        Some(Reply::Text(status, body)) => (status, body).into_response(),
        Some(Reply::Empty(status)) => status.into_response(),
        Some(Reply::Sse(body)) => ([(CONTENT_TYPE, "text/event-stream")], body).into_response(),
        Some(Reply::SseCut(body, cut)) => {
            let cut = futures::stream::once(async move {
                cut.notified().await;
                Err(std::io::Error::other("connection cut"))
            });
            let body = futures::stream::iter([Ok(Bytes::from(body))]).chain(cut);
            (
                [(CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(body),
            )
                .into_response()
        }
        Some(Reply::WebSocket(steps)) => match upgrade {
            Ok(upgrade) => upgrade.on_upgrade(|socket| play(socket, steps)),
            Err(rejection) => rejection.into_response(),
        },
        Some(Reply::Hang) => std::future::pending().await,
    }
}

/// Plays a WebSocket script, then reads until the client is gone (so a
/// close handshake completes).
async fn play(mut socket: WebSocket, steps: Vec<WsStep>) {
    for step in steps {
        let sent = match step {
            WsStep::Text(text) => socket.send(WsMessage::Text(text.into())).await,
            WsStep::Binary(bytes) => socket.send(WsMessage::Binary(bytes.into())).await,
            WsStep::PingForPong(payload) => {
                if socket.send(WsMessage::Ping(payload.into())).await.is_err() {
                    return;
                }
                loop {
                    match socket.recv().await {
                        Some(Ok(WsMessage::Pong(pong))) if pong == payload => break Ok(()),
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            }
            WsStep::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                socket.send(WsMessage::Close(Some(frame))).await
            }
            WsStep::Drop => return,
        };
        if sent.is_err() {
            return;
        }
    }
    while let Some(Ok(_)) = socket.recv().await {}
}

/// chatd's error body.
pub fn error_reply(status: StatusCode, code: &str) -> Response {
    (status, Json(error_body(code))).into_response()
}

/// chatd's error body as JSON.
pub fn error_body(code: &str) -> Value {
    json!({"error": {"code": code, "message": format!("{code} happened"), "details": {"field": "x"}}})
}

/// Serialises a canned value.
pub fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("serialise")
}

/// An SSE event: `event`, `data` (the event's JSON) and an optional `id`.
pub fn sse_event(value: &Value, id: Option<&str>) -> String {
    let kind = value["type"].as_str().expect("events have a type");
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    format!("event: {kind}\ndata: {value}\n{id}\n")
}

fn epoch() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// A canned chat.
pub fn chat(id: ChatId) -> Chat {
    Chat {
        id,
        owner_id: UserId::new_random(),
        title: "canned".to_owned(),
        status: ChatStatus::Waiting,
        generation: Generation(1),
        model_config_id: None,
        archived: false,
        labels: json!({}),
        last_error: None,
        parent_chat_id: None,
        queued_count: 0,
        created_at: epoch(),
        updated_at: epoch(),
        root_chat_id: None,
        mcp_servers: Vec::new(),
        client_tools: Vec::new(),
    }
}

/// A canned assistant message.
pub fn message(chat_id: ChatId, id: i64) -> Message {
    Message {
        id: MessageId(id),
        chat_id,
        role: MessageRole::Assistant,
        content: vec![Part::text("hello")],
        created_by: None,
        generation: Some(Generation(1)),
        step: Some(0),
        usage: Usage::default(),
        cost_micros: None,
        created_at: epoch(),
    }
}

/// A canned queued message.
pub fn queued(id: i64) -> QueuedMessage {
    QueuedMessage {
        id: QueuedMessageId(id),
        content: vec![Part::text("later")],
        created_by: None,
        created_at: epoch(),
    }
}

/// A canned user.
pub fn user(id: UserId) -> User {
    User {
        id,
        username: "alice".to_owned(),
        role: UserRole::Member,
        created_at: epoch(),
    }
}

/// A canned token row.
pub fn token(user_id: UserId, id: TokenId) -> Token {
    Token {
        id,
        user_id,
        name: "ci".to_owned(),
        prefix: "chatd_ab".to_owned(),
        created_at: epoch(),
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
    }
}

/// A canned new token.
pub fn token_created(user_id: UserId, id: TokenId) -> TokenCreated {
    TokenCreated {
        token: "chatd_secret".to_owned(),
        details: token(user_id, id),
    }
}

/// A canned provider.
pub fn provider(id: ProviderId) -> Provider {
    Provider {
        id,
        name: "mock".to_owned(),
        kind: ProviderKind::Openai,
        base_url: "http://127.0.0.1:1/v1".to_owned(),
        has_api_key: false,
        api_key_env: None,
        enabled: true,
        created_at: epoch(),
        updated_at: epoch(),
    }
}

/// A canned model config.
pub fn model_config(id: ModelConfigId, provider_id: ProviderId) -> ModelConfig {
    ModelConfig {
        id,
        provider_id,
        model: "mock-model".to_owned(),
        display_name: "Mock".to_owned(),
        enabled: true,
        is_default: true,
        use_for_titles: false,
        context_limit: 8192,
        compaction_threshold_pct: 70,
        max_output_tokens: 1024,
        price_input_micros_per_mtok: None,
        price_output_micros_per_mtok: None,
        price_cache_read_micros_per_mtok: None,
        price_cache_write_micros_per_mtok: None,
        options: json!({}),
        created_at: epoch(),
        updated_at: epoch(),
    }
}
