//! The lease: one heartbeat statement every interval renews it, reads what
//! the database says we run, and recovers chats of dead replicas. The beat
//! then reconciles the local runs with the database, and if the lease cannot
//! be renewed before it expires the replica fences itself.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chatd_shared::{
    db::{DbError, lifecycle::Beat, replicas},
    error_chain::Chain,
    ids::{ChatId, Generation},
    sync::lock,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Shared, registry::StopReason};

/// How often expired replica rows are deleted (they go after an hour).
const REPLICA_GC_INTERVAL: Duration = Duration::from_secs(300);

/// The lease as this replica sees it. Its deadline counts from when a
/// renewal was *sent*, so the replica always believes its lease ends before
/// the database does, and stops its runs before anyone may take them.
pub(crate) struct LeaseClock {
    ttl: Duration,
    /// (deadline, valid)
    state: std::sync::Mutex<(Instant, bool)>,
}

impl LeaseClock {
    /// Invalid until the first renewal.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: std::sync::Mutex::new((Instant::now(), false)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Instant, bool)> {
        lock(&self.state)
    }

    /// When the lease ends unless renewed.
    pub(crate) fn deadline(&self) -> Instant {
        self.state().0
    }

    /// True while held.
    pub(crate) fn is_valid(&self) -> bool {
        self.state().1
    }

    /// A renewal sent at `sent_at` succeeded. Returns true when the lease
    /// was not held before (first renewal, or after a lapse).
    pub(crate) fn renewed(&self, sent_at: Instant) -> bool {
        let mut state = self.state();
        let was_valid = state.1;
        *state = (sent_at + self.ttl, true);
        !was_valid
    }

    /// The deadline passed. Returns true when the lease was held until now.
    pub(crate) fn lapse(&self) -> bool {
        std::mem::replace(&mut self.state().1, false)
    }
}

/// Runs until `stop` fires.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let config = &shared.config;
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gc = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(shared.lease_deadline()), if shared.lease_valid() => {
                fence_self(&shared);
                continue;
            }
        }
        // A slow beat must not keep the deadline from being noticed: watch
        // both. Beats never overlap, so a slow database gets no pile-up.
        let beat = heartbeat(&shared);
        tokio::pin!(beat);
        loop {
            tokio::select! {
                _ = &mut beat => break,
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(shared.lease_deadline()), if shared.lease_valid() => fence_self(&shared),
            }
        }
        if last_gc.elapsed() >= REPLICA_GC_INTERVAL {
            last_gc = Instant::now();
            let deleted = async {
                let client = shared.pool.get().await?;
                replicas::delete_expired(&client, config.replica_row_retention).await
            };
            match deleted.await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "deleted replica rows expired for over an hour"),
                Err(err) => {
                    tracing::warn!(error = %Chain(&err), "deleting expired replica rows failed")
                }
            }
        }
    }
}

/// The lease lapsed: others may take our chats now, so every run stops.
fn fence_self(shared: &Shared) {
    if !shared.lease.lapse() {
        return;
    }
    let stopped = shared.registry.stop_all(StopReason::LeaseLost);
    shared.metrics.lease_lost.add(1, &[]);
    tracing::error!(
        runs = stopped,
        "lease expired before it could be renewed; stopped every run"
    );
}

/// One beat: renew, recover (announced by the operation), reconcile; then
/// claiming may go on under the session the beat began in.
pub(crate) async fn heartbeat(shared: &Arc<Shared>) {
    let config = &shared.config;
    let started = Instant::now();
    let session = shared.pubsub.session();
    let outcome = shared
        .ops
        .beat(
            &shared.lease_pool,
            config.replica_id,
            config.lease_ttl,
            config.recovery_batch,
            shared.judges_by_lock(),
        )
        .await;
    shared
        .metrics
        .lease_renew
        .record(started.elapsed().as_secs_f64(), &[]);
    let beat = match outcome {
        Ok(beat) => beat,
        Err(err) => return beat_failed(shared, &err),
    };
    if !beat.lease_renewed {
        // Our row is gone (our session ended and a peer recovered our chats,
        // or it expired): whatever we run may be someone else's now. Stop
        // everything, then register again, but only while our lock is held.
        fence_self(shared);
        if session.is_none() {
            tracing::warn!(
                "replica row missing and no listener session; registering once it is back"
            );
            return;
        }
        if let Err(err) = shared.register().await {
            return beat_failed(shared, &err);
        }
        tracing::warn!("replica row was missing; registered again");
    }
    // The lease now reaches `started + ttl` at the earliest (measured from
    // before the statement was sent, so we expire before the database thinks).
    shared.renewed_at(started);
    if !beat.recovered.is_empty() {
        shared
            .metrics
            .recoveries
            .add(beat.recovered.len() as u64, &[]);
        tracing::info!(
            count = beat.recovered.len(),
            "requeued chats of dead replicas"
        );
    }
    for death in &beat.deaths {
        shared
            .metrics
            .death(death.cause.as_str(), started.elapsed());
        tracing::warn!(replica = %death.replica, cause = death.cause.as_str(), "found a dead replica");
    }
    shared.watched.send_if_modified(|watched| {
        let changed = *watched != beat.watch;
        *watched = beat.watch;
        changed
    });
    if let Err(err) = reconcile(shared, &beat, started).await {
        tracing::warn!(error = %Chain(&err), "reconciling runs with the database failed");
        return;
    }
    // Runs of an earlier session were reconciled against what the database
    // said after this session began: claiming may go on under it.
    if let Some(session) = session
        && shared.pubsub.session() == Some(session)
    {
        let before = shared
            .reconciled
            .swap(session.epoch, std::sync::atomic::Ordering::AcqRel);
        if before != session.epoch {
            shared.claimable.notify_waiters();
        }
    }
}

