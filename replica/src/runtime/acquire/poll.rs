//! When the acquirer claims, and what it waits for in between.

use std::time::Duration;

use chatd_shared::backoff::jittered;
use tokio::time::Instant;

/// How much the poll tick varies (±), so replicas started together do
/// not poll together.
const POLL_JITTER: f64 = 0.2;

/// What the acquirer waits for before it looks for work again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Every slot is taken: only a run that ends can make room, so a wake
    /// or a poll tick would find nothing to do, again and again.
    ForSlot,
    /// A wake notification, or the poll tick at this instant, whichever
    /// comes first.
    WakeOrPoll(Instant),
}

/// What to do after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterClaim {
    /// A full batch with slots to spare: more may be pending, claim again now.
    ClaimAgain,
    /// Wait (see [`AcquireClock::wait`]).
    Wait,
}

/// The acquirer's rule, without the database (ARCHITECTURE.md §4): claim up to
/// `min(batch, free slots)`; poll on a jittered tick counted from the last
/// look; with every slot taken, wait for a slot instead.
pub(crate) struct AcquireClock {
    poll_interval: Duration,
    batch: usize,
    /// When the acquirer last looked for work; the poll tick counts from here.
    looked_at: Instant,
    /// The free slots and the limit of the claim in progress.
    claiming: (usize, usize),
    /// The last look found (or left) every slot taken.
    starved: bool,
}

impl AcquireClock {
    /// Claims of at most `batch` chats, polled every `poll_interval` (±20 %).
    pub(crate) fn new(poll_interval: Duration, batch: usize) -> Self {
        Self {
            poll_interval,
            batch: batch.max(1),
            looked_at: Instant::now(),
            claiming: (0, 0),
            starved: false,
        }
    }

    /// A look for work now, with `free` slots: how many chats to claim,
    /// or `None` when no slot is free.
    pub(crate) fn look(&mut self, free: usize) -> Option<usize> {
        self.looked_at = Instant::now();
        self.starved = free == 0;
        if free == 0 {
            return None;
        }
        let limit = free.min(self.batch);
        self.claiming = (free, limit);
        Some(limit)
    }

    /// A pass without a look (no lease: nothing may be claimed). The tick
    /// restarts all the same, or the acquirer would spin until the lease
    /// came back.
    pub(crate) fn skipped(&mut self) {
        self.looked_at = Instant::now();
    }

    /// The claim [`Self::look`] asked for took `claimed` chats.
    pub(crate) fn claimed(&mut self, claimed: usize) -> AfterClaim {
        let (free, limit) = self.claiming;
        self.starved = claimed >= free;
        if claimed == limit && claimed < free {
            AfterClaim::ClaimAgain
        } else {
            AfterClaim::Wait
        }
    }

    /// What to wait for now. The poll tick is drawn anew on every call.
    pub(crate) fn wait(&self) -> Wait {
        if self.starved {
            return Wait::ForSlot;
        }
        Wait::WakeOrPoll(self.looked_at + jittered(self.poll_interval, POLL_JITTER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(1);

    fn poll_deadline(clock: &AcquireClock) -> Instant {
        match clock.wait() {
            Wait::WakeOrPoll(deadline) => deadline,
            Wait::ForSlot => panic!("expected to poll, not to wait for a slot"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_acquirer_polls_on_a_jittered_tick() {
        let mut clock = AcquireClock::new(POLL, 32);
        let mut gaps = Vec::new();
        for _ in 0..50 {
            let looked = Instant::now();
            assert_eq!(clock.look(10), Some(10));
            assert_eq!(clock.claimed(0), AfterClaim::Wait);
            tokio::time::sleep_until(poll_deadline(&clock)).await;
            gaps.push(looked.elapsed());
        }
        assert!(
            gaps.iter()
                .all(|gap| *gap >= POLL.mul_f64(0.8) && *gap <= POLL.mul_f64(1.2)),
            "{gaps:?}"
        );
        gaps.sort();
        gaps.dedup();
        assert!(gaps.len() > 1, "replicas must not poll in step: {gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tick_counts_from_the_last_look() {
        let mut clock = AcquireClock::new(POLL, 32);
        // A wake 700 ms in: the claim then moves the next tick.
        tokio::time::advance(Duration::from_millis(700)).await;
        let woken = Instant::now();
        clock.look(10);
        clock.claimed(1);
        let deadline = poll_deadline(&clock);
        assert!(
            deadline >= woken + POLL.mul_f64(0.8),
            "{:?}",
            deadline - woken
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_with_slots_to_spare_claims_again_at_once() {
        let mut clock = AcquireClock::new(POLL, 32);
        assert_eq!(clock.look(100), Some(32), "a batch at most");
        assert_eq!(clock.claimed(32), AfterClaim::ClaimAgain);
        assert_eq!(clock.look(68), Some(32));
        assert_eq!(clock.claimed(5), AfterClaim::Wait, "nothing more pending");
        assert!(matches!(clock.wait(), Wait::WakeOrPoll(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_slot_taken_it_waits_for_a_slot_however_long() {
        let mut clock = AcquireClock::new(POLL, 32);
        assert_eq!(clock.look(3), Some(3));
        assert_eq!(clock.claimed(3), AfterClaim::Wait);
        assert_eq!(clock.wait(), Wait::ForSlot, "the claim took the last slots");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.wait(), Wait::ForSlot, "no tick while starved");

        assert_eq!(clock.look(0), None, "still full: nothing to claim");
        assert_eq!(clock.wait(), Wait::ForSlot);

        assert_eq!(clock.look(1), Some(1), "a run ended");
        assert_eq!(clock.claimed(0), AfterClaim::Wait);
        assert!(
            matches!(clock.wait(), Wait::WakeOrPoll(_)),
            "a free slot: poll again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_lease_it_looks_again_a_tick_later_not_at_once() {
        let mut clock = AcquireClock::new(POLL, 32);
        clock.look(10);
        clock.claimed(0);
        // The lease lapses for a minute: passes go by without a look.
        tokio::time::advance(Duration::from_secs(60)).await;
        clock.skipped();
        let deadline = poll_deadline(&clock);
        assert!(
            deadline >= Instant::now() + POLL.mul_f64(0.8),
            "a deadline in the past would make the acquirer spin"
        );
    }
}
