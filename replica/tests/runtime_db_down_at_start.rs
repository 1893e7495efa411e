//! A replica started while PostgreSQL is down keeps trying, is not ready,
//! and registers once the database is back. Alone in its file: it stops the
//! test cluster.

mod common;

use std::time::Duration;

use chatd_replica::{
    operations::ChatOps,
    runtime::{Phase, Runtime, RuntimeParts},
    streams::StreamHub,
};
use chatd_shared::{
    ids::ReplicaId,
    pubsub::{PubSub, PubSubConfig},
    testing::{TestDb, cluster, wait_connected, wait_for},
};
use common::*;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[tokio::test]
async fn a_replica_started_while_the_database_is_down_registers_when_it_returns() {
    if !cluster().can_restart() {
        return;
    }
    let db = TestDb::new().await;
    tokio::task::spawn_blocking(|| cluster().stop())
        .await
        .unwrap();

    let id = ReplicaId::new_random();
    let pool = chatd_shared::db::connect_pool(&db.config()).unwrap();
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let meter = opentelemetry::global::meter("test");
    let pubsub = PubSub::start(
        id,
        db.url(),
        pool.clone(),
        PubSubConfig::default(),
        &meter,
        &tracker,
        cancel.clone(),
    );
    let (runner, _log) = AppendAndRelease::new();
    let parts = RuntimeParts {
        ops: ChatOps::new(pool.clone(), pubsub.clone()),
        pool,
        pubsub: pubsub.clone(),
        hub: StreamHub::new(Default::default(), 256, &meter),
        runner,
        meter,
        parent: cancel.child_token(),
        database: db.config(),
    };
    let runtime = Runtime::start(fast_config(id), parts);

    // Time passes with the database down: the replica retries, never panics,
    // and does not claim to be ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runtime.phase(), Phase::Starting);
    assert!(!runtime.is_ready());
    assert!(!pubsub.is_connected());

    tokio::task::spawn_blocking(|| cluster().start_again())
        .await
        .unwrap();
    wait_for(
        "registration once the database is back",
        WAIT,
        runtime.wait_running(),
    )
    .await;
    wait_connected(&pubsub, WAIT).await;
    assert!(runtime.is_ready());

    // And it works: a chat made pending now runs.
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 1).await;
    pubsub.publish_wake();
    wait_status(&db, ids[0], chatd_shared::status::ChatStatus::Waiting).await;
    runtime.shutdown().await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}
