//! The per-process cluster and the per-test databases.

use std::{
    path::PathBuf,
    process::ChildStdin,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use crate::db::Pool;
use tokio_postgres::{Client, NoTls};

use crate::{
    db::{DbConfig, connect_pool},
    pg_server::{LocalPostgres, PgBinaries, ServerSettings, ServerUser, free_port},
};

/// A role of the private cluster that must log in with a password, for tests
/// of authentication failures (every other role is trusted). Tests create it.
pub const PASSWORD_ROLE: &str = "chatd_password_test";

/// Name of the migrated template database on the private cluster.
const TEMPLATE: &str = "chatd_template";

/// The server every test of this process uses.
pub struct TestCluster {
    kind: ClusterKind,
    /// Admin URL template: `{db}` is replaced by a database name.
    base: UrlBase,
    template: String,
    /// Sends the names of databases to drop to the dropper thread.
    dropper: tokio::sync::mpsc::UnboundedSender<String>,
    /// Serialises restarts.
    restart_lock: Mutex<()>,
}

enum ClusterKind {
    Private {
        server: LocalPostgres,
        /// Kept open for the life of the process: its EOF tells the reaper to clean up.
        _reaper_pipe: ChildStdin,
    },
    External,
}

struct UrlBase {
    config: tokio_postgres::Config,
}

impl UrlBase {
    fn url(&self, dbname: &str) -> String {
        let config = &self.config;
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", percent_encode(&String::from_utf8_lossy(p))))
            .unwrap_or_default();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => {
                percent_encode(&path.display().to_string())
            }
            None => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!("postgres://{user}{password}@{host}:{port}/{dbname}")
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The cluster of this test process, started on first use.
///
/// Panics with one clear sentence when no server can be found or started:
/// a test without a database cannot do anything useful.
pub fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match TestCluster::start() {
        Ok(cluster) => cluster,
        Err(err) => panic!("test PostgreSQL unavailable: {err}"),
    })
}

impl TestCluster {
    fn start() -> Result<Self, String> {
        let (kind, base) = match std::env::var("CHATD_TEST_DATABASE_URL") {
            Ok(url) => {
                let config = crate::db::pool::parse_url(&url)
                    .map_err(|err| format!("CHATD_TEST_DATABASE_URL: {err}"))?;
                (ClusterKind::External, UrlBase { config })
            }
            Err(_) => start_private()?,
        };
        let template = match kind {
            ClusterKind::Private { .. } => TEMPLATE.to_owned(),
            // Shared servers may serve several checkouts: key the template by schema.
            ClusterKind::External => format!("chatd_template_{}", schema_fingerprint()),
        };
        let admin_url = base.url("postgres");
        run_blocking({
            let template = template.clone();
            let admin_url = admin_url.clone();
            move || async move {
                create_template(
                    &admin_url,
                    &template,
                    &base_template_url(&admin_url, &template),
                )
                .await
            }
        })?;
        let dropper = spawn_dropper(admin_url)?;
        Ok(Self {
            kind,
            base,
            template,
            dropper,
            restart_lock: Mutex::new(()),
        })
    }

    /// A URL for database `dbname` on this cluster.
    pub fn url(&self, dbname: &str) -> String {
        self.base.url(dbname)
    }

    /// True when the harness runs its own server (so it can restart it).
    pub fn can_restart(&self) -> bool {
        matches!(self.kind, ClusterKind::Private { .. })
    }

    /// Stops and starts the private server on the same port and data, cutting
    /// every connection. Blocking; call it from `spawn_blocking` in async tests.
    ///
    /// Panics on an external server (see [`Self::can_restart`]).
    pub fn restart(&self) {
        let ClusterKind::Private { server, .. } = &self.kind else {
            panic!("restart() needs the private test cluster; unset CHATD_TEST_DATABASE_URL");
        };
        let _guard = self
            .restart_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        server
            .restart()
            .unwrap_or_else(|err| panic!("restarting the test cluster: {err}"));
    }

    /// Stops the private server (for tests of "database gone"); [`Self::start_again`] undoes it.
    pub fn stop(&self) {
        let ClusterKind::Private { server, .. } = &self.kind else {
            panic!("stop() needs the private test cluster; unset CHATD_TEST_DATABASE_URL");
        };
        server
            .stop()
            .unwrap_or_else(|err| panic!("stopping the test cluster: {err}"));
    }

    /// Starts the private server again after [`Self::stop`].
    pub fn start_again(&self) {
        let ClusterKind::Private { server, .. } = &self.kind else {
            panic!("start_again() needs the private test cluster");
        };
        server
            .start()
            .unwrap_or_else(|err| panic!("starting the test cluster: {err}"));
    }

    /// The private server's directory, if the harness runs one.
    pub fn server_dir(&self) -> Option<PathBuf> {
        match &self.kind {
            ClusterKind::Private { server, .. } => Some(server.root().to_owned()),
            ClusterKind::External => None,
        }
    }
}

fn base_template_url(admin_url: &str, template: &str) -> String {
    let (prefix, _) = admin_url
        .rsplit_once('/')
        .expect("admin url has a database");
    format!("{prefix}/{template}")
}

/// First 12 hex digits of the checksums of every embedded migration.
fn schema_fingerprint() -> String {
    let all: String = chatd_migrations::EMBEDDED
        .iter()
        .map(|m| m.checksum())
        .collect();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(all.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn start_private() -> Result<(ClusterKind, UrlBase), String> {
    let binaries = PgBinaries::locate().map_err(|err| err.to_string())?;
    let user = ServerUser::detect().map_err(|err| err.to_string())?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let root = std::env::temp_dir().join(format!("chatd-test-pg-{}-{nanos}", std::process::id()));

    // The reaper first: from here on, whatever happens, the directory goes away.
    let reaper_pipe = crate::pg_server::stop_when_gone(&binaries, user, &root, true)
        .map_err(|err| err.to_string())?;
    let mut last_error = String::new();
    // A free port can be taken between our probe and the server's bind: retry.
    for _ in 0..3 {
        let settings = ServerSettings {
            port: free_port().map_err(|err| err.to_string())?,
            durability_off: true,
            max_connections: 500,
            password_roles: vec![PASSWORD_ROLE.to_owned()],
            extra: Vec::new(),
        };
        let server = LocalPostgres::init(binaries.clone(), user, &root, &settings)
            .map_err(|err| err.to_string())?;
        match server.start() {
            Ok(()) => {
                let config = crate::db::pool::parse_url(&server.url("postgres"))
                    .map_err(|err| err.to_string())?;
                return Ok((
                    ClusterKind::Private {
                        server,
                        _reaper_pipe: reaper_pipe,
                    },
                    UrlBase { config },
                ));
            }
            Err(err) => last_error = err.to_string(),
        }
    }
    Err(last_error)
}

/// Runs an async job to completion on a private runtime in its own thread.
/// The harness is initialised from inside test runtimes, where blocking on
/// another future directly is not allowed.
fn run_blocking<F, Fut, T>(job: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| err.to_string())?;
        runtime.block_on(job())
    })
    .join()
    .map_err(|_| "harness thread panicked".to_owned())?
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|err| format!("connecting to {url}: {err}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Creates and migrates the template unless it exists (under an advisory
/// lock, since several test processes may share an external server).
async fn create_template(
    admin_url: &str,
    template: &str,
    template_url: &str,
) -> Result<(), String> {
    let admin = connect(admin_url).await?;
    let lock_key: i64 = 0x6368_6174_642d_7470; // "chatd-tp"
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&lock_key])
        .await
        .map_err(|err| err.to_string())?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .map_err(|err| err.to_string())?
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {template}"))
            .await
            .map_err(|err| format!("creating the template database: {err}"))?;
        let mut client = connect(template_url).await?;
        chatd_migrations::migrate(&mut client)
            .await
            .map_err(|err| format!("migrating the template database: {err}"))?;
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .map_err(|err| format!("creating pg_stat_statements: {err}"))?;
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_key])
        .await
        .map_err(|err| err.to_string())?;
    Ok(())
}

