//! When to retry a failed provider call (DESIGN §8): exponential backoff
//! from 1 s, doubling, capped at 30 s, honouring the provider's Retry-After,
//! at most 10 attempts in all.

use std::time::Duration;

/// The retry schedule.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (the first call included).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub base: Duration,
    /// Longest delay computed from the backoff.
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
    /// failed; `None` when no attempt is left.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        let backoff = self
            .base
            .checked_mul(1u32 << (failed - 1).min(20))
            .unwrap_or(self.cap)
            .min(self.cap);
        Some(match retry_after {
            Some(wanted) => wanted.min(self.max_retry_after),
            None => backoff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_stops_after_ten_attempts() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = (1..=9)
            .map(|n| policy.delay(n, None).unwrap().as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(policy.delay(10, None), None, "ten attempts in all");
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

    #[tokio::test(start_paused = true)]
    async fn the_schedule_takes_the_time_it_says() {
        let policy = RetryPolicy::default();
        let start = tokio::time::Instant::now();
        let mut failed = 1;
        while let Some(delay) = policy.delay(failed, None) {
            tokio::time::sleep(delay).await;
            failed += 1;
        }
        // 1 + 2 + 4 + 8 + 16 + 30 * 4 seconds of waiting for ten attempts.
        assert_eq!(start.elapsed(), Duration::from_secs(151));
    }
}
