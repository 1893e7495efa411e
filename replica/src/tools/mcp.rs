//! MCP servers' tools (ARCHITECTURE.md §17), through the official Rust SDK (`rmcp`)
//! over the streamable HTTP transport.
//!
//! Each replica keeps, per server, one client session and the server's tool
//! list, made on first use and dropped when a `chatd_control` notice (or a
//! resync) says servers changed, and when a call to that server fails at
//! the transport (the next use reconnects and lists again). A server that
//! cannot be reached is left out of the tools offered for a short while and
//! counted; a call to it becomes an error result, never a stuck turn: every
//! connection, listing and call has a timeout.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chatd_shared::{
    db::{
        DbError, Pool,
        mcp_servers::{self, McpServer},
    },
    error_chain::Chain,
    ids::McpServerId,
    pubsub::PubSub,
    sync::lock,
    tools::{MCP_SEPARATOR, is_tool_name},
};
use opentelemetry::{KeyValue, metrics::Counter};
use rmcp::{
    RoleClient, ServiceError, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ContentBlock},
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, common::client_side_sse::FixedInterval,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::llm::ToolSpec;

/// How often a broken event stream of a call is resumed before the call
/// fails, and how long apart.
const RESUME_ATTEMPTS: usize = 3;
const RESUME_INTERVAL: Duration = Duration::from_millis(200);

/// Time limits of MCP traffic.
#[derive(Debug, Clone, Copy)]
pub struct McpConfig {
    /// Connecting (the initialize handshake) and listing tools.
    pub connect_timeout: Duration,
    /// One tool call.
    pub call_timeout: Duration,
    /// How long a server that could not be reached is left out of the
    /// tools offered before it is tried again.
    pub retry_after: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
            retry_after: Duration::from_secs(10),
        }
    }
}

/// One tool of an MCP server, as a chat may be offered it.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// The server's name.
    pub server: String,
    /// The tool's name on the server.
    pub tool: String,
    /// What the model sees: `server__tool`, the description, the schema.
    pub spec: ToolSpec,
    /// Whether the admin marked it safe to run twice.
    pub idempotent: bool,
}

type Session = RunningService<RoleClient, ()>;

/// A server's row and the tools it offers, or why it could not be asked.
pub type ServerTools = (McpServer, Result<Vec<McpTool>, McpError>);

/// Every replica's MCP clients and cached tool lists.
pub struct McpTools {
    pool: Pool,
    http: reqwest::Client,
    config: McpConfig,
    state: Mutex<State>,
    /// Held while connecting, so the runs that miss together connect once.
    connecting: tokio::sync::Mutex<()>,
    metrics: McpMetrics,
}

#[derive(Default)]
struct State {
    /// Every server's row (`None`: not loaded since the last invalidation).
    servers: Option<Arc<HashMap<String, McpServer>>>,
    /// Per server: its session and tool list.
    connected: HashMap<String, Arc<Connected>>,
    /// Servers that could not be reached, and when.
    unreachable: HashMap<String, Instant>,
    /// Bumped on every invalidation, so a connection made across one is not kept.
    epoch: u64,
}

struct Connected {
    session: Session,
    tools: Vec<McpTool>,
}

#[derive(Clone)]
struct McpMetrics {
    calls: Counter<u64>,
    unavailable: Counter<u64>,
}

