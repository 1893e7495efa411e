//! The batching publisher: notices queued by any task go out together in one
//! `pg_notify … FROM unnest(…)` statement, outside any caller's transaction
//! (NOTIFY inside a transaction takes a cluster-wide lock at commit).

use crate::error_chain::Chain;
use std::time::Duration;

use deadpool_postgres::Pool;
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

/// Runs until `cancel` fires, then sends what is queued and returns.
pub(crate) async fn run(
    pool: Pool,
    config: PublisherConfig,
    mut queue: mpsc::Receiver<Outgoing>,
    metrics: PubSubMetrics,
    cancel: CancellationToken,
) {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(config.max_batch);
    // When the last batch went out; the next may go at `last_sent + window`.
    let mut last_sent = Instant::now() - config.batch_window;
    loop {
        let first = tokio::select! {
            biased;
            item = queue.recv() => item,
            _ = cancel.cancelled() => None,
        };
        let Some(first) = first else {
            // Shutting down: flush whatever is still queued, then stop.
            queue.close();
            while let Ok(item) = queue.try_recv() {
                batch.push(item);
                if batch.len() == config.max_batch {
                    send(&pool, &mut batch, &metrics).await;
                }
            }
            send(&pool, &mut batch, &metrics).await;
            return;
        };
        batch.push(first);
        let deadline = last_sent + config.batch_window;
        while batch.len() < config.max_batch {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(item)) => batch.push(item),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        last_sent = Instant::now();
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
