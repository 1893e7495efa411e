//! Exponential backoff with full jitter: the one schedule for every reconnect
//! loop (pubsub listener, relay peers, the database at start, the load test)
//! and for provider retries.

use std::time::Duration;

use rand::Rng;

/// Delays whose ceiling doubles from `min` up to `max`; each delay is drawn
/// uniformly from `[0, ceiling]` ("full jitter").
///
/// Why full jitter: after one database restart every replica's listener and
/// every relay peer fails at the same instant, and after one 429 every chat
/// on that provider fails together. With a ±20 % band around the ceiling
/// they all come back within a fifth of a window of each other, attempt
/// after attempt; drawn from the whole window they arrive spread evenly
/// across it, so the server sees a trickle instead of waves. Of the
/// variants compared in "Exponential Backoff And Jitter" (AWS Architecture
/// Blog, 2015) full jitter does the least total work and finishes soonest.
/// "Equal jitter" (keep half the ceiling as a floor) only pays off when a
/// retry at once is harmful; here one early retry costs one failed connect
/// or one more 429, and the ceiling still doubles after it.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The random share of each delay: 1 draws from `[0, ceiling]`, 0 waits
    /// exactly the ceiling.
    jitter: f64,
    /// Delays handed out since the last reset.
    attempt: u32,
}

impl Backoff {
    /// A backoff whose ceiling starts at `min` and doubles up to `max`, with
    /// full jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            jitter: 1.0,
            attempt: 0,
        }
    }

    /// The 100 ms → 5 s backoff used for connections (ARCHITECTURE.md §5, §7).
    pub fn for_reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Sets the random share of each delay: each is drawn from
    /// `[(1 - fraction) · ceiling, ceiling]`. 1 (the default) is full
    /// jitter, 0.5 equal jitter, 0 none (tests use that).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The largest delay before retry `retry` (0 for the first):
    /// `min · 2^retry`, at most `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        // Past 2^30 the cap has long been reached (or the product overflows).
        self.min
            .checked_mul(1u32 << retry.min(30))
            .map_or(self.max, |ceiling| ceiling.min(self.max))
    }

    /// A delay before retry `retry` (0 for the first), drawn anew on every
    /// call. For callers that count their own attempts (provider retries).
    pub fn delay(&self, retry: u32) -> Duration {
        below(self.ceiling(retry), self.jitter)
    }

    /// The delay before the next attempt; each call doubles the ceiling of
    /// the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Back to `min`; call it only once the connection really works again
    /// (after LISTEN succeeded, not merely after connect).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A delay drawn from `[(1 - fraction) · ceiling, ceiling]`.
fn below(ceiling: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 || ceiling.is_zero() {
        return ceiling;
    }
    ceiling.mul_f64(rand::rng().random_range((1.0 - fraction)..=1.0))
}

/// `period` scaled by a random factor in `[1 - fraction, 1 + fraction]`:
/// for periodic work (the acquirer's poll tick) that replicas started
/// together must not do in step. Not a backoff: the period does not grow.
pub fn jittered(period: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return period;
    }
    let factor = rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction));
    period.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::for_reconnect().with_jitter(0.0);
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spreads_delays_over_the_whole_window() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..1000).map(|_| backoff.delay(0)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        // Uniform over [0, 1 s]: a thousand draws cover both ends of it.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(900)));
    }

    #[test]
    fn equal_jitter_keeps_half_the_ceiling() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).with_jitter(0.5);
        for _ in 0..1000 {
            let delay = backoff.delay(0);
            assert!(
                delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn the_ceiling_never_overflows() {
        let backoff = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(backoff.ceiling(0), Duration::from_secs(u64::MAX / 2));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::MAX);
    }

    #[test]
    fn a_periodic_jitter_stays_within_its_band() {
        for _ in 0..1000 {
            let period = jittered(Duration::from_secs(1), 0.2);
            assert!(
                period >= Duration::from_millis(800) && period <= Duration::from_millis(1200),
                "{period:?}"
            );
        }
    }
}
