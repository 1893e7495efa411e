//! Runtime benchmarks (not timed tests): claim throughput and idle cost.
//!
//! ```sh
//! cargo bench -p chatd-replica --bench runtime            # everything
//! cargo bench -p chatd-replica --bench runtime -- claim   # claim throughput only
//! cargo bench -p chatd-replica --bench runtime -- idle    # idle cost only (60 s)
//! ```
//!
//! Uses the test harness's private PostgreSQL (durability off, like the tests).

use std::{sync::Arc, time::Duration};

use chatd_replica::{
    operations::ChatOps,
    runtime::{ChatRunner, RunContext, Runtime, RuntimeConfig, RuntimeParts},
    streams::StreamHub,
};
use chatd_shared::{
    db::{Pool, lifecycle::TurnEnd},
    ids::{ReplicaId, UserId},
    status::UserRole,
    testing::{TestDb, TestPubSub, eventually, wait_for},
};
use tokio::time::Instant;

/// Releases at once: measures the runtime, not a turn.
struct NoopRunner;

#[async_trait::async_trait]
impl ChatRunner for NoopRunner {
    async fn run(&self, run: RunContext) {
        let _ = run.release(TurnEnd::Done).await;
    }
}

struct Replica {
    runtime: Runtime,
    node: TestPubSub,
}

async fn start(db: &TestDb, config: RuntimeConfig) -> Replica {
    let mut db_config = db.config();
    db_config.pool_size = 16;
    let pool = chatd_shared::db::connect_pool(&db_config).unwrap();
    let node = TestPubSub::start_with(config.replica_id, db.url(), pool.clone()).await;
    let meter = opentelemetry::global::meter("bench");
    let hub = StreamHub::new(Default::default(), 256, &meter);
    let parts = RuntimeParts {
        ops: ChatOps::new(pool.clone(), node.pubsub.clone()),
        pool,
        pubsub: node.pubsub.clone(),
        hub,
        runner: Arc::new(NoopRunner),
        meter: meter.clone(),
        parent: tokio_util::sync::CancellationToken::new(),
        database: db_config,
    };
    let runtime = Runtime::start(config, parts);
    wait_for(
        "replica running",
        Duration::from_secs(30),
        runtime.wait_running(),
    )
    .await;
    Replica { runtime, node }
}

async fn stop(replica: Replica) {
    replica.runtime.shutdown().await;
    replica.node.stop().await;
}

async fn count(pool: &Pool, sql: &str) -> i64 {
    pool.get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

async fn claim_throughput(replicas: usize, chats: i64) {
    let db = TestDb::new().await;
    let mut started = Vec::new();
    for _ in 0..replicas {
        started.push(start(&db, RuntimeConfig::new(ReplicaId::new_random())).await);
    }
    let client = db.pool().get().await.unwrap();
    let owner =
        chatd_shared::db::users::insert(&client, UserId::new_random(), "bench", UserRole::Member)
            .await
            .unwrap();
    client
        .execute(
            "INSERT INTO chats (id, owner_id, status) SELECT gen_random_uuid(), $1, 'pending' FROM generate_series(1, $2::bigint)",
            &[&owner.id, &chats],
        )
        .await
        .unwrap();
    let begin = Instant::now();
    started[0].node.pubsub.publish_wake();
    eventually("every chat released", Duration::from_secs(600), || async {
        (count(
            db.pool(),
            "SELECT count(*) FROM chats WHERE status = 'waiting'",
        )
        .await
            == chats)
            .then_some(())
    })
    .await;
    let elapsed = begin.elapsed();
    println!(
        "claim throughput, {replicas} replica(s): {chats} chats claimed, run and released in {:.2} s = {:.0} chats/s",
        elapsed.as_secs_f64(),
        chats as f64 / elapsed.as_secs_f64()
    );
    for replica in started {
        stop(replica).await;
    }
}

/// Statements per second of `count` idle replicas (each watching the next
/// for its death: a lock wait that costs nothing until it returns).
async fn idle_cost(seconds: u64, count: usize) {
    let db = TestDb::new().await;
    let mut replicas = Vec::new();
    for _ in 0..count {
        replicas.push(start(&db, RuntimeConfig::new(ReplicaId::new_random())).await);
    }
    let client = db.pool().get().await.unwrap();
    client
        .execute("SELECT pg_stat_statements_reset()", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rows = client
        .query(
            "SELECT s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 70) FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'
             ORDER BY s.calls DESC",
            &[],
        )
        .await
        .unwrap();
    let total: i64 = rows.iter().map(|row| row.get::<_, i64>(0)).sum();
    println!(
        "idle cost, {count} replica(s), default intervals: {total} statements in {seconds} s = {:.2} statements/s per replica (budget <= 2)",
        total as f64 / seconds as f64 / count as f64
    );
    for row in &rows {
        println!("  {:>5}  {}", row.get::<_, i64>(0), row.get::<_, String>(1));
    }
    for replica in replicas {
        stop(replica).await;
    }
}

#[tokio::main]
async fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    if filter.is_empty() || "claim".contains(&filter) {
        claim_throughput(1, 5000).await;
        claim_throughput(3, 5000).await;
    }
    if filter.is_empty() || "idle".contains(&filter) {
        idle_cost(60, 1).await;
        idle_cost(60, 2).await;
    }
}
