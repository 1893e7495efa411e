//! The command line: every flag also reads its `CHATD_*` variable.

use std::{net::SocketAddr, time::Duration};

use chatd_shared::{ids::ReplicaId, status::ProviderKind};
use clap::{Args, Parser, Subcommand};

/// chatd runs AI agent chats on a cluster of stateless replicas coordinated through PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about)]
pub struct Cli {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one replica (migrates first unless --no-migrate).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations to CHATD_DATABASE_URL and exit.
    Migrate(MigrateArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// A whole cluster on this machine: a private PostgreSQL, a mock (or
    /// real) LLM and N replicas wired through the relay. Ctrl-C stops it.
    Dev(DevArgs),
}

/// `chatd dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Replicas to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: u16,
    /// Start from an empty database (deletes the data of earlier runs).
    #[arg(long)]
    pub fresh: bool,
    /// Where the database lives between runs.
    #[arg(
        long,
        env = "CHATD_DEV_DIR",
        value_name = "DIR",
        default_value = ".chatd/dev"
    )]
    pub dir: std::path::PathBuf,
    /// The first replica's API port; the others take the next ones (0: any free ports).
    #[arg(
        long,
        env = "CHATD_DEV_PORT",
        value_name = "PORT",
        default_value_t = 7080
    )]
    pub port: u16,
    /// A real provider (else OPENAI_API_KEY or ANTHROPIC_API_KEY, else the mock LLM).
    #[command(flatten)]
    pub provider: ProviderArgs,
}

/// `chatd token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (and the user, if missing); prints the token as the last line.
    Create(TokenCreateArgs),
}

/// `chatd token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "CHATD_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The user (created as a member, or an admin with --admin, if missing).
    #[arg(long)]
    pub username: String,
    /// Make the user an admin.
    #[arg(long)]
    pub admin: bool,
    /// A label for the token.
    #[arg(long, default_value = "cli")]
    pub name: String,
}

pub use chatd_shared::duration::parse as parse_duration;

/// Variables that carry secrets. In Kubernetes each comes from a Secret, and
/// a Secret key with no value arrives as an empty variable, which clap would
/// treat as unset: the replica would then start without it (a relay without
/// its secret, a provider without its key) and fail far from the cause.
pub const SECRET_VARIABLES: [&str; 3] = [
    "CHATD_DATABASE_URL",
    "CHATD_RELAY_SECRET",
    "CHATD_PROVIDER_API_KEY",
];

/// The first of [`SECRET_VARIABLES`] that is set but empty, if any.
pub fn empty_secret_variable() -> Option<&'static str> {
    SECRET_VARIABLES
        .into_iter()
        .find(|name| std::env::var_os(name).is_some_and(|value| value.is_empty()))
}

