//! The relay's liveness rule, the same on both ends of a connection
//! (ARCHITECTURE.md §7): ping every `ping_interval`; a peer not heard from for
//! `idle_timeout` (no frame, no pong) is gone.

use std::time::Duration;

use tokio::time::Instant;

/// What is due when a connection's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a ping.
    Ping,
    /// The peer has been silent too long: drop the connection.
    Gone,
    /// Nothing yet (woken early: the peer was heard since the timer was set).
    Nothing,
}

/// One connection's ping schedule and the last time the peer was heard.
/// Hearing from the peer costs no timer: the connection wakes at
/// [`Self::wake_at`], and [`Self::wake`] decides then.
pub(crate) struct Pulse {
    ping_interval: Duration,
    idle_timeout: Duration,
    last_heard: Instant,
    next_ping: Instant,
}

impl Pulse {
    /// A connection that just opened: heard now, first ping one interval on.
    pub(crate) fn new(ping_interval: Duration, idle_timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            ping_interval,
            idle_timeout,
            last_heard: now,
            next_ping: now + ping_interval,
        }
    }

    /// Anything arrived from the peer.
    pub(crate) fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// When the connection's timer should fire next.
    pub(crate) fn wake_at(&self) -> Instant {
        self.next_ping.min(self.last_heard + self.idle_timeout)
    }

    /// The timer fired: what is due now. A ping due now schedules the next
    /// one interval later.
    pub(crate) fn wake(&mut self) -> Due {
        let now = Instant::now();
        if now >= self.last_heard + self.idle_timeout {
            return Due::Gone;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.ping_interval;
            return Due::Ping;
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Sleeps to each wake-up until the peer is gone, hearing from it at
    /// `heard_at` (seconds from the start); returns the pings' and the
    /// end's times.
    async fn follow(mut pulse: Pulse, heard_at: &[u64]) -> (Vec<Duration>, Duration) {
        let start = Instant::now();
        let mut heard = heard_at.iter().map(|&at| start + secs(at)).peekable();
        let mut pings = Vec::new();
        loop {
            match heard.peek() {
                Some(&at) if at <= pulse.wake_at() => {
                    tokio::time::sleep_until(at).await;
                    pulse.heard();
                    heard.next();
                    continue;
                }
                _ => tokio::time::sleep_until(pulse.wake_at()).await,
            }
            match pulse.wake() {
                Due::Ping => pings.push(start.elapsed()),
                Due::Gone => return (pings, start.elapsed()),
                Due::Nothing => {}
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_pinged_every_five_seconds_and_gone_after_fifteen() {
        let (pings, gone) = follow(Pulse::new(secs(5), secs(15)), &[]).await;
        assert_eq!(pings, [secs(5), secs(10)]);
        assert_eq!(gone, secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_counts_from_the_last_frame_heard() {
        let (pings, gone) = follow(Pulse::new(secs(5), secs(15)), &[7]).await;
        assert_eq!(pings, [secs(5), secs(10), secs(15), secs(20)]);
        assert_eq!(gone, secs(22), "15 s after the frame at 7 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_every_ping_stays() {
        // A pong a second after each ping, for a minute; then silence.
        let pongs: Vec<u64> = (1..=12).map(|n| n * 5 + 1).collect();
        let (pings, gone) = follow(Pulse::new(secs(5), secs(15)), &pongs).await;
        let every_five: Vec<Duration> = (1..=15).map(|n| secs(n * 5)).collect();
        assert_eq!(pings, every_five, "pinged every 5 s until gone");
        assert_eq!(gone, secs(76), "15 s after the last pong at 61 s");
    }
}
