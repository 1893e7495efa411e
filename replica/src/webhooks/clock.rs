//! When the sender claims due deliveries, without the database: a pure
//! type, tested with paused time (the acquirer's `AcquireClock` is the model).

use std::time::Duration;

use chatd_shared::backoff::jittered;
use tokio::time::Instant;

/// How much the poll tick varies (±), so replicas do not poll in step.
const POLL_JITTER: f64 = 0.2;

/// The sender's rule: claim at once when hinted (a turn end on this replica
/// queued a delivery), when a retry this replica scheduled comes due, when
/// the last claim was full (more may be due), or on the poll tick (work
/// another replica queued, or left behind when it died); never with every
/// slot taken. An idle sender costs one statement per poll interval.
#[derive(Debug)]
pub(crate) struct SendClock {
    poll_interval: Duration,
    max_in_flight: usize,
    /// The next poll tick.
    poll_at: Instant,
    /// The earliest retry this replica scheduled and has not claimed since.
    retry_at: Option<Instant>,
    /// Something is (probably) due now.
    due_now: bool,
}

impl SendClock {
    /// Polls every `poll_interval` (±20 %), at most `max_in_flight` attempts
    /// at once. Due at once: a starting sender looks for work first.
    pub(crate) fn new(poll_interval: Duration, max_in_flight: usize) -> Self {
        Self {
            poll_interval,
            max_in_flight: max_in_flight.max(1),
            poll_at: Instant::now(),
            retry_at: None,
            due_now: true,
        }
    }

    /// How many deliveries to claim now with `in_flight` attempts running,
    /// or `None` when it is not time (or no slot is free).
    pub(crate) fn look(&mut self, in_flight: usize) -> Option<usize> {
        let now = Instant::now();
        let free = self.max_in_flight.saturating_sub(in_flight);
        let retry_due = self.retry_at.is_some_and(|at| at <= now);
        if free == 0 || !(self.due_now || retry_due || self.poll_at <= now) {
            return None;
        }
        self.due_now = false;
        if retry_due {
            self.retry_at = None;
        }
        self.poll_at = now + jittered(self.poll_interval, POLL_JITTER);
        Some(free)
    }

    /// A claim of `limit` returned `got`: a full one means more may be due.
    pub(crate) fn claimed(&mut self, limit: usize, got: usize) {
        if got >= limit {
            self.due_now = true;
        }
    }

    /// A turn end here queued deliveries, or an attempt freed a slot while
    /// claims were full.
    pub(crate) fn hint(&mut self) {
        self.due_now = true;
    }

    /// An attempt failed and is due again at `at`.
    pub(crate) fn retry_at(&mut self, at: Instant) {
        self.retry_at = Some(self.retry_at.map_or(at, |earlier| earlier.min(at)));
    }

    /// When to look again if nothing happens before.
    pub(crate) fn next_look(&self) -> Instant {
        if self.due_now {
            return Instant::now();
        }
        self.retry_at
            .map_or(self.poll_at, |retry| retry.min(self.poll_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claims_at_start_then_on_hints_retries_and_the_poll_tick_only() {
        let mut clock = SendClock::new(Duration::from_secs(10), 4);
        assert_eq!(clock.look(0), Some(4), "a starting sender looks at once");
        clock.claimed(4, 1);
        assert_eq!(clock.look(1), None, "nothing due: wait");
        assert!(clock.next_look() >= Instant::now() + Duration::from_secs(8));

        clock.hint();
        assert_eq!(
            clock.look(1),
            Some(3),
            "a hint claims at once, up to the free slots"
        );
        clock.claimed(3, 3);
        assert_eq!(clock.look(4), None, "a full claim waits for a free slot");
        assert_eq!(clock.look(2), Some(2), "then claims again");
        clock.claimed(2, 0);

        clock.retry_at(Instant::now() + Duration::from_secs(2));
        assert_eq!(clock.next_look(), Instant::now() + Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.look(0), Some(4), "a retry comes due");
        clock.claimed(4, 1);
        assert_eq!(clock.look(1), None);

        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(
            clock.look(1),
            Some(3),
            "the poll tick finds work others left"
        );
    }
}
