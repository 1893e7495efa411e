//! The batching publisher: notices queued by any task go out together in one
//! `pg_notify … FROM unnest(…)` statement, outside any caller's transaction
//! (NOTIFY inside a transaction takes a cluster-wide lock at commit).

use crate::error_chain::Chain;
use std::time::Duration;

use crate::db::Pool;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{metrics::PubSubMetrics, notice::Channel};

/// How the publisher batches.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// At most one batch goes out per window: a notice that arrives after a
    /// quiet window goes out at once (no added latency when idle); under load
    /// everything queued within a window shares one statement.
    pub batch_window: Duration,
    /// Send as soon as a batch holds this many notices.
    pub max_batch: usize,
    /// Notices waiting to be sent at most; past it they are dropped with a metric.
    pub queue_capacity: usize,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_millis(2),
            max_batch: 500,
            queue_capacity: 65_536,
        }
    }
}

/// One queued notification.
pub(crate) struct Outgoing {
    pub channel: Channel,
    pub payload: String,
}

const NOTIFY_BATCH: &str = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)";

/// The batching rule, apart from the queue it reads and the statement it
/// feeds: at most one batch per window, none held back after a quiet one.
pub(crate) struct BatchWindow {
    window: Duration,
    max_batch: usize,
    /// When the last batch went out; the next may go at `last_sent + window`.
    last_sent: Instant,
}

impl BatchWindow {
    /// A window that lets the first notice go at once.
    pub(crate) fn new(window: Duration, max_batch: usize) -> Self {
        let now = Instant::now();
        Self {
            window,
            max_batch: max_batch.max(1),
            last_sent: now.checked_sub(window).unwrap_or(now),
        }
    }

    /// Gathers the batch that `first` opens: whatever else is queued, and
    /// whatever arrives before the window since the last batch closes, up
    /// to `max_batch`. A closed queue ends the gathering early.
    pub(crate) async fn gather<T>(&mut self, first: T, queue: &mut mpsc::Receiver<T>) -> Vec<T> {
        let mut batch = Vec::with_capacity(self.max_batch.min(64));
        batch.push(first);
        let closes = self.last_sent + self.window;
        while batch.len() < self.max_batch {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(closes, queue.recv()).await {
                        Ok(Some(item)) => batch.push(item),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        self.last_sent = Instant::now();
        batch
    }
}

/// Runs until `cancel` fires, then sends what is queued and returns.
pub(crate) async fn run(
    pool: Pool,
    config: PublisherConfig,
    mut queue: mpsc::Receiver<Outgoing>,
    metrics: PubSubMetrics,
    cancel: CancellationToken,
) {
    let mut window = BatchWindow::new(config.batch_window, config.max_batch);
    loop {
        let first = tokio::select! {
            biased;
            item = queue.recv() => item,
            _ = cancel.cancelled() => None,
        };
        let Some(first) = first else {
            // Shutting down: flush whatever is still queued, then stop.
            queue.close();
            let mut batch = Vec::with_capacity(config.max_batch);
            while let Ok(item) = queue.try_recv() {
                batch.push(item);
                if batch.len() == config.max_batch {
                    send(&pool, &mut batch, &metrics).await;
                }
            }
            send(&pool, &mut batch, &metrics).await;
            return;
        };
        let mut batch = window.gather(first, &mut queue).await;
        send(&pool, &mut batch, &metrics).await;
    }
}

async fn send(pool: &Pool, batch: &mut Vec<Outgoing>, metrics: &PubSubMetrics) {
    if batch.is_empty() {
        return;
    }
    let channels: Vec<&str> = batch.iter().map(|item| item.channel.name()).collect();
    let payloads: Vec<&str> = batch.iter().map(|item| item.payload.as_str()).collect();
    let bytes: usize = payloads.iter().map(|p| p.len()).sum();
    let outcome = async {
        let client = pool.get().await?;
        let stmt = client.prepare_cached(NOTIFY_BATCH).await?;
        client.execute(&stmt, &[&channels, &payloads]).await?;
        Ok::<_, crate::db::DbError>(())
    }
    .await;
    match outcome {
        Ok(()) => {
            metrics.publish_batches.add(1, &[]);
            metrics.publishes.add(batch.len() as u64, &[]);
            metrics.publish_bytes.add(bytes as u64, &[]);
        }
        Err(err) => {
            // Notices are hints: receivers have polling fallbacks. Count and move on.
            metrics.publish_failures.add(1, &[]);
            tracing::warn!(error = %Chain(&err), notices = batch.len(), "publishing notifications failed");
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    // Larger than the real 2 ms: tokio's timers count whole milliseconds.
    const WINDOW: Duration = Duration::from_millis(20);

    /// Sends `items` into a queue, each after waiting its delay.
    fn producer(items: Vec<(Duration, u32)>) -> mpsc::Receiver<u32> {
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            for (delay, item) in items {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if sender.send(item).await.is_err() {
                    return;
                }
            }
            // Keep the queue open: a closed one ends a batch early.
            std::future::pending::<()>().await;
        });
        receiver
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[tokio::test(start_paused = true)]
    async fn a_notice_after_a_quiet_window_goes_out_at_once() {
        let start = Instant::now();
        let mut window = BatchWindow::new(WINDOW, 500);
        let mut queue = producer(vec![(ms(0), 1), (ms(100), 2)]);

        let first = queue.recv().await.unwrap();
        assert_eq!(window.gather(first, &mut queue).await, [1]);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first notice waits for nothing"
        );

        let second = queue.recv().await.unwrap();
        assert_eq!(window.gather(second, &mut queue).await, [2]);
        assert_eq!(
            start.elapsed(),
            ms(100),
            "after a quiet window nothing is added to the latency"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_everything_within_a_window_shares_one_batch() {
        let start = Instant::now();
        let mut window = BatchWindow::new(WINDOW, 500);
        // 1 goes at once; 2 and 3 come within the next window (at 5 and
        // 10 ms); 4 after it (at 45 ms).
        let mut queue = producer(vec![(ms(0), 1), (ms(5), 2), (ms(5), 3), (ms(35), 4)]);

        let first = queue.recv().await.unwrap();
        assert_eq!(window.gather(first, &mut queue).await, [1]);

        let next = queue.recv().await.unwrap();
        assert_eq!(window.gather(next, &mut queue).await, [2, 3]);
        assert_eq!(start.elapsed(), WINDOW, "the batch closed with its window");

        let last = queue.recv().await.unwrap();
        assert_eq!(window.gather(last, &mut queue).await, [4]);
        assert_eq!(
            start.elapsed(),
            ms(45),
            "4 came after the window closed: at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_without_waiting_for_its_window() {
        let start = Instant::now();
        let mut window = BatchWindow::new(WINDOW, 3);
        let mut queue = producer((1..=7).map(|item| (Duration::ZERO, item)).collect());

        let first = queue.recv().await.unwrap();
        assert_eq!(window.gather(first, &mut queue).await, [1, 2, 3]);
        let next = queue.recv().await.unwrap();
        assert_eq!(window.gather(next, &mut queue).await, [4, 5, 6]);
        assert_eq!(start.elapsed(), Duration::ZERO, "full batches never wait");
        let last = queue.recv().await.unwrap();
        assert_eq!(window.gather(last, &mut queue).await, [7]);
        assert_eq!(
            start.elapsed(),
            WINDOW,
            "a partial batch waits out its window"
        );
    }
}
