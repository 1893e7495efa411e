//! Exponential backoff with jitter, for every reconnect loop (pubsub
//! listener, relay peers, the database at start).

use std::time::Duration;

use rand::Rng;

/// Delays that double from `min` up to `max`, each with ±`jitter` randomness
/// so that replicas that lost a connection together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max` with ±20% jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            jitter: 0.2,
            next: min,
        }
    }

    /// The 100 ms → 5 s backoff used for connections (DESIGN §5, §7).
    pub fn for_reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Sets the jitter fraction (0 disables it; tests use that).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The delay before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        jittered(base, self.jitter)
    }

    /// Back to `min`; call it only once the connection really works again
    /// (after LISTEN succeeded, not merely after connect).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `base` scaled by a random factor in `[1 - fraction, 1 + fraction]`.
pub fn jittered(base: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return base;
    }
    let factor = rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction));
    base.mul_f64(factor)
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
    fn jitter_stays_within_its_band() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..1000 {
            let delay = backoff.next_delay();
            assert!(
                delay >= Duration::from_millis(800) && delay <= Duration::from_millis(1200),
                "{delay:?}"
            );
        }
    }
}
