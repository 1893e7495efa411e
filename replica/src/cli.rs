//! The command line: every flag also reads its `CHATD_*` variable.

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
    /// Apply the database migrations to CHATD_DATABASE_URL and exit.
    Migrate(MigrateArgs),
}

/// Logging flags, shared by every subcommand.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Tracing filter, e.g. `info` or `chatd=debug,tower_http=info`.
    #[arg(long = "log", env = "CHATD_LOG", default_value = "info", global = true)]
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
