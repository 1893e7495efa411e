//! The worker's side of the lifecycle (ARCHITECTURE.md §3, §4): what a replica does
//! with the chats it runs. Writes a run makes are fenced on its
//! [`Fence`]; `None` from one means ownership was lost and the run must stop.

use std::{sync::Arc, time::Duration};

use chatd_shared::{
    db::{
        DbError, Pool,
        chats::BecamePending,
        lifecycle::{
            self, Beat, Claimed, Fence, OwnerWebhooks, RecoveredReplica, Released, StepMessage,
            TurnEnd,
        },
        messages::Message,
        turn_ends::TurnEndCall,
    },
    ids::{ChatId, Generation, ReplicaId},
    status::ChatStatus,
};

use super::{Change, ChatOps};

/// What [`ChatOps::claim`] did.
#[derive(Debug)]
pub enum Claim {
    /// These chats are now `running` here, under their new generations.
    Started(Vec<Claimed>),
    /// Chats were claimed after the acquirer was told to stop (or lost its
    /// lease) and were handed straight back: no phantom acquire (invariant 7).
    HandedBack(usize),
}

impl ChatOps {
    /// Claims up to `limit` pending chats for `worker`, oldest first, in one
    /// statement. `still_acquiring` is asked after the statement: when it
    /// says no, the chats go straight back to `pending`. Announces `running`
    /// (or, for chats handed back, `pending`).
    pub async fn claim(
        &self,
        worker: ReplicaId,
        limit: i64,
        still_acquiring: impl FnOnce() -> bool,
    ) -> Result<Claim, DbError> {
        let claimed = {
            let client = self.pool.get().await?;
            lifecycle::claim_pending(&client, worker, limit).await?
        };
        if claimed.is_empty() {
            return Ok(Claim::Started(claimed));
        }
        if !still_acquiring() {
            let runs: Vec<_> = claimed
                .iter()
                .map(|c| (c.chat.id, c.chat.generation))
                .collect();
            let back = self.hand_back(worker, &runs).await?;
            return Ok(Claim::HandedBack(back.len()));
        }
        self.announce(claimed.iter().map(|claimed| Change::Status {
            chat_id: claimed.chat.id,
            owner_id: claimed.chat.owner_id,
            status: ChatStatus::Running,
            generation: claimed.chat.generation,
            worker_id: Some(worker),
        }));
        Ok(Claim::Started(claimed))
    }

    /// Persists a run's step (its messages, in order) in one fenced
    /// statement; `None` when ownership was lost. Announces the messages.
    pub async fn persist_step(
        &self,
        fence: &Fence,
        step: &[StepMessage],
    ) -> Result<Option<Vec<Message>>, DbError> {
        let written = {
            let client = self.pool.get().await?;
            lifecycle::persist_step(&client, fence, step).await?
        };
        if let Some(written) = &written {
            self.announce(Change::messages(fence.chat_id, written));
        }
        Ok(written)
    }

    /// Ends a run's turn in one fenced statement, storing its last step
    /// first (if any): a queued message continues on this run, else the
    /// chat goes `waiting` (or `error`). `None` when ownership was lost.
    /// Announces the messages (the popped one last), then the queue change
    /// or the new status. Webhook deliveries the turn end queued (same
    /// statement) wake this replica's sender.
    pub async fn finish(
        &self,
        fence: &Fence,
        step: &[StepMessage],
        end: &TurnEnd,
        webhooks: OwnerWebhooks,
    ) -> Result<Option<(Vec<Message>, Released)>, Arc<DbError>> {
        let finished = match (&self.queues, webhooks) {
            (Some(queues), OwnerWebhooks::NoneSeen) => {
                let call = TurnEndCall::new(*fence, step, end.clone())?;
                match queues.turn_ends.run(call).await? {
                    Some(done) => Some(done),
                    // The owner has a webhook now, or the fence failed:
                    // the full statement, which finds which.
                    None => self.finish_alone(fence, step, end).await?,
                }
            }
            _ => self.finish_alone(fence, step, end).await?,
        };
        let Some((committed, released)) = finished else {
            return Ok(None);
        };
        if released.webhooks_queued > 0 {
            self.webhooks.wake();
        }
        let chat_id = fence.chat_id;
        let messages = Change::messages(chat_id, committed.iter().chain(released.next.as_ref()));
        let next = if released.next.is_some() {
            Change::Queue(chat_id)
        } else {
            Change::Status {
                chat_id,
                owner_id: released.owner_id,
                status: released.status,
                generation: fence.generation,
                worker_id: None,
            }
        };
        self.announce(messages.into_iter().chain([next]));
        if let Some(parent) = released.parent_chat_id
            && released.status.is_idle()
        {
            self.child_idle(parent, chat_id).await;
        }
        Ok(Some((committed, released)))
    }

