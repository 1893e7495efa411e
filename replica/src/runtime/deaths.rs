//! Death detection (ARCHITECTURE.md §4): each replica holds an advisory
//! lock on its listener session for its whole life, and PostgreSQL frees
//! it the moment that session ends. Every replica waits, on a session of
//! its own, for the lock of one peer: the next one by id (the heartbeat
//! says which), so the replicas form a ring and each is watched by exactly
//! one other. The wait is one statement for the peer's whole life (a lock
//! try every 50 ms inside the server, holding no old snapshot: see
//! [`wait_for_lock`]); when the peer dies the lock is granted within that,
//! and the watcher recovers its chats (the same fenced recovery as the lease's) while it
//! holds the lock, so the peer cannot come back under the same id meanwhile.
//!
//! The lease stays the rule for what PostgreSQL cannot see (a partition
//! that keeps the session open, a hung process), and each heartbeat also
//! sweeps every peer's lock (`db::lifecycle::beat`), for a ring broken by
//! two deaths at once.

use std::sync::Arc;

use chatd_shared::{
    backoff::Backoff,
    db::{DbError, connect_dedicated, lifecycle::DeathCause},
    error_chain::Chain,
    ids::ReplicaId,
    pubsub::LOCK_POLL,
    sync::lock,
};
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Why the watcher's session ended.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the watcher's session failed")]
    Session(#[from] tokio_postgres::Error),
}

/// Runs until `stop` fires: one session at a time, reconnecting with backoff.
pub(crate) async fn run(shared: Arc<Shared>, url: String, stop: CancellationToken) {
    let mut backoff = Backoff::for_reconnect();
    loop {
        let outcome = tokio::select! {
            outcome = session(&shared, &url, &mut backoff) => outcome,
            _ = stop.cancelled() => return,
        };
        if let Err(err) = outcome {
            tracing::warn!(error = %Chain(&err), "death watch: session lost; reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One session's life. Dropped (on stop) in the middle of a wait, the
/// server notices the closed connection within a second
/// (`client_connection_check_interval`) and ends the wait.
async fn session(shared: &Shared, url: &str, backoff: &mut Backoff) -> Result<(), WatchError> {
    let (client, _ended) = connect_dedicated(url).await?;
    client
        .batch_execute(
            "SET statement_timeout = 0; SET lock_timeout = 0;
             SET client_connection_check_interval = '1s'",
        )
        .await?;
    let up: f64 = client
        .query_one(
            "SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8",
            &[],
        )
        .await?
        .get(0);
    let up = std::time::Duration::try_from_secs_f64(up).unwrap_or_default();
    *lock(&shared.server_started) = Instant::now().checked_sub(up);
    backoff.reset();
    let mut watched = shared.watched.subscribe();
    loop {
        let Some(peer) = *watched.borrow_and_update() else {
            if watched.changed().await.is_err() {
                return Ok(());
            }
            continue;
        };
        // Until then a free lock may only mean its holder has not
        // reconnected yet.
        if !shared.judges_by_lock() {
            let judges_at = shared.judges_by_lock_from();
            let mut session = shared.pubsub.watch_session();
            tokio::select! {
                _ = sleep_until_some(judges_at) => {}
                _ = session.changed() => {}
                _ = watched.changed() => {}
            }
            continue;
        }
        let wait = wait_for_lock(&client, peer);
        tokio::pin!(wait);
        tokio::select! {
            granted = &mut wait => granted?,
            _ = watched.changed() => {
                // Another peer to watch: stop waiting, and let go of the
                // old one's lock in case it was granted just now.
                client.cancel_token().cancel_query(tokio_postgres::NoTls).await?;
                let _ = wait.await;
                client.batch_execute("SELECT pg_advisory_unlock_all()").await?;
                continue;
            }
        }
        let detected = Instant::now();
        if !shared.judges_by_lock() {
            // Our own session was lost while we waited (a PostgreSQL
            // restart frees every lock): not a death we can judge.
            client
                .batch_execute("SELECT pg_advisory_unlock_all()")
                .await?;
            continue;
        }
        let recovered = shared.ops.recover_replica(peer).await;
        client
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .await?;
        match recovered {
            Ok(recovered) => {
                // A heartbeat's sweep may have been first: then it counted.
                if recovered.row_deleted || !recovered.chats.is_empty() {
                    shared
                        .metrics
                        .death(DeathCause::LockReleased.as_str(), detected.elapsed());
                    shared
                        .metrics
                        .recoveries
                        .add(recovered.chats.len() as u64, &[]);
                    tracing::warn!(replica = %peer, chats = recovered.chats.len(), "a peer's session ended; recovered its chats");
                }
                // Its row is gone: the next beat names the next peer.
                shared.watched.send_if_modified(|current| {
                    let same = *current == Some(peer);
                    if same {
                        *current = None;
                    }
                    same
                });
            }
            Err(err) => {
                tracing::warn!(replica = %peer, error = %Chain(&err), "recovering a dead peer's chats failed; the next heartbeat retries")
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits until `peer`'s advisory lock is granted to this session.
///
/// Not a blocking `SELECT pg_advisory_lock(…)`: a statement holds its
/// snapshot while it waits, and a snapshot held for a peer's whole life
/// holds back the database's xmin horizon, so neither vacuum nor page
/// pruning removes any row version that died since, and every index scan
/// wades through them (measured: the bench's PostgreSQL CPU per turn
/// doubled). Instead one `DO` block tries the lock every [`LOCK_POLL`] and
/// commits between tries, so its snapshot is never older than that; it is
/// still one statement for the peer's whole life, and costs the server a
/// lock try per poll.
async fn wait_for_lock(client: &Client, peer: ReplicaId) -> Result<(), tokio_postgres::Error> {
    // The key is an integer we format ourselves: no injection, and a `DO`
    // block takes no parameters.
    client
        .batch_execute(&format!(
            "DO $$ BEGIN
                 LOOP
                     EXIT WHEN pg_try_advisory_lock({key});
                     COMMIT;
                     PERFORM pg_sleep({poll});
                 END LOOP;
             END $$",
            key = peer.lock_key(),
            poll = LOCK_POLL.as_secs_f64(),
        ))
        .await
}
