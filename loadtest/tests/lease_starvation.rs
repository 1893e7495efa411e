//! Found by a `chatd-loadtest chaos` soak: right after a PostgreSQL restart
//! every run and request of a replica wants a connection at once, its pool
//! is exhausted, and the lease's heartbeat waits for a slot behind them
//! ("heartbeat failed reason=Timeout occurred while waiting for a slot to
//! become available"). The lease lapses, the replica fences itself and
//! stops every run although it and PostgreSQL are healthy; in one soak all
//! three replicas did so together and nobody recovered anyone's chats for
//! about 30 s. The heartbeat must not queue behind the work it protects:
//! the lease has a one-connection pool of its own.

mod common;

use std::time::Duration;

use common::Cluster;

/// How long the lease is watched: several of the tests' 1 s leases.
const WATCH: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_pool_is_busy_keeps_its_lease() {
    let cluster = Cluster::start(1, |config| config.database.pool_size = 4).await;
    let replica = &cluster.replicas[0];
    // Every connection of its pool taken, as by a burst of runs and requests.
    let mut taken = Vec::new();
    for _ in 0..4 {
        taken.push(replica.pool().get().await.expect("a connection"));
    }
    let db = cluster.db.pool().get().await.expect("a connection");
    let started = tokio::time::Instant::now();
    while started.elapsed() < WATCH {
        let valid: bool = db
            .query_one(
                "SELECT bool_and(lease_expires_at > now()) FROM replicas",
                &[],
            )
            .await
            .expect("the lease")
            .get(0);
        assert!(
            valid,
            "the lease lapsed {:?} into a busy pool although the replica and PostgreSQL are fine",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(taken);
    cluster.shutdown().await;
}
