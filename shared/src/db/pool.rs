//! Building connection pools and dedicated connections from a URL.

use std::{fmt, str::FromStr, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
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
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.wait_timeout))
        .create_timeout(Some(config.create_timeout))
        .recycle_timeout(Some(config.recycle_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(PoolBuildError::Build)
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
