//! Death detection through the replicas' advisory locks (ARCHITECTURE.md
//! §4): a replica whose session ends is known dead at once, long before its
//! lease would expire; a replica whose session was merely cut carries on
//! without running what moved.

mod common;

use std::{sync::Arc, time::Duration};

use chatd_shared::{
    ids::{ChatId, Generation, ReplicaId},
    status::ChatStatus,
    testing::{TestDb, eventually},
};
use common::*;
use tokio::time::Instant;

/// A lease so long that only the lock can explain a recovery within it.
const LONG_LEASE: Duration = Duration::from_secs(30);

fn long_lease(config: &mut chatd_replica::runtime::RuntimeConfig) {
    config.lease_ttl = LONG_LEASE;
}

/// Waits until `watcher` watches `peer` for its death, and judges by
/// locks (its own session has lasted `lock_judge_after`).
async fn wait_watching(watcher: &TestReplica, peer: ReplicaId) {
    let judge_after = fast_config(watcher.id).lock_judge_after;
    eventually("the ring to form", WAIT, || {
        let watched = watcher.runtime.watched_peer();
        let judges = watcher
            .pubsub
            .session()
            .is_some_and(|session| session.since.elapsed() >= judge_after);
        async move { (watched == Some(peer) && judges).then_some(()) }
    })
    .await;
}

/// The chats of `ids` that run on `replica`.
async fn running_on(db: &TestDb, ids: &[ChatId], replica: ReplicaId) -> usize {
    let mut count = 0;
    for id in ids {
        let row = chat(db, *id).await;
        if row.status == ChatStatus::Running && row.worker_id == Some(replica) {
            count += 1;
        }
    }
    count
}

/// Heartbeats (and so their sweep of every peer's lock) this far apart:
/// only the watcher can explain a recovery sooner.
const SLOW_BEAT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_chats_run_elsewhere_long_before_its_lease_would_expire() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let slow = |config: &mut chatd_replica::runtime::RuntimeConfig| {
        long_lease(config);
        config.heartbeat_interval = SLOW_BEAT;
    };
    let doomed = TestReplica::start(&db, holding.clone(), slow).await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 5).await;
    doomed.pubsub.publish_wake();
    holding.wait_started(5).await;
    let survivor = TestReplica::start(&db, holding.clone(), slow).await;
    wait_watching(&survivor, doomed.id).await;

    let killed = Instant::now();
    let doomed_id = doomed.id;
    doomed.crash();
    let moved = eventually(
        "the chats to run on the survivor",
        LONG_LEASE - Duration::from_secs(5),
        || async {
            (running_on(&db, &ids, survivor.id).await == ids.len()).then_some(killed.elapsed())
        },
    )
    .await;
    println!("killed → every chat running elsewhere: {moved:?} (lease {LONG_LEASE:?})");
    assert!(
        moved < SLOW_BEAT / 2,
        "only the watcher's wait on the lock explains {moved:?}"
    );
    for id in &ids {
        let row = chat(&db, *id).await;
        assert_eq!(
            row.generation,
            Generation(3),
            "claimed, recovered once, claimed again"
        );
    }
    assert!(
        replica_row(&db, doomed_id).await.is_none(),
        "the dead replica's row is deleted"
    );
    // The survivor's runs took up the turns from their persisted step.
    holding.wait_started(10).await;
    holding.release.notify_waiters();
    for id in &ids {
        wait_idle(&db, *id).await;
    }
    survivor.shutdown().await;
}

/// A replica whose first session is younger than `lock_judge_after` still
/// judges a peer dead by its lock when the server has been up that long: no
/// peer can be still reconnecting from a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_on_a_server_up_for_long_judges_a_death_at_once() {
    const JUDGE_AFTER: Duration = Duration::from_secs(15);
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let slow = |config: &mut chatd_replica::runtime::RuntimeConfig| {
        long_lease(config);
        config.heartbeat_interval = SLOW_BEAT;
        config.lock_judge_after = JUDGE_AFTER;
    };
    let client = db.pool().get().await.unwrap();
    eventually(
        "the server to have been up for a while",
        JUDGE_AFTER * 2,
        || async {
            let up: f64 = client
                .query_one(
                    "SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (up >= JUDGE_AFTER.as_secs_f64()).then_some(())
        },
    )
    .await;
    let doomed = TestReplica::start(&db, holding.clone(), slow).await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 3).await;
    doomed.pubsub.publish_wake();
    holding.wait_started(3).await;
    let survivor = TestReplica::start(&db, holding.clone(), slow).await;
    eventually("the survivor to watch the doomed replica", WAIT, || {
        let watched = survivor.runtime.watched_peer();
        async move { (watched == Some(doomed.id)).then_some(()) }
    })
    .await;
    let survivor_session = survivor.pubsub.session().expect("a session").since;

    let killed = Instant::now();
    doomed.crash();
    let moved = eventually("the chats to run on the survivor", LONG_LEASE, || async {
        (running_on(&db, &ids, survivor.id).await == ids.len()).then_some(Instant::now())
    })
    .await;
    println!("killed → running elsewhere: {:?}", moved - killed);
    assert!(
        moved < survivor_session + JUDGE_AFTER,
        "the survivor waited for its own session to be {JUDGE_AFTER:?} old (judged {:?} after it began)",
        moved - survivor_session
    );
    holding.wait_started(6).await;
    holding.release.notify_waiters();
    for id in &ids {
        wait_idle(&db, *id).await;
    }
    survivor.shutdown().await;
}

