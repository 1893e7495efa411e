//! A pubsub for tests: started, connected, and stopped on request.

use std::time::Duration;

use crate::db::Pool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{TestDb, eventually, wait_for};
use crate::{
    ids::ReplicaId,
    pubsub::{PubSub, PubSubConfig},
};

const CONNECT: Duration = Duration::from_secs(30);

/// A [`PubSub`] with its own tasks, LISTENing by the time `start` returns.
pub struct TestPubSub {
    /// The handle.
    pub pubsub: PubSub,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl TestPubSub {
    /// A pubsub for a fresh replica id on `db`'s pool.
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(ReplicaId::new_random(), db.url(), db.pool().clone()).await
    }

    /// A pubsub for `replica_id`, listening on `url`, publishing through `pool`.
    pub async fn start_with(replica_id: ReplicaId, url: &str, pool: Pool) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let meter = opentelemetry::global::meter("test");
        let pubsub = PubSub::start(
            replica_id,
            url,
            pool,
            PubSubConfig::default(),
            &meter,
            &tracker,
            cancel.clone(),
        );
        wait_connected(&pubsub, CONNECT).await;
        Self {
            pubsub,
            cancel,
            tracker,
        }
    }

    /// Stops the listener and the publisher (after it sent what is queued).
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        wait_for("pubsub tasks to stop", CONNECT, self.tracker.wait()).await;
    }

    /// Stops at once without waiting (a crash).
    pub fn kill(self) {
        self.cancel.cancel();
    }
}

/// Waits until `pubsub`'s listener is connected and LISTENing.
pub async fn wait_connected(pubsub: &PubSub, timeout: Duration) {
    eventually("the pubsub listener to connect", timeout, || {
        let up = pubsub.is_connected();
        async move { up.then_some(()) }
    })
    .await;
}
