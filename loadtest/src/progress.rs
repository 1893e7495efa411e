//! The live progress line on stderr: rewritten in place on a terminal,
//! one plain line per tick otherwise (logs, CI).

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use tokio::time::Instant;

use crate::{report::format_micros, stats::Counters};

/// Prints progress about once a second.
pub struct Progress {
    enabled: bool,
    in_place: bool,
    /// When the current phase (setup, turns) began.
    started: Instant,
    /// Completed turns and when, at the previous tick: the rate is recent.
    last: Option<(Instant, u64)>,
    /// A line was left without its newline.
    open_line: bool,
}

impl Progress {
    /// Progress on stderr when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            in_place: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            open_line: false,
        }
    }

    /// Counts the time shown from now (the turn phase begins).
    pub fn restart(&mut self) {
        self.started = Instant::now();
        self.last = None;
    }

    /// While chats are being set up.
    pub fn setup(&mut self, counters: &Counters, chats: usize) {
        let line = setup_line(self.started.elapsed(), counters, chats);
        self.print(&line);
    }

    /// While turns are taken.
    pub fn turns(&mut self, counters: &Counters, planned: u64, median: Option<Duration>) {
        let now = Instant::now();
        let rate = match self.last {
            Some((then, done)) if now > then => {
                (counters.turns_completed.saturating_sub(done)) as f64
                    / now.duration_since(then).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last = Some((now, counters.turns_completed));
        let line = turns_line(self.started.elapsed(), counters, planned, rate, median);
        self.print(&line);
    }

    /// Ends an in-place line so the report starts on its own line.
    pub fn finish(&mut self) {
        if self.open_line {
            let _ = writeln!(std::io::stderr().lock());
            self.open_line = false;
        }
    }

    fn print(&mut self, line: &str) {
        if !self.enabled {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        if self.in_place {
            // Back to the line's start, write, clear what an older, longer line left.
            let _ = write!(stderr, "\r{line}\x1b[K");
            self.open_line = true;
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
}

fn setup_line(elapsed: Duration, counters: &Counters, chats: usize) -> String {
    format!(
        "[{:>6.1} s] setting up: {}/{chats} chats ready · {} failures",
        elapsed.as_secs_f64(),
        counters.chats_ready,
        counters.failures
    )
}

fn turns_line(
    elapsed: Duration,
    counters: &Counters,
    planned: u64,
    rate: f64,
    median: Option<Duration>,
) -> String {
    let median = median.map_or_else(
        || "-".to_owned(),
        |median| format_micros(u64::try_from(median.as_micros()).unwrap_or(u64::MAX)),
    );
    format!(
        "[{:>6.1} s] turns {}/{planned} · {rate:.0} turns/s · {} failures · p50 turn {median}",
        elapsed.as_secs_f64(),
        counters.turns_completed,
        counters.failures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_how_far_the_run_is() {
        let counters = Counters {
            turns_completed: 1200,
            chats_ready: 40,
            failures: 2,
            ..Counters::default()
        };
        assert_eq!(
            setup_line(Duration::from_millis(2500), &counters, 50),
            "[   2.5 s] setting up: 40/50 chats ready · 2 failures"
        );
        assert_eq!(
            turns_line(
                Duration::from_secs(12),
                &counters,
                5000,
                987.4,
                Some(Duration::from_micros(45_200))
            ),
            "[  12.0 s] turns 1200/5000 · 987 turns/s · 2 failures · p50 turn 45.2 ms"
        );
        assert!(turns_line(Duration::ZERO, &counters, 5000, 0.0, None).ends_with("p50 turn -"));
    }
}
