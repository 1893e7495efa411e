//! Building connection pools and dedicated connections from a URL.

use std::{
    fmt,
    str::FromStr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Object, PoolError, RecyclingMethod, Runtime};
use opentelemetry::{
    KeyValue,
    metrics::{Histogram, Meter},
};
use tokio_postgres::{Client, NoTls, config::Host};

use super::DbError;

/// How to reach the database and how the pool behaves.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// A libpq-style URL or key=value string.
    pub url: String,
    /// Connections kept at most.
    pub pool_size: usize,
    /// Longest wait for a free connection; a pool wait never hangs forever.
    pub wait_timeout: Duration,
    /// Longest time to open a new connection.
    pub create_timeout: Duration,
    /// Longest time to check a returned connection.
    pub recycle_timeout: Duration,
    /// Server-side limit on any one statement of a pooled connection, so a
    /// statement whose caller gave up cannot hold a connection forever.
    pub statement_timeout: Option<Duration>,
    /// Server-side limit on a pooled session idle inside a transaction: a
    /// replica cut from PostgreSQL mid-transaction (a send holds the chat's
    /// row lock between round trips) must not keep the lock until the
    /// server notices the dead session, which TCP keepalive takes hours to.
    pub idle_in_transaction_timeout: Option<Duration>,
}

impl DbConfig {
    /// A config for `url` with the default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            wait_timeout: Duration::from_secs(5),
            create_timeout: Duration::from_secs(5),
            recycle_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            idle_in_transaction_timeout: Some(Duration::from_secs(5)),
        }
    }

    /// Parses the URL; the error never repeats the URL (it may hold a password).
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, DbError> {
        parse_url(&self.url)
    }
}

/// Parses a libpq URL without ever echoing it back in the error.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, DbError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|err| {
        DbError::InvalidUrl(format!(
            "{err} (expected postgres://user:password@host:port/dbname)"
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("chatd");
    }
    Ok(config)
}

/// Where a config points, for messages: `user@host:port/dbname`, never the password.
pub struct Target<'a>(pub &'a tokio_postgres::Config);

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.0;
        if let Some(user) = config.get_user() {
            write!(f, "{user}@")?;
        }
        let ports = config.get_ports();
        for (index, host) in config.get_hosts().iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            match host {
                Host::Tcp(name) => f.write_str(name)?,
                Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            write!(f, ":{port}")?;
        }
        if config.get_hosts().is_empty() {
            f.write_str("localhost:5432")?;
        }
        write!(f, "/{}", config.get_dbname().unwrap_or("(default)"))
    }
}

