//! PostgreSQL goes away while a chat runs: the lease lapses, the replica
//! fences itself, nothing is written after, and work resumes when the
//! database returns. Alone in its file: it stops the test cluster.

mod common;

use std::sync::Arc;

use chatd_replica::runtime::StopReason;
use chatd_shared::{
    ids::Generation,
    status::ChatStatus,
    testing::{TestDb, cluster, eventually},
};
use common::*;

#[tokio::test]
async fn a_replica_that_loses_the_database_fences_itself_and_recovers() {
    if !cluster().can_restart() {
        return;
    }
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let replica = TestReplica::start(&db, holding.clone(), |_| {}).await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 1).await;
    replica.pubsub.publish_wake();
    holding.wait_started(1).await;
    let (_, first_generation, _) = holding.started.lock().unwrap()[0];

    tokio::task::spawn_blocking(|| cluster().stop())
        .await
        .unwrap();
    eventually("the run to be stopped by the lapsed lease", WAIT, || {
        let stopped = holding.stopped.lock().unwrap().clone();
        async move { (!stopped.is_empty()).then_some(stopped) }
    })
    .await
    .iter()
    .for_each(|(_, reason)| assert_eq!(*reason, Some(StopReason::LeaseLost)));
    assert!(!replica.runtime.is_ready(), "not ready without a lease");

    tokio::task::spawn_blocking(|| cluster().start_again())
        .await
        .unwrap();
    // The lease is renewed, the orphaned row handed back and claimed again.
    holding.wait_started(2).await;
    let (_, second_generation, _) = holding.started.lock().unwrap()[1];
    assert!(
        second_generation > first_generation,
        "{second_generation:?} after {first_generation:?}"
    );
    holding.release.notify_one();
    wait_status(&db, ids[0], ChatStatus::Waiting).await;

    let history = messages(&db, ids[0]).await;
    let by_generation: Vec<(Option<Generation>, String)> = history
        .iter()
        .map(|m| (m.generation, format!("{:?}", m.content)))
        .collect();
    let first_run: Vec<_> = by_generation
        .iter()
        .filter(|(g, _)| *g == Some(first_generation))
        .collect();
    assert_eq!(
        first_run.len(),
        1,
        "the fenced run wrote only its step before the outage: {by_generation:?}"
    );
    assert_eq!(
        history
            .iter()
            .filter(|m| m.generation == Some(second_generation))
            .count(),
        2,
        "the new run wrote its two steps"
    );
    replica.shutdown().await;
}
