//! `replicas`: the registry of running replica processes and their leases.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::ids::ReplicaId;

/// A row of `replicas`.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The replica's id (the `worker_id` of its chats).
    pub id: ReplicaId,
    /// The host it runs on.
    pub hostname: String,
    /// Where peers reach its relay listener (`ws://host:port`), if it has one.
    pub relay_url: Option<String>,
    /// Its build version.
    pub version: String,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last renewal.
    pub heartbeat_at: DateTime<Utc>,
    /// Its chats are someone else's to recover after this.
    pub lease_expires_at: DateTime<Utc>,
    /// True once it began shutting down.
    pub draining: bool,
    /// The advisory lock it holds on its listener session while alive
    /// (`None`: a replica that holds none, judged by its lease alone).
    pub lock_key: Option<i64>,
    /// Chats it runs at most (`None`: an older version that did not say).
    pub max_running_chats: Option<i32>,
}

impl Replica {
    fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            hostname: row.try_get("hostname")?,
            relay_url: row.try_get("relay_url")?,
            version: row.try_get("version")?,
            started_at: row.try_get("started_at")?,
            heartbeat_at: row.try_get("heartbeat_at")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            draining: row.try_get("draining")?,
            lock_key: row.try_get("lock_key")?,
            max_running_chats: row.try_get("max_running_chats")?,
        })
    }
}

const COLUMNS: &str =
    "id, hostname, relay_url, version, started_at, heartbeat_at, lease_expires_at,
    draining, lock_key, max_running_chats";

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// What a replica says about itself when it registers.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The replica.
    pub id: ReplicaId,
    /// The host it runs on.
    pub hostname: &'a str,
    /// Where peers reach its relay.
    pub relay_url: Option<&'a str>,
    /// Its build version.
    pub version: &'a str,
    /// How long the first lease lasts.
    pub lease_ttl: Duration,
    /// Chats it runs at most (its free slots are this minus its running chats).
    pub max_running_chats: usize,
}

/// Registers (or re-registers) a replica with a fresh lease of `lease_ttl`.
/// The caller holds the replica's advisory lock ([`ReplicaId::lock_key`])
/// on its listener session: peers take a free lock for a dead replica.
pub async fn register(db: &impl GenericClient, replica: &Registration<'_>) -> DbResult<Replica> {
    let sql = format!(
        "INSERT INTO replicas (id, hostname, relay_url, version, lease_expires_at, lock_key,
             max_running_chats)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7)
         ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, relay_url = EXCLUDED.relay_url,
             version = EXCLUDED.version, heartbeat_at = now(),
             lease_expires_at = EXCLUDED.lease_expires_at, draining = false,
             lock_key = EXCLUDED.lock_key, max_running_chats = EXCLUDED.max_running_chats
         RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let max_running = i32::try_from(replica.max_running_chats).unwrap_or(i32::MAX);
    let row = db
        .query_one(
            &stmt,
            &[
                &replica.id,
                &replica.hostname,
                &replica.relay_url,
                &replica.version,
                &seconds(replica.lease_ttl),
                &replica.id.lock_key(),
                &max_running,
            ],
        )
        .await?;
    Replica::from_row(&row)
}

/// Extends the lease to `now() + lease_ttl` (database clock). Returns false
/// when the row is gone: the replica must re-register and assume its chats
/// were taken.
pub async fn renew_lease(
    db: &impl GenericClient,
    id: ReplicaId,
    lease_ttl: Duration,
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "UPDATE replicas SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $2)
             WHERE id = $1",
        )
        .await?;
    Ok(db.execute(&stmt, &[&id, &seconds(lease_ttl)]).await? == 1)
}

/// Marks a replica as draining (shutting down).
pub async fn mark_draining(db: &impl GenericClient, id: ReplicaId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("UPDATE replicas SET draining = true WHERE id = $1")
        .await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// Removes a replica's row (end of a graceful shutdown).
pub async fn delete(db: &impl GenericClient, id: ReplicaId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("DELETE FROM replicas WHERE id = $1")
        .await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// Deletes rows whose lease expired more than `older_than` ago. Returns how many.
pub async fn delete_expired(db: &impl GenericClient, older_than: Duration) -> DbResult<u64> {
    let stmt = db
        .prepare_cached(
            "DELETE FROM replicas WHERE lease_expires_at < now() - make_interval(secs => $1)",
        )
        .await?;
    Ok(db.execute(&stmt, &[&seconds(older_than)]).await?)
}

/// One replica.
pub async fn get(db: &impl GenericClient, id: ReplicaId) -> DbResult<Option<Replica>> {
    let sql = format!("SELECT {COLUMNS} FROM replicas WHERE id = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(Replica::from_row)
        .transpose()
}

/// Every registered replica, oldest first.
pub async fn list(db: &impl GenericClient) -> DbResult<Vec<Replica>> {
    let sql = format!("SELECT {COLUMNS} FROM replicas ORDER BY started_at, id");
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[])
        .await?
        .iter()
        .map(Replica::from_row)
        .collect()
}
