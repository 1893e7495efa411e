//! The operators' reads (ARCHITECTURE.md §11): why one chat is not running, and how
//! loaded each replica is. One statement each, on indexes only: the queue
//! position counts the pending chats ahead through the acquire index
//! (`(updated_at, id) where status = 'pending' and not archived`), running
//! chats per replica through `(worker_id) where status = 'running'`.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::{
    ids::{ChatId, Generation, ReplicaId},
    status::ChatStatus,
};

/// One chat as the diagnosis endpoint reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatDiagnosis {
    /// The chat.
    pub chat_id: ChatId,
    /// Its status.
    pub status: ChatStatus,
    /// Since when it has that status: the claim for a running chat, the last
    /// change of the row otherwise (for a pending one, its place in line).
    pub since: DateTime<Utc>,
    /// The fencing token.
    pub generation: Generation,
    /// Archived chats are never claimed.
    pub archived: bool,
    /// Why the last turn failed.
    pub last_error: Option<String>,
    /// Retries of the model call of the step in progress.
    pub step_retries: i32,
    /// An interrupt was asked for and not yet acted on.
    pub interrupt_requested: bool,
    /// Messages waiting in its queue.
    pub queued_messages: i64,
    /// Pending chats the acquirers take before this one (pending only).
    pub pending_ahead: Option<i64>,
    /// Pending chats in the whole cluster (pending only).
    pub pending_total: Option<i64>,
    /// The replica running it (running only).
    pub worker: Option<WorkerLease>,
}

/// The lease of the replica a chat's `worker_id` names.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerLease {
    /// The replica.
    pub replica_id: ReplicaId,
    /// False when its row is gone: recovery treats it as dead.
    pub registered: bool,
    /// Its host, when registered.
    pub hostname: Option<String>,
    /// Its last renewal.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When its lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Seconds since its last renewal (database clock).
    pub lease_age_seconds: Option<f64>,
    /// True when the lease ended (or the row is gone): its chats are due
    /// for recovery at the next heartbeat of any replica.
    pub lease_expired: bool,
    /// It is shutting down.
    pub draining: bool,
}

const CHAT: &str = "
    SELECT c.id, c.status, c.generation, c.archived, c.last_error, c.step_retries,
           c.interrupt_requested, c.worker_id,
           CASE WHEN c.status = 'running' THEN coalesce(c.started_at, c.updated_at)
                ELSE c.updated_at END AS since,
           (SELECT count(*) FROM chat_queued_messages q WHERE q.chat_id = c.id) AS queued_messages,
           CASE WHEN c.status = 'pending' AND NOT c.archived THEN
               (SELECT count(*) FROM chats p
                WHERE p.status = 'pending' AND NOT p.archived
                  AND (p.updated_at, p.id) < (c.updated_at, c.id))
           END AS pending_ahead,
           CASE WHEN c.status = 'pending' THEN
               (SELECT count(*) FROM chats p WHERE p.status = 'pending' AND NOT p.archived)
           END AS pending_total,
           r.id IS NOT NULL AS worker_registered, r.hostname, r.heartbeat_at, r.lease_expires_at,
           extract(epoch FROM now() - r.heartbeat_at)::float8 AS lease_age_seconds,
           coalesce(r.lease_expires_at < now(), true) AS lease_expired,
           coalesce(r.draining, false) AS worker_draining
    FROM chats c LEFT JOIN replicas r ON r.id = c.worker_id
    WHERE c.id = $1";

/// Why chat `id` is (not) running; `None` when there is no such chat.
pub async fn chat(db: &impl GenericClient, id: ChatId) -> DbResult<Option<ChatDiagnosis>> {
    let stmt = db.prepare_cached(CHAT).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(ChatDiagnosis::from_row)
        .transpose()
}

impl ChatDiagnosis {
    fn from_row(row: &Row) -> DbResult<Self> {
        let worker = match row.try_get::<_, Option<ReplicaId>>("worker_id")? {
            None => None,
            Some(replica_id) => Some(WorkerLease {
                replica_id,
                registered: row.try_get("worker_registered")?,
                hostname: row.try_get("hostname")?,
                heartbeat_at: row.try_get("heartbeat_at")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                lease_age_seconds: row.try_get("lease_age_seconds")?,
                lease_expired: row.try_get("lease_expired")?,
                draining: row.try_get("worker_draining")?,
            }),
        };
        Ok(Self {
            chat_id: row.try_get("id")?,
            status: row.try_get("status")?,
            since: row.try_get("since")?,
            generation: row.try_get("generation")?,
            archived: row.try_get("archived")?,
            last_error: row.try_get("last_error")?,
            step_retries: row.try_get("step_retries")?,
            interrupt_requested: row.try_get("interrupt_requested")?,
            queued_messages: row.try_get("queued_messages")?,
            pending_ahead: row.try_get("pending_ahead")?,
            pending_total: row.try_get("pending_total")?,
            worker,
        })
    }
}

/// One replica and what it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLoad {
    /// The replica.
    pub id: ReplicaId,
    /// Its host.
    pub hostname: String,
    /// Its build version.
    pub version: String,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last renewal.
    pub heartbeat_at: DateTime<Utc>,
    /// When its lease ends.
    pub lease_expires_at: DateTime<Utc>,
    /// Seconds since its last renewal (database clock).
    pub lease_age_seconds: f64,
    /// True when the lease ended: it is dead to its peers.
    pub lease_expired: bool,
    /// It is shutting down.
    pub draining: bool,
    /// Chats the database says it runs.
    pub running_chats: i64,
    /// Chats it runs at most (`None`: it did not say).
    pub max_running_chats: Option<i32>,
}

const REPLICAS: &str = "
    SELECT r.id, r.hostname, r.version, r.started_at, r.heartbeat_at, r.lease_expires_at,
           extract(epoch FROM now() - r.heartbeat_at)::float8 AS lease_age_seconds,
           r.lease_expires_at < now() AS lease_expired, r.draining, r.max_running_chats,
           coalesce(running.count, 0) AS running_chats
    FROM replicas r
    LEFT JOIN (SELECT worker_id, count(*) AS count FROM chats
               WHERE status = 'running' GROUP BY worker_id) running ON running.worker_id = r.id
    ORDER BY r.started_at, r.id";

/// Every registered replica with its running chats, oldest first.
pub async fn replicas(db: &impl GenericClient) -> DbResult<Vec<ReplicaLoad>> {
    let stmt = db.prepare_cached(REPLICAS).await?;
    db.query(&stmt, &[])
        .await?
        .iter()
        .map(|row| {
            Ok(ReplicaLoad {
                id: row.try_get("id")?,
                hostname: row.try_get("hostname")?,
                version: row.try_get("version")?,
                started_at: row.try_get("started_at")?,
                heartbeat_at: row.try_get("heartbeat_at")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                lease_age_seconds: row.try_get("lease_age_seconds")?,
                lease_expired: row.try_get("lease_expired")?,
                draining: row.try_get("draining")?,
                running_chats: row.try_get("running_chats")?,
                max_running_chats: row.try_get("max_running_chats")?,
            })
        })
        .collect()
}
