//! How long the chats of a replica a fault hit take to run on another one,
//! read from the database: the server's side of a failover (a client's side
//! is the outage its probe measures). Polled every 10 ms, so a figure is
//! late by up to that much plus one round trip.

use std::time::Duration;

use chatd_shared::ids::ReplicaId;
use tokio::time::Instant;

use super::{
    audit,
    faults::{FaultLog, FaultRef},
};

const POLL: Duration = Duration::from_millis(10);

/// A chat `victim` was running when the fault began, and its generation.
pub struct Run {
    chat_id: uuid::Uuid,
    generation: i64,
}

/// The chats `victim` runs now (none when the database cannot be read).
pub async fn runs_of(url: &str, victim: ReplicaId) -> Vec<Run> {
    let Ok(db) = audit::connect(url).await else {
        return Vec::new();
    };
    let rows = db
        .query(
            "SELECT id, generation FROM chats WHERE status = 'running' AND worker_id = $1",
            &[&victim.0],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|row| Run {
            chat_id: row.get(0),
            generation: row.get(1),
        })
        .collect()
}

/// Records, for each of `runs`, the time from `since` until it runs under a
/// newer generation (claimed elsewhere after its recovery). A run that ended
/// where it was (its turn finished just before the fault) is dropped; so is
/// any still unmoved at `deadline`. Database errors (a restart) skip a poll.
pub async fn time_moves(
    url: &str,
    mut runs: Vec<Run>,
    since: Instant,
    deadline: Instant,
    log: &FaultLog,
    fault: FaultRef,
) {
    let mut db = None;
    while !runs.is_empty() && Instant::now() < deadline {
        if db.is_none() {
            db = audit::connect(url).await.ok();
        }
        let Some(client) = &db else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let ids: Vec<uuid::Uuid> = runs.iter().map(|run| run.chat_id).collect();
        let rows = match client
            .query(
                "SELECT id, generation, status::text FROM chats WHERE id = ANY($1)",
                &[&ids],
            )
            .await
        {
            Ok(rows) => rows,
            Err(_) => {
                db = None;
                continue;
            }
        };
        let now = Instant::now();
        runs.retain(|run| {
            let Some(row) = rows
                .iter()
                .find(|row| row.get::<_, uuid::Uuid>(0) == run.chat_id)
            else {
                return false;
            };
            let generation: i64 = row.get(1);
            let status: String = row.get(2);
            if generation > run.generation && status != "pending" {
                log.moved(fault, now.duration_since(since));
                return false;
            }
            // Still running or pending where it was, or requeued and unclaimed.
            generation > run.generation || status == "running" || status == "pending"
        });
        tokio::time::sleep(POLL).await;
    }
}