/// A thread with its own runtime that drops test databases as their
/// [`TestDb`]s go away (dropping needs async I/O, `Drop` cannot do it).
fn spawn_dropper(admin_url: String) -> Result<tokio::sync::mpsc::UnboundedSender<String>, String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::Builder::new()
        .name("chatd-test-db-dropper".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                while let Some(name) = rx.recv().await {
                    // Reconnect per drop: the server may have been restarted since.
                    if let Ok(admin) = connect(&admin_url).await {
                        let _ = admin
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                }
            });
        })
        .map_err(|err| format!("starting the dropper thread: {err}"))?;
    Ok(tx)
}

/// A fresh database for one test, created from the migrated template and
/// dropped when this value is dropped.
pub struct TestDb {
    name: String,
    url: String,
    pool: Pool,
}

impl TestDb {
    /// Creates the database (and the cluster, on first use), migrated.
    pub async fn new() -> Self {
        Self::create(&cluster().template).await
    }

    /// An empty database with no schema at all (for migration tests).
    pub async fn new_empty() -> Self {
        Self::create("template0").await
    }

    async fn create(template: &str) -> Self {
        super::init_tracing();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let cluster = cluster();
        let name = format!(
            "chatd_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&cluster.url("postgres"))
            .await
            .unwrap_or_else(|err| panic!("test database: {err}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .unwrap_or_else(|err| panic!("creating test database {name}: {err}"));
        let url = cluster.url(&name);
        let pool = connect_pool(&DbConfig::new(url.clone())).expect("test pool");
        Self { name, url, pool }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool on this database, shared by the test.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pool configuration for this database (replicas build their own pools).
    pub fn config(&self) -> DbConfig {
        DbConfig::new(self.url.clone())
    }

    /// A connection of its own, outside the pool; its driver runs on the
    /// current runtime until the client is dropped.
    pub async fn connect(&self) -> Client {
        connect(&self.url)
            .await
            .unwrap_or_else(|err| panic!("{err}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let _ = cluster().dropper.send(self.name.clone());
    }
}
