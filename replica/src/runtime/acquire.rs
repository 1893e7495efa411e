//! The acquirer: claims pending chats when woken (or on a jittered poll tick,
//! the fallback), up to the free slots, and starts a run for each. When to
//! claim is [`poll::AcquireClock`]'s rule; this file does the claiming.

use chatd_shared::error_chain::Chain;
use std::{sync::Arc, time::Duration};

use chatd_shared::db::DbError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::poll::{AcquireClock, AfterClaim, Wait};
use super::{Shared, spawn_run};
use crate::operations::Claim;

mod poll;

/// Runs until `stop` fires. A claim statement in flight is never cancelled;
/// rows it returns after `stop` fired are handed back at once.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let config = &shared.config;
    let mut wake = shared.pubsub.subscribe_wake();
    let mut clock = AcquireClock::new(config.poll_interval, config.acquire_batch);
    // The first pass claims at once: work may have been waiting for us.
    loop {
        if stop.is_cancelled() {
            return;
        }
        // Registered before looking at the free slots, so a run that ends
        // right after we looked still wakes us.
        let slot_freed = shared.registry.changed.notified();
        // Likewise for the lease reconciling a new listener session.
        let may_claim_again = shared.claimable.notified();
        if shared.may_claim() {
            let free = config
                .max_running_chats
                .saturating_sub(shared.registry.len());
            if let Some(limit) = clock.look(free) {
                match claim(&shared, limit as i64, &stop).await {
                    Ok(claimed) => {
                        if clock.claimed(claimed) == AfterClaim::ClaimAgain {
                            continue;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %Chain(&err), "claiming pending chats failed")
                    }
                }
            }
        } else {
            clock.skipped();
        }
        match clock.wait() {
            Wait::ForSlot => tokio::select! {
                _ = stop.cancelled() => return,
                _ = slot_freed => {}
            },
            Wait::WakeOrPoll(tick) => tokio::select! {
                _ = stop.cancelled() => return,
                _ = may_claim_again => {}
                delivery = wake.recv() => {
                    if delivery.is_none() {
                        // Pubsub closed: fall back to polling until told to stop.
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep_until(tick) => {}
                        }
                    }
                }
                _ = tokio::time::sleep_until(tick) => {}
            },
        }
    }
}

/// One claim. Returns how many chats were claimed and started.
async fn claim(
    shared: &Arc<Shared>,
    limit: i64,
    stop: &CancellationToken,
) -> Result<usize, DbError> {
    // Held from before the statement until every claimed run is registered,
    // so reconciliation never mistakes a fresh claim for an orphan.
    let _claiming = shared.claim_lock.lock().await;
    let started = Instant::now();
    // Phantom acquire: rows claimed once we are stopping (or fenced) go back at once.
    let still_acquiring = || !stop.is_cancelled() && shared.may_claim();
    let claim = shared
        .ops
        .claim(shared.config.replica_id, limit, still_acquiring)
        .await?;
    let claimed = match claim {
        Claim::Started(claimed) => claimed,
        Claim::HandedBack(count) => {
            shared.metrics.acquire_batch.record(count as u64, &[]);
            shared.metrics.hand_back(count, "phantom");
            return Ok(0);
        }
    };
    shared
        .metrics
        .acquire_batch
        .record(claimed.len() as u64, &[]);
    if claimed.is_empty() {
        return Ok(0);
    }
    shared.metrics.acquires.add(claimed.len() as u64, &[]);
    let count = claimed.len();
    for chat in claimed {
        shared
            .metrics
            .queue_wait
            .record(chat.queue_wait_secs.max(0.0), &[]);
        spawn_run(
            shared,
            chat.chat,
            Duration::from_secs_f64(chat.queue_wait_secs.max(0.0)),
        );
    }
    tracing::debug!(count, elapsed = ?started.elapsed(), "claimed chats");
    Ok(count)
}