fn beat_failed(shared: &Shared, error: &(dyn std::error::Error + 'static)) {
    shared.metrics.lease_failures.add(1, &[]);
    let left = shared
        .lease_deadline()
        .saturating_duration_since(Instant::now());
    tracing::warn!(error = %Chain(error), lease_left = ?left, "heartbeat failed");
}

/// Makes the local runs agree with what the database said at `read_at`.
async fn reconcile(shared: &Arc<Shared>, beat: &Beat, read_at: Instant) -> Result<(), DbError> {
    let owned: HashMap<ChatId, (Generation, bool)> = beat
        .owned
        .iter()
        .map(|run| (run.chat_id, (run.generation, run.interrupt_requested)))
        .collect();

    // Runs the database no longer gives us. Runs registered after the read
    // began may simply not be visible to it yet: leave them.
    let mut stale = 0;
    let mut interrupts = 0;
    for (chat_id, generation, registered_at, control) in shared.registry.snapshot() {
        match owned.get(&chat_id) {
            Some((db_generation, interrupt)) if *db_generation == generation => {
                // A flag read before the run's last release may be one that
                // release already handled: only trust reads that began after it.
                if *interrupt && !control.is_interrupted() && control.turn_started_before(read_at) {
                    control.interrupt();
                    interrupts += 1;
                }
            }
            _ if registered_at >= read_at => {}
            _ => {
                control.stop(StopReason::OwnershipLost);
                stale += 1;
            }
        }
    }
    shared.metrics.reconciled(stale, "cancel_stale");
    shared.metrics.reconciled(interrupts, "interrupt");

    // Rows we own that nothing runs (a run that died without releasing).
    // Holding the claim lock means every claim the read could see is registered.
    // A claim waiting for a busy pool holds that lock; the beat does not wait
    // for it (its next renewal would be late): orphans are rare and are
    // looked for again at the next beat.
    let claims = tokio::time::timeout(
        shared.config.heartbeat_interval / 2,
        shared.claim_lock.lock(),
    )
    .await;
    let Ok(held) = claims else {
        return Ok(());
    };
    let orphans: Vec<(ChatId, Generation)> = beat
        .owned
        .iter()
        .filter(|run| {
            shared
                .registry
                .control(run.chat_id, run.generation)
                .is_none()
        })
        .map(|run| (run.chat_id, run.generation))
        .collect();
    drop(held);
    let back = shared
        .ops
        .hand_back(shared.config.replica_id, &orphans)
        .await?;
    shared.metrics.reconciled(back.len(), "hand_back_orphan");
    shared.metrics.hand_back(back.len(), "orphan");
    if !back.is_empty() {
        tracing::warn!(
            count = back.len(),
            "handed back chats this replica owned but was not running"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_when_the_renewal_was_sent() {
        let clock = LeaseClock::new(Duration::from_secs(10));
        assert!(!clock.is_valid(), "no lease before the first renewal");
        let sent = Instant::now();
        // The answer takes 3 s; the lease still ends 10 s after sending.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(clock.renewed(sent), "first renewal makes it valid");
        assert_eq!(clock.deadline(), sent + Duration::from_secs(10));

        tokio::time::sleep_until(clock.deadline()).await;
        assert_eq!(Instant::now() - sent, Duration::from_secs(10));
        assert!(clock.lapse(), "it was held until the deadline");
        assert!(!clock.lapse(), "a second lapse changes nothing");
        assert!(!clock.is_valid());

        let again = Instant::now();
        assert!(
            clock.renewed(again),
            "a renewal after a lapse makes it valid again"
        );
        assert!(
            !clock.renewed(again),
            "a renewal of a held lease is not a change"
        );
    }
}
