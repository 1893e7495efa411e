//! chatd's schema migrations and the runner that applies them.
//!
//! The SQL lives in `migrations/sql/NNNN_name.sql` and is embedded at build
//! time (see `build.rs`). [`migrate`] applies the missing ones in order, each
//! in its own transaction, and records them with a checksum in
//! `chatd_schema_migrations`. It holds a session-level `pg_advisory_lock`
//! while it runs, so replicas that start together migrate exactly once: the
//! first one applies, the others wait and then find nothing to do.
//!
//! An applied migration whose file has changed since is an error naming the
//! file: a schema that silently differs from its source is worse than a
//! replica that refuses to start.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// Key of the advisory lock every runner takes ("chatd-mi" in ASCII).
pub const ADVISORY_LOCK_KEY: i64 = 0x6368_6174_642d_6d69;

/// One migration: a version (the number its file name starts with), the file
/// name, the SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, … in the order they apply (increasing; a gap is allowed).
    pub version: i32,
    /// The file name, used in every message about this migration.
    pub name: &'static str,
    /// The whole file; it may hold several statements.
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the SQL, recorded when applied and compared afterwards.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// What went wrong while migrating.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A statement of the runner itself failed (lock, bookkeeping).
    #[error("migration bookkeeping failed: {0}")]
    Database(#[source] tokio_postgres::Error),
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("migration {name} failed: {source}")]
    Apply {
        /// The file that failed.
        name: &'static str,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database recorded a different checksum for a migration than the
    /// embedded file has: the file was edited after it was applied.
    #[error(
        "migration {name} was changed after it was applied (recorded checksum {recorded}, file checksum {current}); restore the file and add a new migration instead"
    )]
    ChecksumMismatch {
        /// The changed file.
        name: &'static str,
        /// Checksum stored when it was applied.
        recorded: String,
        /// Checksum of the embedded file now.
        current: String,
    },
}

/// The result of a successful run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Names of the migrations this run applied (empty when up to date).
    pub applied: Vec<&'static str>,
}

/// Applies every embedded migration that the database does not have yet.
pub async fn migrate(client: &mut Client) -> Result<Report, MigrateError> {
    migrate_with(client, EMBEDDED).await
}

/// Applies `migrations` (ordered by version) that the database does not have
/// yet. [`migrate`] is this with the embedded set; tests pass their own.
pub async fn migrate_with(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Report, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&ADVISORY_LOCK_KEY])
        .await
        .map_err(MigrateError::Database)?;
    let outcome = migrate_locked(client, migrations).await;
    // Unlock even after a failure: the caller may keep using the connection.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&ADVISORY_LOCK_KEY])
        .await
        .map_err(MigrateError::Database);
    let report = outcome?;
    unlocked?;
    Ok(report)
}

async fn migrate_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Report, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS chatd_schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 checksum    text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(MigrateError::Database)?;
    let rows = client
        .query(
            "SELECT version, name, checksum FROM chatd_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(MigrateError::Database)?;
    let recorded: Vec<(i32, String, String)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();

    for migration in migrations {
        if let Some((_, _, checksum)) = recorded.iter().find(|(v, _, _)| *v == migration.version) {
            let current = migration.checksum();
            if *checksum != current {
                return Err(MigrateError::ChecksumMismatch {
                    name: migration.name,
                    recorded: checksum.clone(),
                    current,
                });
            }
        }
    }
    if let Some((version, name, _)) = recorded
        .iter()
        .find(|(v, _, _)| !migrations.iter().any(|m| m.version == *v))
    {
        // A newer replica migrated further; its migrations must stay
        // compatible with older code during a rolling deploy.
        tracing::warn!(
            version,
            name,
            "database has a migration this binary does not know"
        );
    }

    let mut report = Report::default();
    for migration in migrations {
        if recorded.iter().any(|(v, _, _)| *v == migration.version) {
            continue;
        }
        apply(client, migration).await?;
        tracing::info!(name = migration.name, "applied migration");
        report.applied.push(migration.name);
    }
    Ok(report)
}

async fn apply(client: &mut Client, migration: &Migration) -> Result<(), MigrateError> {
    let failed = |source| MigrateError::Apply {
        name: migration.name,
        source,
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.batch_execute(migration.sql).await.map_err(failed)?;
    tx.execute(
        "INSERT INTO chatd_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        &[&migration.version, &migration.name, &migration.checksum()],
    )
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)
}