/// `chatd serve`: every flag also reads the `CHATD_*` variable shown in its
/// value name, so a bad value's error names the variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "CHATD_DATABASE_URL",
        value_name = "CHATD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Where the API listens.
    #[arg(
        long,
        env = "CHATD_HTTP_ADDR",
        value_name = "CHATD_HTTP_ADDR",
        default_value = "127.0.0.1:7080"
    )]
    pub http_addr: SocketAddr,
    /// This replica's id (default: random).
    #[arg(long, env = "CHATD_REPLICA_ID", value_name = "CHATD_REPLICA_ID")]
    pub replica_id: Option<ReplicaId>,
    /// Chats run at once at most (0: this replica runs none; it serves the
    /// API and streams only).
    #[arg(
        long,
        env = "CHATD_MAX_RUNNING_CHATS",
        value_name = "CHATD_MAX_RUNNING_CHATS",
        default_value_t = 512
    )]
    pub max_running_chats: usize,
    /// Chats claimed per statement at most.
    #[arg(
        long,
        env = "CHATD_ACQUIRE_BATCH",
        value_name = "CHATD_ACQUIRE_BATCH",
        default_value_t = 32
    )]
    pub acquire_batch: usize,
    /// Fallback poll for pending chats (wake-ups are the fast path).
    #[arg(long, env = "CHATD_POLL_INTERVAL", value_name = "CHATD_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often the lease is renewed.
    #[arg(long, env = "CHATD_HEARTBEAT_INTERVAL", value_name = "CHATD_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long a renewal keeps the lease.
    #[arg(long, env = "CHATD_LEASE_TTL", value_name = "CHATD_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// How long runs may finish at shutdown before they are handed back.
    #[arg(long, env = "CHATD_DRAIN_TIMEOUT", value_name = "CHATD_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Database connections kept at most.
    #[arg(
        long,
        env = "CHATD_DB_POOL_SIZE",
        value_name = "CHATD_DB_POOL_SIZE",
        default_value_t = 16
    )]
    pub db_pool_size: usize,
    /// Do not apply migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
    /// Model calls per turn at most.
    #[arg(
        long,
        env = "CHATD_MAX_STEPS",
        value_name = "CHATD_MAX_STEPS",
        default_value_t = 25
    )]
    pub max_steps: u32,
    /// Subagents one chat may spawn in its life.
    #[arg(long, env = "CHATD_AGENTS_PER_CHAT", value_name = "CHATD_AGENTS_PER_CHAT", default_value_t = 16, value_parser = clap::value_parser!(i64).range(0..))]
    pub agents_per_chat: i64,
    /// Subagents of one user busy at once.
    #[arg(long, env = "CHATD_BUSY_AGENTS_PER_USER", value_name = "CHATD_BUSY_AGENTS_PER_USER", default_value_t = 32, value_parser = clap::value_parser!(i64).range(0..))]
    pub busy_agents_per_user: i64,
    /// Longest an MCP server may take to connect and list its tools.
    #[arg(long, env = "CHATD_MCP_CONNECT_TIMEOUT", value_name = "CHATD_MCP_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub mcp_connect_timeout: Duration,
    /// Longest one MCP tool call may take.
    #[arg(long, env = "CHATD_MCP_CALL_TIMEOUT", value_name = "CHATD_MCP_CALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub mcp_call_timeout: Duration,
    /// Offer the test tools (test_sleep, test_fail, test_panic) to models.
    #[arg(long, env = "CHATD_TEST_TOOLS", value_name = "CHATD_TEST_TOOLS")]
    pub test_tools: bool,
    /// Largest file upload, in bytes (413 past it).
    #[arg(
        long,
        env = "CHATD_MAX_FILE_SIZE",
        value_name = "CHATD_MAX_FILE_SIZE",
        default_value_t = 25 * 1024 * 1024
    )]
    pub max_file_size: usize,
    /// Let webhooks target private, loopback and link-local addresses
    /// (closed networks and tests; otherwise users could probe internal services).
    #[arg(
        long,
        env = "CHATD_WEBHOOK_ALLOW_PRIVATE",
        value_name = "CHATD_WEBHOOK_ALLOW_PRIVATE"
    )]
    pub webhook_allow_private: bool,
    /// Where the relay listens (replica-to-replica; never expose it publicly).
    #[arg(
        long,
        env = "CHATD_RELAY_ADDR",
        value_name = "CHATD_RELAY_ADDR",
        default_value = "127.0.0.1:7081"
    )]
    pub relay_addr: SocketAddr,
    /// The relay URL peers dial (default ws://CHATD_RELAY_ADDR); in Kubernetes, from the pod IP.
    #[arg(
        long,
        env = "CHATD_RELAY_ADVERTISE_URL",
        value_name = "CHATD_RELAY_ADVERTISE_URL"
    )]
    pub relay_advertise_url: Option<String>,
    /// The secret every replica's relay shares.
    #[arg(
        long,
        env = "CHATD_RELAY_SECRET",
        value_name = "CHATD_RELAY_SECRET",
        hide_env_values = true
    )]
    pub relay_secret: Option<String>,
    /// Allow a relay without a secret beyond loopback (trusted networks only).
    #[arg(long)]
    pub insecure_relay: bool,
    /// Provider bootstrap.
    #[command(flatten)]
    pub provider: ProviderArgs,
}

/// `CHATD_PROVIDER_*`: a provider and default model to make sure of at start.
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Provider kind: openai, anthropic or mock.
    #[arg(long, env = "CHATD_PROVIDER_KIND", value_name = "CHATD_PROVIDER_KIND", value_parser = parse_kind)]
    pub provider_kind: Option<ProviderKind>,
    /// Provider name (default: its kind).
    #[arg(long, env = "CHATD_PROVIDER_NAME", value_name = "CHATD_PROVIDER_NAME")]
    pub provider_name: Option<String>,
    /// Base URL (openai: with /v1; anthropic: without).
    #[arg(
        long,
        env = "CHATD_PROVIDER_BASE_URL",
        value_name = "CHATD_PROVIDER_BASE_URL"
    )]
    pub provider_base_url: Option<String>,
    /// The API key (stored nowhere: the provider row names this variable).
    #[arg(
        long,
        env = "CHATD_PROVIDER_API_KEY",
        value_name = "CHATD_PROVIDER_API_KEY",
        hide_env_values = true
    )]
    pub provider_api_key: Option<String>,
    /// The variable that holds the API key.
    #[arg(
        long,
        env = "CHATD_PROVIDER_API_KEY_ENV",
        value_name = "CHATD_PROVIDER_API_KEY_ENV"
    )]
    pub provider_api_key_env: Option<String>,
    /// The model name.
    #[arg(long, env = "CHATD_MODEL", value_name = "CHATD_MODEL")]
    pub model: Option<String>,
    /// The model's context window.
    #[arg(
        long,
        env = "CHATD_CONTEXT_LIMIT",
        value_name = "CHATD_CONTEXT_LIMIT",
        default_value_t = 128_000
    )]
    pub context_limit: i32,
}

fn parse_kind(text: &str) -> Result<ProviderKind, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a provider kind (openai, anthropic or mock)"))
}

/// Logging flags, shared by every subcommand.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Tracing filter, e.g. `info` or `chatd=debug,tower_http=info`.
    #[arg(
        long = "log",
        env = "CHATD_LOG",
        default_value = "info,opentelemetry_sdk=warn",
        global = true
    )]
    pub filter: String,
    /// Log format.
    #[arg(
        long = "log-format",
        env = "CHATD_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `chatd migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL, e.g. postgres://chatd:secret@db:5432/chatd.
    #[arg(long, env = "CHATD_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}