/// Why a server's tools cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// No such server, or it is disabled.
    #[error("MCP server {0:?} does not exist or is disabled")]
    NoServer(String),
    /// It was unreachable a moment ago.
    #[error("MCP server {0:?} is unavailable (it failed moments ago)")]
    RecentlyUnavailable(String),
    /// Connecting or listing failed.
    #[error("MCP server {server:?} is unavailable: {reason}")]
    Unavailable {
        /// The server.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl McpTools {
    /// No connections yet.
    pub fn new(pool: Pool, config: McpConfig, meter: &opentelemetry::metrics::Meter) -> Arc<Self> {
        Arc::new(Self {
            pool,
            http: reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .build()
                .unwrap_or_default(),
            config,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
            metrics: McpMetrics {
                calls: meter
                    .u64_counter("chatd_mcp_tool_calls")
                    .with_description("MCP tool calls, by server and outcome (ok, tool_error, unavailable, timeout)")
                    .build(),
                unavailable: meter
                    .u64_counter("chatd_mcp_server_unavailable")
                    .with_description("Times an MCP server could not be reached (connect, list or call failed at the transport)")
                    .build(),
            },
        })
    }

    /// Forgets every row, session and tool list (servers changed).
    pub fn invalidate(&self) {
        let mut state = lock(&self.state);
        state.servers = None;
        state.connected.clear();
        state.unreachable.clear();
        state.epoch += 1;
    }

    /// Drops everything cached on every control notice and resync, until `stop`.
    pub async fn watch(self: Arc<Self>, pubsub: PubSub, stop: CancellationToken) {
        pubsub.on_control_change(stop, || self.invalidate()).await;
    }

    async fn servers(&self) -> Result<Arc<HashMap<String, McpServer>>, DbError> {
        if let Some(servers) = lock(&self.state).servers.clone() {
            return Ok(servers);
        }
        let epoch = lock(&self.state).epoch;
        let rows = {
            let client = self.pool.get().await?;
            mcp_servers::list(&client).await?
        };
        let servers: Arc<HashMap<String, McpServer>> = Arc::new(
            rows.into_iter()
                .map(|row| (row.name.clone(), row))
                .collect(),
        );
        let mut state = lock(&self.state);
        if state.epoch == epoch {
            state.servers = Some(servers.clone());
        }
        Ok(servers)
    }

    /// The tools of the servers `names` a chat opted into. A server that
    /// cannot be reached offers none (logged and counted).
    pub async fn offered(&self, names: &[String]) -> Vec<McpTool> {
        let mut tools = Vec::new();
        for name in names {
            match self.connected(name).await {
                Ok(connected) => tools.extend(connected.tools.iter().cloned()),
                Err(McpError::RecentlyUnavailable(_)) => {}
                Err(err) => {
                    tracing::warn!(server = %name, error = %Chain(&err), "MCP server's tools are not offered")
                }
            }
        }
        tools
    }

    /// The server's session and tools, connecting when there is none.
    async fn connected(&self, name: &str) -> Result<Arc<Connected>, McpError> {
        if let Some(connected) = self.cached(name)? {
            return Ok(connected);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connected) = self.cached(name)? {
            return Ok(connected);
        }
        let servers = self.servers().await?;
        let Some(server) = servers.get(name).filter(|server| server.enabled) else {
            return Err(McpError::NoServer(name.to_owned()));
        };
        let epoch = lock(&self.state).epoch;
        let connected =
            match tokio::time::timeout(self.config.connect_timeout, self.connect(server)).await {
                Ok(Ok(connected)) => Arc::new(connected),
                Ok(Err(reason)) => return Err(self.unreachable(name, reason)),
                Err(_) => {
                    return Err(self.unreachable(
                        name,
                        format!("no answer within {:?}", self.config.connect_timeout),
                    ));
                }
            };
        let mut state = lock(&self.state);
        if state.epoch == epoch {
            state.connected.insert(name.to_owned(), connected.clone());
        }
        Ok(connected)
    }

    fn cached(&self, name: &str) -> Result<Option<Arc<Connected>>, McpError> {
        let state = lock(&self.state);
        if let Some(connected) = state.connected.get(name) {
            return Ok(Some(connected.clone()));
        }
        if state
            .unreachable
            .get(name)
            .is_some_and(|at| at.elapsed() < self.config.retry_after)
        {
            return Err(McpError::RecentlyUnavailable(name.to_owned()));
        }
        Ok(None)
    }

    fn unreachable(&self, name: &str, reason: String) -> McpError {
        self.metrics
            .unavailable
            .add(1, &[KeyValue::new("server", name.to_owned())]);
        let mut state = lock(&self.state);
        state.connected.remove(name);
        state.unreachable.insert(name.to_owned(), Instant::now());
        McpError::Unavailable {
            server: name.to_owned(),
            reason,
        }
    }

    async fn connect(&self, server: &McpServer) -> Result<Connected, String> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(server.url.as_str());
        // rmcp resumes a broken event stream forever by default, so a call
        // to a server that died would wait for its timeout: a few quick
        // tries cover a blip, then the call fails and the session is dropped.
        let mut resume = FixedInterval::default();
        resume.max_times = Some(RESUME_ATTEMPTS);
        resume.duration = RESUME_INTERVAL;
        config.retry_config = Arc::new(resume);
        if let Some(token) = &server.bearer_token {
            config = config.auth_header(token.clone());
        }
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let session: Session = ()
            .serve(transport)
            .await
            .map_err(|err| format!("initialize failed: {}", Chain(&err)))?;
        let listed = session
            .list_all_tools()
            .await
            .map_err(|err| format!("listing tools failed: {}", Chain(&err)))?;
        let tools = listed
            .into_iter()
            .filter(|tool| {
                server
                    .allowed_tools
                    .as_ref()
                    .is_none_or(|allowed| allowed.iter().any(|name| *name == tool.name))
            })
            .filter_map(|tool| {
                let exposed = format!("{}{MCP_SEPARATOR}{}", server.name, tool.name);
                is_tool_name(&exposed).then(|| McpTool {
                    server: server.name.clone(),
                    tool: tool.name.to_string(),
                    idempotent: server
                        .idempotent_tools
                        .iter()
                        .any(|name| *name == tool.name),
                    spec: ToolSpec {
                        name: exposed,
                        description: tool.description.as_deref().unwrap_or("").to_owned(),
                        parameters: Value::Object((*tool.input_schema).clone()),
                    },
                })
            })
            .collect();
        Ok(Connected { session, tools })
    }

    /// Server `id` and the tools it offers now, or why it could not be
    /// asked, asked afresh: its cached session and list are dropped first,
    /// so the next run connects anew too. `None` when there is no such
    /// server. A disabled server is asked all the same (an admin checks it
    /// before enabling it).
    pub async fn tools_of(&self, id: McpServerId) -> Result<Option<ServerTools>, DbError> {
        let row = {
            let client = self.pool.get().await?;
            mcp_servers::get(&client, id).await?
        };
        let Some(server) = row else {
            return Ok(None);
        };
        {
            let mut state = lock(&self.state);
            state.connected.remove(&server.name);
            state.unreachable.remove(&server.name);
        }
        let tools =
            match tokio::time::timeout(self.config.connect_timeout, self.connect(&server)).await {
                Ok(Ok(connected)) => Ok(connected.tools),
                Ok(Err(reason)) => Err(self.unreachable(&server.name, reason)),
                Err(_) => {
                    let reason = format!("no answer within {:?}", self.config.connect_timeout);
                    Err(self.unreachable(&server.name, reason))
                }
            };
        Ok(Some((server, tools)))
    }

    /// Calls `tool` of `server` with `args`. Every failure is an error result:
    /// the server unreachable (its session and tool list are dropped, so the
    /// next use reconnects), no answer in time, or the tool's own error.
    pub async fn call(&self, server: &str, tool: &str, args: &Value) -> Outcome {
        let label = |outcome: &'static str| label_for(server, outcome);
        let connected = match self.connected(server).await {
            Ok(connected) => connected,
            Err(err) => {
                self.metrics.calls.add(1, &label("unavailable"));
                return Outcome::error(err.to_string());
            }
        };
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Value::Object(map) = args {
            params = params.with_arguments(map.clone());
        }
        let called = tokio::time::timeout(
            self.config.call_timeout,
            connected.session.call_tool(params),
        )
        .await;
        match called {
            Ok(Ok(result)) => {
                let outcome = outcome_of(&result);
                let outcome_label = if outcome.is_error { "tool_error" } else { "ok" };
                self.metrics.calls.add(1, &label(outcome_label));
                outcome
            }
            // The server answered with an error (unknown tool, bad
            // arguments): the tool failed, the server is fine.
            Ok(Err(ServiceError::McpError(error))) => {
                self.metrics.calls.add(1, &label("tool_error"));
                Outcome {
                    result: json!({ "error": error.message, "code": error.code.0 }),
                    is_error: true,
                }
            }
            Ok(Err(err)) => {
                self.metrics.calls.add(1, &label("unavailable"));
                let err = self.unreachable(server, format!("the call failed: {}", Chain(&err)));
                Outcome::error(err.to_string())
            }
            Err(_) => {
                self.metrics.calls.add(1, &label("timeout"));
                // The session may be wedged: the next call starts a new one.
                lock(&self.state).connected.remove(server);
                Outcome::error(format!(
                    "{server}{MCP_SEPARATOR}{tool} timed out after {} s",
                    self.config.call_timeout.as_secs_f64()
                ))
            }
        }
    }
}

fn label_for(server: &str, outcome: &'static str) -> [KeyValue; 2] {
    [
        KeyValue::new("server", server.to_owned()),
        KeyValue::new("outcome", outcome),
    ]
}

/// A tool result as the model sees it: its structured content when it has
/// some, its text when it is all text, else the content blocks as JSON.
fn outcome_of(result: &CallToolResult) -> Outcome {
    let value = match &result.structured_content {
        Some(structured) => structured.clone(),
        None => {
            let texts: Option<Vec<&str>> = result
                .content
                .iter()
                .map(|block| match block {
                    ContentBlock::Text(text) => Some(text.text.as_str()),
                    _ => None,
                })
                .collect();
            match texts {
                Some(texts) => Value::String(texts.join("\n")),
                None => serde_json::to_value(&result.content).unwrap_or(Value::Null),
            }
        }
    };
    if result.is_error == Some(true) {
        Outcome {
            result: json!({ "error": value }),
            is_error: true,
        }
    } else {
        Outcome::ok(value)
    }
}
