//! The database layer: the connection pool, the error type, one module per
//! table with one function per statement for plain reads and writes
//! (`chats`, `messages`, …), and apart from them the statements that move a
//! chat through its lifecycle: [`lifecycle`] (the worker's side: claim,
//! heartbeat and recovery, hand-back, fenced steps and turn ends) and
//! [`transitions`] (a client's requests: create, send, interrupt, edit).
//!
//! Statement functions take any [`GenericClient`] so the same code runs on a
//! pooled connection or inside a transaction, and use `prepare_cached` so a
//! statement is parsed once per connection.

pub mod accounting;
pub mod agents;
pub mod batched;
pub mod chats;
pub mod compaction;
pub mod diagnosis;
pub mod files;
pub mod lifecycle;
pub mod mcp_servers;
pub mod messages;
pub mod model_configs;
pub mod pool;
pub mod prompt_context;
pub mod providers;
pub mod queued_messages;
pub mod replicas;
pub mod sends;
pub mod spend;
pub mod system_prompts;
pub mod tokens;
pub mod tool_calls;
pub mod transitions;
pub mod turn_ends;
pub mod usage;
pub mod users;
pub mod webhook_deliveries;
pub mod webhooks;

pub use deadpool_postgres::{GenericClient, Transaction};
pub use pool::{DbConfig, Pool, PoolBuildError, Target, connect_dedicated, connect_pool};

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// No connection could be taken from the pool in time (or it is closed).
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed, or the connection did.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// A statement answered other than its contract says (a bug).
    #[error("unexpected answer: {0}")]
    Unexpected(&'static str),
    /// The one error of a batched statement that failed several calls
    /// ([`batched::unshared`]).
    #[error(transparent)]
    Shared(std::sync::Arc<DbError>),
}

impl DbError {
    /// The error itself, seen through [`DbError::Shared`].
    pub fn root(&self) -> &DbError {
        match self {
            Self::Shared(shared) => shared.root(),
            other => other,
        }
    }

    /// The SQLSTATE of a failed statement, if that is what this is.
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self.root() {
            Self::Postgres(err) => err.code(),
            Self::Pool(deadpool_postgres::PoolError::Backend(err)) => err.code(),
            _ => None,
        }
    }

    /// True when a unique constraint rejected the row.
    pub fn is_unique_violation(&self) -> bool {
        self.sql_state() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    }
}

/// Result of a database call.
pub type DbResult<T> = Result<T, DbError>;
