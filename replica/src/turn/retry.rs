//! When to retry a failed provider call (ARCHITECTURE.md §8): exponential backoff
//! from 1 s, doubling, capped at 30 s, with full jitter so that the chats
//! one 429 hit together do not retry together; honouring the provider's
//! Retry-After; at most 10 attempts in all.

use std::time::Duration;

use chatd_shared::backoff::Backoff;

/// The retry schedule.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (the first call included).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub base: Duration,
    /// Longest backoff ceiling (each delay is drawn from `[0, ceiling]`).
    pub cap: Duration,
    /// Longest delay accepted from a Retry-After header.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed + 1`, after attempt `failed` (from 1)
    /// failed; `None` when no attempt is left. A Retry-After is taken as
    /// given (bounded); otherwise the delay is drawn from
    /// `[0, base · 2^(failed - 1)]`, at most `cap`.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        Some(match retry_after {
            Some(wanted) => wanted.min(self.max_retry_after),
            None => self.backoff().delay(failed.saturating_sub(1)),
        })
    }

    /// The largest delay the backoff may give after attempt `failed` failed.
    pub fn ceiling(&self, failed: u32) -> Duration {
        self.backoff().ceiling(failed.saturating_sub(1))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.base, self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// `samples` delays after attempt `failed` failed, without Retry-After.
    fn delays(policy: &RetryPolicy, failed: u32, samples: usize) -> Vec<Duration> {
        (0..samples)
            .map(|_| policy.delay(failed, None).expect("attempts left"))
            .collect()
    }

    #[test]
    fn the_ceiling_doubles_from_one_second_to_the_cap() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=9).map(|n| policy.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
    }

    #[test]
    fn delays_are_drawn_from_zero_to_the_ceiling() {
        let policy = RetryPolicy::default();
        for failed in 1..=9 {
            let ceiling = policy.ceiling(failed);
            let drawn = delays(&policy, failed, 200);
            assert!(
                drawn.iter().all(|delay| *delay <= ceiling),
                "after attempt {failed}: {drawn:?} over {ceiling:?}"
            );
            // The whole window is used, not a band around its top.
            assert!(
                drawn.iter().any(|delay| *delay < ceiling / 4),
                "after attempt {failed}"
            );
        }
    }

    #[test]
    fn chats_that_failed_together_do_not_retry_together() {
        // A hundred chats hit by the same 429 (without Retry-After).
        let mut drawn = delays(&RetryPolicy::default(), 1, 100);
        drawn.sort();
        drawn.dedup();
        assert!(drawn.len() > 90, "only {} distinct delays", drawn.len());
    }

    #[test]
    fn the_cap_bounds_every_delay() {
        let policy = RetryPolicy {
            max_attempts: 100,
            ..RetryPolicy::default()
        };
        for failed in [6, 10, 31, 32, 64, 99] {
            assert_eq!(policy.ceiling(failed), secs(30), "after attempt {failed}");
            assert!(delays(&policy, failed, 50).iter().all(|d| *d <= secs(30)));
        }
    }

    #[test]
    fn ten_attempts_in_all() {
        let policy = RetryPolicy::default();
        assert!(
            policy.delay(9, None).is_some(),
            "a tenth attempt follows the ninth"
        );
        assert_eq!(policy.delay(10, None), None, "ten attempts in all");
        assert_eq!(
            policy.delay(11, Some(secs(1))),
            None,
            "even with Retry-After"
        );
    }

    #[test]
    fn retry_after_wins_but_is_bounded() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(policy.delay(1, Some(Duration::ZERO)), Some(Duration::ZERO));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn retry_after_is_taken_as_given_even_past_the_cap() {
        let policy = RetryPolicy::default();
        for failed in 1..=9 {
            assert_eq!(policy.delay(failed, Some(secs(45))), Some(secs(45)));
        }
    }
}