/// Why a pool could not be set up. No connection is opened then (pools
/// connect lazily): a database that is down shows up at the first `get`.
#[derive(Debug, thiserror::Error)]
pub enum PoolBuildError {
    /// The URL does not parse ([`DbError::InvalidUrl`]; never repeats it).
    #[error(transparent)]
    Url(#[from] DbError),
    /// deadpool refused the pool's settings.
    #[error("building the connection pool")]
    Build(#[source] deadpool_postgres::BuildError),
}

/// The connection pool: deadpool's, with every wait for a connection
/// timed once [`Pool::register_metrics`] gave it a meter (ARCHITECTURE.md §11: a pool wait
/// is a metric, not a hang). Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    wait: Arc<OnceLock<Histogram<f64>>>,
}

impl Pool {
    /// A connection, waiting at most the pool's wait timeout for one.
    pub async fn get(&self) -> Result<Object, PoolError> {
        let Some(wait) = self.wait.get() else {
            return self.inner.get().await;
        };
        let started = std::time::Instant::now();
        let got = self.inner.get().await;
        let outcome = match &got {
            Ok(_) => "ok",
            Err(PoolError::Timeout(_)) => "timeout",
            Err(_) => "error",
        };
        wait.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("outcome", outcome)],
        );
        got
    }

    /// Closes the pool: connections are dropped as they come back, and
    /// every `get` fails from now on.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Connections open, idle, and callers waiting for one.
    pub fn status(&self) -> deadpool_postgres::Status {
        self.inner.status()
    }

    /// Registers the pool's instruments on `meter`: connections in use and
    /// idle, callers waiting, the pool's size limit, and the time each `get`
    /// waited (`chatd_db_pool_wait_seconds`, by outcome). Once per pool.
    pub fn register_metrics(&self, meter: &Meter) {
        use crate::metrics::histogram;
        let gauge = |name: &'static str,
                     description: &'static str,
                     read: fn(&deadpool_postgres::Status) -> usize| {
            let pool = self.inner.clone();
            meter
                .u64_observable_gauge(name)
                .with_description(description)
                .with_callback(move |observer| observer.observe(read(&pool.status()) as u64, &[]))
                .build();
        };
        gauge(
            "chatd_db_pool_in_use",
            "Pooled connections taken by a caller",
            |status| status.size.saturating_sub(status.available),
        );
        gauge(
            "chatd_db_pool_idle",
            "Pooled connections open and free",
            |status| status.available,
        );
        gauge(
            "chatd_db_pool_waiting",
            "Callers waiting for a pooled connection",
            |status| status.waiting,
        );
        gauge(
            "chatd_db_pool_max_size",
            "Pooled connections at most (CHATD_DB_POOL_SIZE)",
            |status| status.max_size,
        );
        let wait = histogram(
            meter,
            "chatd_db_pool_wait_seconds",
            "Time a caller waited for a pooled connection, by outcome (ok, timeout, error)",
            &[
                0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        );
        let _ = self.wait.set(wait);
    }
}

/// A pool with every timeout set. Connections are opened lazily.
pub fn connect_pool(config: &DbConfig) -> Result<Pool, PoolBuildError> {
    let mut pg = config.pg_config()?;
    let limits = [
        ("statement_timeout", config.statement_timeout),
        (
            "idle_in_transaction_session_timeout",
            config.idle_in_transaction_timeout,
        ),
    ];
    for (name, limit) in limits {
        let Some(limit) = limit else { continue };
        let setting = format!("-c {name}={}", limit.as_millis());
        let options = match pg.get_options() {
            Some(existing) => format!("{existing} {setting}"),
            None => setting,
        };
        pg.options(options);
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let inner = deadpool_postgres::Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.wait_timeout))
        .create_timeout(Some(config.create_timeout))
        .recycle_timeout(Some(config.recycle_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(PoolBuildError::Build)?;
    Ok(Pool {
        inner,
        wait: Arc::default(),
    })
}

/// One connection outside any pool (the pubsub listener, the migrator). Its
/// driver task runs until the client is dropped or the connection breaks; the
/// returned receiver resolves then, with the error if there was one.
pub async fn connect_dedicated(
    url: &str,
) -> Result<
    (
        Client,
        tokio::sync::oneshot::Receiver<Option<tokio_postgres::Error>>,
    ),
    DbError,
> {
    let config = parse_url(url)?;
    let (client, connection) = config.connect(NoTls).await?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let outcome = connection.await.err();
        let _ = done_tx.send(outcome);
    });
    Ok((client, done_rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_reported_as_one_without_repeating_it() {
        let err = connect_pool(&DbConfig::new("postgres://u:secret@host:notaport/db"))
            .expect_err("the port is not a number");
        assert!(
            matches!(err, PoolBuildError::Url(DbError::InvalidUrl(_))),
            "{err:?}"
        );
        let text = crate::error_chain::Chain(&err).to_string();
        assert!(text.starts_with("invalid database URL"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_refused_setting_is_not_called_an_invalid_url() {
        let err = PoolBuildError::Build(deadpool_postgres::BuildError::NoRuntimeSpecified);
        let text = crate::error_chain::Chain(&err).to_string();
        assert!(text.starts_with("building the connection pool: "), "{text}");
        assert!(!text.contains("URL"), "{text}");
    }
}
