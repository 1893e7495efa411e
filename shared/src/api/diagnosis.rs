//! The operators' answers (ARCHITECTURE.md §11): `GET /admin/chats/{id}/diagnosis`
//! ("why is this chat not running?") and `GET /admin/replicas` ("how loaded
//! is each replica?").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    db,
    ids::{ChatId, Generation, ReplicaId},
    status::ChatStatus,
};

/// `GET /admin/chats/{id}/diagnosis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatDiagnosis {
    /// The chat.
    pub chat_id: ChatId,
    /// Its status.
    pub status: ChatStatus,
    /// Since when: the claim of a running chat, else the row's last change
    /// (for a pending chat, the moment its place in line was taken).
    pub since: DateTime<Utc>,
    /// The fencing token (bumped by every claim, recovery, hand-back, edit).
    pub generation: Generation,
    /// Archived chats are never claimed, even when pending.
    pub archived: bool,
    /// Why the last turn failed.
    pub last_error: Option<String>,
    /// Retries of the current step's model call (0 when it has none).
    pub step_retries: i32,
    /// An interrupt was asked for and the worker has not acted on it yet.
    pub interrupt_requested: bool,
    /// Messages waiting in the chat's queue.
    pub queued_messages: i64,
    /// Where a pending chat stands in line (absent otherwise).
    pub queue: Option<QueuePosition>,
    /// The replica a running chat's `worker_id` names (absent otherwise).
    pub worker: Option<WorkerLease>,
}

/// A pending chat's place among all pending chats (claimed oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueuePosition {
    /// 1 for the next chat a replica will claim.
    pub position: i64,
    /// Pending chats claimed before this one.
    pub ahead: i64,
    /// Pending chats in the cluster.
    pub pending: i64,
}

/// The lease of a chat's worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerLease {
    /// The replica.
    pub replica_id: ReplicaId,
    /// False when its row is gone: it is dead, and its chats are recovered
    /// at the next heartbeat of any replica.
    pub registered: bool,
    /// Its host.
    pub hostname: Option<String>,
    /// Its last lease renewal.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When its lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Seconds since its last renewal, by the database's clock.
    pub lease_age_seconds: Option<f64>,
    /// True when the lease ended (or the row is gone): the chat waits for
    /// recovery, which any replica's next heartbeat does.
    pub lease_expired: bool,
    /// It is shutting down: its chats finish or are handed back.
    pub draining: bool,
}

impl From<&db::diagnosis::ChatDiagnosis> for ChatDiagnosis {
    fn from(row: &db::diagnosis::ChatDiagnosis) -> Self {
        let queue = row
            .pending_ahead
            .zip(row.pending_total)
            .map(|(ahead, pending)| QueuePosition {
                position: ahead + 1,
                ahead,
                pending,
            });
        Self {
            chat_id: row.chat_id,
            status: row.status,
            since: row.since,
            generation: row.generation,
            archived: row.archived,
            last_error: row.last_error.clone(),
            step_retries: row.step_retries,
            interrupt_requested: row.interrupt_requested,
            queued_messages: row.queued_messages,
            queue,
            worker: row.worker.as_ref().map(|worker| WorkerLease {
                replica_id: worker.replica_id,
                registered: worker.registered,
                hostname: worker.hostname.clone(),
                heartbeat_at: worker.heartbeat_at,
                lease_expires_at: worker.lease_expires_at,
                lease_age_seconds: worker.lease_age_seconds,
                lease_expired: worker.lease_expired,
                draining: worker.draining,
            }),
        }
    }
}

/// `GET /admin/replicas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaList {
    /// Every registered replica, oldest first (dead ones until recovery
    /// deletes their rows).
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica's lease and load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaStatus {
    /// The replica (the `worker_id` of its chats).
    pub id: ReplicaId,
    /// Its host.
    pub hostname: String,
    /// Its build version.
    pub version: String,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last lease renewal.
    pub heartbeat_at: DateTime<Utc>,
    /// When its lease ends.
    pub lease_expires_at: DateTime<Utc>,
    /// Seconds since its last renewal, by the database's clock.
    pub lease_age_seconds: f64,
    /// True when the lease ended: its peers treat it as dead.
    pub lease_expired: bool,
    /// It is shutting down.
    pub draining: bool,
    /// Chats the database says it runs.
    pub running_chats: i64,
    /// Chats it runs at most (`CHATD_MAX_RUNNING_CHATS`), when it said.
    pub max_running_chats: Option<i32>,
    /// Slots left for new chats (0 when draining or expired), when it said
    /// its maximum.
    pub free_slots: Option<i64>,
}

impl From<&db::diagnosis::ReplicaLoad> for ReplicaStatus {
    fn from(row: &db::diagnosis::ReplicaLoad) -> Self {
        let accepting = !row.draining && !row.lease_expired;
        Self {
            id: row.id,
            hostname: row.hostname.clone(),
            version: row.version.clone(),
            started_at: row.started_at,
            heartbeat_at: row.heartbeat_at,
            lease_expires_at: row.lease_expires_at,
            lease_age_seconds: row.lease_age_seconds,
            lease_expired: row.lease_expired,
            draining: row.draining,
            running_chats: row.running_chats,
            max_running_chats: row.max_running_chats,
            free_slots: row.max_running_chats.map(|max| {
                if accepting {
                    (i64::from(max) - row.running_chats).max(0)
                } else {
                    0
                }
            }),
        }
    }
}
