//! The real-PostgreSQL test harness (ARCHITECTURE.md §14), behind the `testing` feature.
//!
//! Each test process gets **one** private PostgreSQL cluster, started on first
//! use from the installed server binaries (as the `postgres` user when the
//! process is root), on a free port, with durability off and
//! `pg_stat_statements` loaded. A template database is migrated once; every
//! [`TestDb`] is a fresh database created from it, dropped when the `TestDb`
//! is. NOTIFY is per database, so tests never hear each other.
//!
//! `CHATD_TEST_DATABASE_URL` points the harness at an existing server instead
//! (its user must be allowed to create databases).
//!
//! The cluster is removed when the test process exits, however it exits: a
//! small reaper shell, started with the cluster, waits for EOF on a pipe only
//! this process holds, then stops the server and deletes its directory. The
//! kernel closes the pipe on exit, panic or kill alike.

mod cluster;
mod messages;
mod metrics;
mod pubsub;
mod users;
mod wait;

pub use cluster::{PASSWORD_ROLE, TestCluster, TestDb, cluster};
pub use messages::stored_message;
pub use metrics::{metric_present, metric_sum, metric_sum_where};
pub use pubsub::{TestPubSub, wait_connected};
pub use users::{user_with_token, webhook_for};
pub use wait::{eventually, wait_for};

/// Initialises tracing once for the test process; output only with `TEST_LOG=1`.
pub fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}