/// The death watch waits for its peer's whole life, but never holds back
/// the database's xmin horizon: a statement blocked on the lock keeps its
/// snapshot, and then vacuum and page pruning can remove no row version
/// that died since (the bench's PostgreSQL CPU per turn doubled from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_death_watch_holds_back_no_vacuum() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let first = TestReplica::start(&db, holding.clone(), long_lease).await;
    let second = TestReplica::start(&db, holding.clone(), long_lease).await;
    wait_watching(&first, second.id).await;
    wait_watching(&second, first.id).await;
    let client = db.pool().get().await.unwrap();
    eventually("both watches to be waiting", WAIT, || async {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND state = 'active' AND query LIKE '%advisory_lock%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (waiting == 2).then_some(())
    })
    .await;
    // A transaction id from after the waits began: no session may keep a
    // snapshot older than it for long.
    let mark: String = client
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    eventually(
        "every session's snapshot to be younger than the waits",
        Duration::from_secs(5),
        || async {
            let holding_back: Vec<String> = client
                .query(
                    "SELECT left(query, 60) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND age(backend_xmin) > age($1::text::xid)",
                    &[&mark],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            holding_back.is_empty().then_some(())
        },
    )
    .await;
    first.shutdown().await;
    second.shutdown().await;
}

/// A replica's row, if it is there.
async fn replica_row(db: &TestDb, id: ReplicaId) -> Option<chatd_shared::db::replicas::Replica> {
    let client = db.pool().get().await.unwrap();
    chatd_shared::db::replicas::get(&client, id).await.unwrap()
}

/// Ends the session holding `replica`'s advisory lock (its listener), as a
/// network cut or an operator's `pg_terminate_backend` would. The process
/// lives on.
async fn cut_session(db: &TestDb, replica: ReplicaId) {
    let key = replica.lock_key();
    let (classid, objid) = ((key >> 32) as u32, key as u32);
    let client = db.pool().get().await.unwrap();
    let ended: Vec<bool> = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND objsubid = 1 AND classid = $1 AND objid = $2 AND granted",
            &[&classid, &objid],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ended, [true], "one session held the replica's lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_session_was_cut_writes_nothing_for_what_moved_and_carries_on() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let cut = TestReplica::start(&db, holding.clone(), long_lease).await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 4).await;
    cut.pubsub.publish_wake();
    holding.wait_started(4).await;
    let other = TestReplica::start(&db, holding.clone(), long_lease).await;
    wait_watching(&other, cut.id).await;

    cut_session(&db, cut.id).await;
    // The other replica takes the chats over at once...
    eventually("the chats to move", WAIT, || async {
        (running_on(&db, &ids, other.id).await == ids.len()).then_some(())
    })
    .await;
    holding.wait_started(8).await;
    // ...and the cut replica, its session back, stops the runs it lost.
    eventually("the cut replica to stop its old runs", WAIT, || {
        let stopped = holding.stopped.lock().unwrap().len();
        async move { (stopped == 4).then_some(()) }
    })
    .await;
    assert!(
        holding
            .stopped
            .lock()
            .unwrap()
            .iter()
            .all(|(fence, _)| fence.worker_id == cut.id && fence.generation == Generation(1)),
        "only the old runs stopped"
    );
    holding.release.notify_waiters();
    for id in &ids {
        wait_idle(&db, *id).await;
        let steps: Vec<(Option<Generation>, Option<i32>, String)> = messages(&db, *id)
            .await
            .iter()
            .filter(|m| m.generation.is_some())
            .map(|m| (m.generation, m.step, texts(m)))
            .collect();
        assert_eq!(
            steps,
            [
                (Some(Generation(1)), Some(0), "step 0".into()),
                (Some(Generation(3)), Some(0), "step 0".into()),
                (Some(Generation(3)), Some(1), "step 1".into()),
            ],
            "nothing written by the old run after the cut, the new run finished once"
        );
    }

    // Back with a new session (and registered again), it takes new work.
    other.shutdown().await;
    let more = pending_chats(&db, owner, 3).await;
    cut.pubsub.publish_wake();
    for id in &more {
        let row = wait_status(&db, *id, ChatStatus::Running).await;
        assert_eq!(row.worker_id, Some(cut.id));
    }
    holding.release.notify_waiters();
    cut.shutdown().await;
}

fn texts(message: &chatd_shared::db::messages::Message) -> String {
    match &message.content[..] {
        [chatd_shared::parts::Part::Text { text }] => text.clone(),
        other => format!("{other:?}"),
    }
}