    /// [`lifecycle::finish_turn`] alone, with the outbox.
    async fn finish_alone(
        &self,
        fence: &Fence,
        step: &[StepMessage],
        end: &TurnEnd,
    ) -> Result<Option<(Vec<Message>, Released)>, DbError> {
        let client = self.pool.get().await?;
        lifecycle::finish_turn(&client, fence, step, end, OwnerWebhooks::Unknown).await
    }

    /// Gives chats `worker` runs under these generations back to `pending`
    /// (generation + 1): shutdown, orphans, phantom claims. Rows that moved
    /// on are left alone. Announces `pending` for each chat handed back.
    pub async fn hand_back(
        &self,
        worker: ReplicaId,
        runs: &[(ChatId, Generation)],
    ) -> Result<Vec<BecamePending>, DbError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let back = {
            let client = self.pool.get().await?;
            lifecycle::hand_back(&client, worker, runs).await?
        };
        self.announce(back.iter().copied().map(Change::Pending));
        Ok(back)
    }

    /// One heartbeat of `replica` (see [`lifecycle::beat`]; `by_lock`: also
    /// recover replicas whose advisory lock is free) on `lease_pool` (the
    /// lease's own, so it never waits behind the runs it protects), given at most
    /// `lease_ttl`: on timeout the statement is cancelled on the server and
    /// its connection discarded, so it cannot delay whoever takes that
    /// connection next. Announces `pending` for the chats it recovered.
    pub async fn beat(
        &self,
        lease_pool: &Pool,
        replica: ReplicaId,
        lease_ttl: Duration,
        recovery_limit: i64,
        by_lock: bool,
    ) -> Result<Beat, BeatError> {
        let client = lease_pool.get().await.map_err(DbError::from)?;
        let cancel = client.cancel_token();
        let statement = lifecycle::beat(&client, replica, lease_ttl, recovery_limit, by_lock);
        let beat = match tokio::time::timeout(lease_ttl, statement).await {
            Ok(beat) => beat?,
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    cancel.cancel_query(tokio_postgres::NoTls),
                )
                .await;
                return Err(BeatError::Timeout(lease_ttl));
            }
        };
        self.announce(
            beat.recovered
                .iter()
                .chain(&beat.woken)
                .copied()
                .map(Change::Pending),
        );
        Ok(beat)
    }

    /// Recovers the chats of `dead`, whose advisory lock the caller holds
    /// (its session is gone): deletes its row, requeues its chats
    /// (generation + 1). Announces `pending` for each.
    pub async fn recover_replica(&self, dead: ReplicaId) -> Result<RecoveredReplica, DbError> {
        let recovered = {
            let client = self.pool.get().await?;
            lifecycle::recover_replica(&client, dead).await?
        };
        self.announce(recovered.chats.iter().copied().map(Change::Pending));
        Ok(recovered)
    }

    /// A model call of `fence`'s run failed and `attempt` follows after
    /// `delay_ms`: records the step's retries for the diagnosis endpoint
    /// (fenced) and announces the retry (clients drop the step's draft).
    /// `false` when ownership was lost (nothing is announced then).
    pub async fn retrying(
        &self,
        fence: &Fence,
        attempt: u32,
        delay_ms: u64,
        error: String,
    ) -> Result<bool, DbError> {
        let retries = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let owned = {
            let client = self.pool.get().await?;
            lifecycle::record_retry(&client, fence, retries).await?
        };
        if !owned {
            return Ok(false);
        }
        self.announce([Change::Retry {
            chat_id: fence.chat_id,
            generation: fence.generation,
            attempt,
            delay_ms,
            error,
        }]);
        Ok(true)
    }
}

/// Why a heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub enum BeatError {
    /// The statement failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No answer within the lease.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}
