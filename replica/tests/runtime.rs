//! The replica runtime against a real PostgreSQL, several replicas per test.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chatd_replica::runtime::StopReason;
use chatd_shared::{
    db::{
        lifecycle::{self, Fence, TurnEnd},
        messages, queued_messages,
    },
    ids::{Generation, MessageId},
    parts::Part,
    status::{ChatStatus, MessageRole},
    testing::{TestDb, eventually, wait_for},
};
use common::*;
use tokio::time::Instant;

fn texts(messages: &[chatd_shared::db::messages::Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match &m.content[..] {
            [Part::Text { text }] => text.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

async fn count_with_status(db: &TestDb, status: ChatStatus) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM chats WHERE status = $1", &[&status])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pending_chat_runs_exactly_once_across_three_replicas() {
    let db = TestDb::new().await;
    let (runner, log) = AppendAndRelease::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        // This test is about claims, not recovery: a lease long enough that
        // a heartbeat delayed on a busy machine does not lapse (and re-run
        // a turn, which is right but not what is counted here).
        let replica = TestReplica::start(&db, runner.clone(), |config| {
            config.lease_ttl = Duration::from_secs(10);
        })
        .await;
        replicas.push(replica);
    }
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 2000).await;
    replicas[0].pubsub.publish_wake();

    eventually(
        "all 2000 chats to be waiting",
        Duration::from_secs(120),
        || async { (count_with_status(&db, ChatStatus::Waiting).await == 2000).then_some(()) },
    )
    .await;

    let client = db.pool().get().await.unwrap();
    let per_chat: Vec<(i64, i64)> = client
        .query(
            "SELECT count(*) FILTER (WHERE role = 'assistant'), count(*) FROM chat_messages GROUP BY chat_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(per_chat.len(), 2000);
    assert!(
        per_chat
            .iter()
            .all(|&(assistant, all)| assistant == 1 && all == 2),
        "each chat has exactly one reply: {:?}",
        per_chat
            .iter()
            .filter(|&&(assistant, all)| assistant != 1 || all != 2)
            .collect::<Vec<_>>()
    );

    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2000, "2000 runs for 2000 chats");
    let distinct: HashSet<_> = log.iter().map(|(chat, _, _)| *chat).collect();
    assert_eq!(
        distinct,
        ids.iter().copied().collect(),
        "every chat ran once"
    );
    let mut per_replica: HashMap<_, usize> = HashMap::new();
    for (_, generation, replica) in &log {
        assert_eq!(*generation, Generation(1), "claimed once: generation 1");
        *per_replica.entry(*replica).or_default() += 1;
    }
    println!(
        "runs per replica: {:?}",
        per_replica.values().collect::<Vec<_>>()
    );
    for replica in &replicas {
        assert!(
            per_replica.get(&replica.id).copied().unwrap_or(0) > 0,
            "replica {} did some of the work",
            replica.id
        );
    }
    for replica in replicas {
        replica.shutdown().await;
    }
}

#[tokio::test]
async fn a_wake_notification_gets_a_chat_claimed_without_polling() {
    let db = TestDb::new().await;
    let (runner, log) = AppendAndRelease::new();
    let replica = TestReplica::start(&db, runner, |config| {
        config.poll_interval = Duration::from_secs(30)
    })
    .await;
    // Let the first claim (at start) come and go, so only a wake can trigger the next one.
    tokio::task::yield_now().await;
    let owner = user(&db).await;
    let started = Instant::now();
    let ids = pending_chats(&db, owner, 1).await;
    replica.pubsub.publish_wake();
    wait_status(&db, ids[0], ChatStatus::Waiting).await;
    let elapsed = started.elapsed();
    println!("pending -> waiting in {elapsed:?} with a 30 s poll interval");
    // The poll fires no earlier than 24 s (30 s - 20% jitter); a claim well
    // before that can only come from the notification.
    assert!(
        elapsed < Duration::from_secs(5),
        "claimed after {elapsed:?}"
    );
    assert_eq!(log.lock().unwrap().len(), 1);
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replicas_chats_are_recovered_and_its_late_writes_rejected() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let doomed = TestReplica::start(&db, holding.clone(), |_| {}).await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 5).await;
    doomed.pubsub.publish_wake();
    holding.wait_started(5).await;
    let old_fences: Vec<Fence> = holding
        .started
        .lock()
        .unwrap()
        .iter()
        .map(|&(chat_id, generation, worker_id)| Fence {
            chat_id,
            worker_id,
            generation,
        })
        .collect();
    let doomed_id = doomed.id;
    // Every first step is saved before the crash.
    for id in &ids {
        eventually("step 0 saved", WAIT, || async {
            (messages(&db, *id).await.len() == 2).then_some(())
        })
        .await;
    }

    let (runner, log) = AppendAndRelease::new();
    let survivor = TestReplica::start(&db, runner, |_| {}).await;
    let crashed_at = Instant::now();
    doomed.crash();

    for id in &ids {
        let row = wait_status(&db, *id, ChatStatus::Waiting).await;
        assert_eq!(
            row.generation,
            Generation(3),
            "acquired (1), recovered (2), acquired again (3)"
        );
        let history = texts(&messages(&db, *id).await);
        assert_eq!(
            history,
            ["hello", "step 0", &format!("done by {}", survivor.id)],
            "persisted steps stay"
        );
    }
    println!(
        "crash -> all chats finished elsewhere in {:?}",
        crashed_at.elapsed()
    );
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .all(|(_, _, replica)| *replica == survivor.id)
    );

    // The crashed worker's writes, had it gone on, are refused.
    let client = db.pool().get().await.unwrap();
    for fence in &old_fences {
        assert_eq!(fence.worker_id, doomed_id);
        let late = lifecycle::persist_step(&client, fence, &[assistant("late", 1)])
            .await
            .unwrap();
        assert!(
            late.is_none(),
            "a write under the old generation is rejected"
        );
        let release = lifecycle::release(&client, fence, &TurnEnd::Done)
            .await
            .unwrap();
        assert!(
            release.is_none(),
            "a release under the old generation is rejected"
        );
    }
    for id in &ids {
        assert!(!texts(&messages(&db, *id).await).contains(&"late".to_owned()));
    }
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_drain_hands_back_unfinished_runs_and_never_repeats_finished_ones() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let draining = TestReplica::start(&db, holding.clone(), |config| {
        config.drain_timeout = Duration::from_secs(1)
    })
    .await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 4).await;
    draining.pubsub.publish_wake();
    holding.wait_started(4).await;
    let draining_id = draining.id;
    let (runner, log) = AppendAndRelease::new();
    let other = TestReplica::start(&db, runner, |_| {}).await;

    let shutdown = tokio::spawn(draining.shutdown());
    // Two runs finish during the drain.
    holding.release.notify_one();
    holding.release.notify_one();
    let began = Instant::now();
    wait_for("shutdown to finish", WAIT, shutdown)
        .await
        .unwrap();
    println!("shutdown with a 1 s drain took {:?}", began.elapsed());

    let mut finished_here = 0;
    let mut handed_back = 0;
    for id in &ids {
        let row = wait_status(&db, *id, ChatStatus::Waiting).await;
        let history = texts(&messages(&db, *id).await);
        if history == ["hello", "step 0", "step 1"] {
            finished_here += 1;
            assert_eq!(row.generation, Generation(1));
        } else {
            assert_eq!(
                history,
                ["hello", "step 0", &format!("done by {}", other.id)]
            );
            assert_eq!(
                row.generation,
                Generation(3),
                "handed back (2) then acquired (3)"
            );
            handed_back += 1;
        }
    }
    assert_eq!((finished_here, handed_back), (2, 2));
    let reran: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(chat, _, _)| *chat)
        .collect();
    assert_eq!(reran.len(), 2, "only the unfinished runs ran again");
    let stopped = holding.stopped.lock().unwrap().clone();
    assert_eq!(stopped.len(), 2);
    assert!(
        stopped
            .iter()
            .all(|(_, reason)| *reason == Some(StopReason::HandBack))
    );
    let client = db.pool().get().await.unwrap();
    assert!(
        chatd_shared::db::replicas::get(&client, draining_id)
            .await
            .unwrap()
            .is_none(),
        "the replica row is gone"
    );
    other.shutdown().await;
}

#[tokio::test]
async fn a_shutdown_racing_a_claim_leaves_no_chat_running_under_the_stopped_replica() {
    let db = TestDb::new().await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 20).await;
    // Every claim statement takes half a second, so the shutdown below
    // lands while the first claim is in flight.
    db.connect()
        .await
        .batch_execute(
            "CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$;
             CREATE TRIGGER slow_claim BEFORE UPDATE ON chats FOR EACH STATEMENT EXECUTE FUNCTION slow_claim();",
        )
        .await
        .unwrap();
    let holding = Arc::new(Holding::default());
    let replica = TestReplica::start(&db, holding.clone(), |_| {}).await;
    let replica_id = replica.id;
    wait_for("shutdown", Duration::from_secs(20), replica.shutdown()).await;

    let client = db.pool().get().await.unwrap();
    let running: i64 = client
        .query_one(
            "SELECT count(*) FROM chats WHERE worker_id = $1 OR status = 'running'",
            &[&replica_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        running, 0,
        "no chat is left running under the stopped replica"
    );
    assert!(
        holding.started.lock().unwrap().is_empty(),
        "nothing claimed during shutdown was run"
    );
    for id in ids {
        let row = chat(&db, id).await;
        assert_eq!(row.status, ChatStatus::Pending);
        assert!(
            row.generation == Generation(0) || row.generation == Generation(2),
            "untouched, or claimed and handed back"
        );
    }
}

#[tokio::test]
async fn a_missed_interrupt_notification_is_acted_on_through_the_lease() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let replica = TestReplica::start(&db, holding.clone(), |_| {}).await;
    let owner = user(&db).await;
    let ids = pending_chats(&db, owner, 1).await;
    replica.pubsub.publish_wake();
    holding.wait_started(1).await;
    // No notification is published from here on: only the lease's read can
    // find the flag.
    replica.pubsub.set_publishing(false);
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE chats SET interrupt_requested = true WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    let row = wait_status(&db, ids[0], ChatStatus::Waiting).await;
    assert!(!row.interrupt_requested, "release clears the flag");
    assert_eq!(
        texts(&messages(&db, ids[0]).await),
        ["hello", "step 0", "interrupted"]
    );
    replica.shutdown().await;
}

#[tokio::test]
async fn a_worker_that_lost_ownership_writes_nothing() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let replica =
        TestReplica::start(&db, holding.clone(), |config| config.max_running_chats = 1).await;
    let owner = user(&db).await;
    pending_chats(&db, owner, 1).await;
    replica.pubsub.publish_wake();
    holding.wait_started(1).await;
    let (chat_id, generation, worker_id) = holding.started.lock().unwrap()[0];
    // Someone else takes the chat over (as an edit or a recovery would).
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE chats SET status = 'waiting', worker_id = NULL, generation = generation + 1 WHERE id = $1",
            &[&chat_id],
        )
        .await
        .unwrap();
    // The lease's reconciliation stops the run...
    eventually("the run to be stopped", WAIT, || {
        let stopped = holding.stopped.lock().unwrap().clone();
        async move { (!stopped.is_empty()).then_some(()) }
    })
    .await;
    assert_eq!(
        holding.stopped.lock().unwrap()[0].1,
        Some(StopReason::OwnershipLost)
    );
    // ...and had it written anyway, the fence would have refused it.
    let client = db.pool().get().await.unwrap();
    let fence = Fence {
        chat_id,
        worker_id,
        generation,
    };
    assert!(
        lifecycle::persist_step(&client, &fence, &[assistant("late", 1)])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(texts(&messages(&db, chat_id).await), ["hello", "step 0"]);
    assert_eq!(chat(&db, chat_id).await.status, ChatStatus::Waiting);
    replica.shutdown().await;
}

#[tokio::test]
async fn release_pops_a_queued_message_and_the_same_worker_goes_on() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let replica = TestReplica::start(&db, holding.clone(), |_| {}).await;
    let owner = user(&db).await;
    pending_chats(&db, owner, 1).await;
    replica.pubsub.publish_wake();
    holding.wait_started(1).await;
    let (chat_id, generation, worker_id) = holding.started.lock().unwrap()[0];
    let fence = Fence {
        chat_id,
        worker_id,
        generation,
    };
    let client = db.pool().get().await.unwrap();
    queued_messages::push(
        &client,
        chat_id,
        &[Part::text("next please")],
        Some(owner),
        Some("key-1"),
    )
    .await
    .unwrap()
    .unwrap();

    // A release with a queued message: popped and inserted at once, chat stays ours.
    let released = lifecycle::release(&client, &fence, &TurnEnd::Done)
        .await
        .unwrap()
        .expect("fence holds");
    assert_eq!(released.status, ChatStatus::Running);
    let next = released
        .next
        .expect("the queued message became a user message");
    assert_eq!(next.role, MessageRole::User);
    assert_eq!(next.idempotency_key.as_deref(), Some("key-1"));
    assert!(
        queued_messages::list(&client, chat_id)
            .await
            .unwrap()
            .is_empty()
    );
    let row = chat(&db, chat_id).await;
    assert_eq!(
        (row.status, row.worker_id, row.generation),
        (ChatStatus::Running, Some(worker_id), generation)
    );
    let history = messages::list_after(&client, chat_id, MessageId(0), 10)
        .await
        .unwrap();
    assert_eq!(
        history.last().map(|m| m.id),
        Some(next.id),
        "the popped message is the newest"
    );

    // Without a queued message the chat goes idle.
    let released = lifecycle::release(&client, &fence, &TurnEnd::Failed("boom".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(released.status, ChatStatus::Error);
    let row = chat(&db, chat_id).await;
    assert_eq!(
        (row.status, row.worker_id, row.last_error.as_deref()),
        (ChatStatus::Error, None, Some("boom"))
    );
    drop(client);
    replica.shutdown().await;
}

#[tokio::test]
async fn a_stale_run_cannot_write_after_its_replica_acquired_the_chat_again() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let replica = TestReplica::start(&db, holding.clone(), |_| {}).await;
    let owner = user(&db).await;
    pending_chats(&db, owner, 1).await;
    replica.pubsub.publish_wake();
    holding.wait_started(1).await;
    let (chat_id, generation, worker_id) = holding.started.lock().unwrap()[0];
    // The chat is taken back to pending (as an edit does) and this same
    // replica acquires it again: same worker, same status, newer generation.
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE chats SET status = 'pending', worker_id = NULL, generation = generation + 1 WHERE id = $1",
            &[&chat_id],
        )
        .await
        .unwrap();
    replica.pubsub.publish_wake();
    holding.wait_started(2).await;
    let (_, newer, again) = holding.started.lock().unwrap()[1];
    assert_eq!(again, worker_id);
    assert!(newer > generation);

    // Only the generation tells the old run from the new one: its write fails.
    let stale = Fence {
        chat_id,
        worker_id,
        generation,
    };
    let client = db.pool().get().await.unwrap();
    assert!(
        lifecycle::persist_step(&client, &stale, &[assistant("stale", 5)])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        lifecycle::release(&client, &stale, &TurnEnd::Done)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!texts(&messages(&db, chat_id).await).contains(&"stale".to_owned()));
    // The old run was told to stop.
    eventually("the stale run to be stopped", WAIT, || {
        let stopped = holding.stopped.lock().unwrap().clone();
        async move {
            stopped
                .iter()
                .any(|(fence, _)| fence.generation == generation)
                .then_some(())
        }
    })
    .await;
    drop(client);
    replica.shutdown().await;
}

#[tokio::test]
async fn a_popped_message_that_cannot_be_inserted_stays_queued() {
    let db = TestDb::new().await;
    let holding = Arc::new(Holding::default());
    let replica = TestReplica::start(&db, holding.clone(), |_| {}).await;
    let owner = user(&db).await;
    pending_chats(&db, owner, 1).await;
    replica.pubsub.publish_wake();
    holding.wait_started(1).await;
    let (chat_id, generation, worker_id) = holding.started.lock().unwrap()[0];
    let fence = Fence {
        chat_id,
        worker_id,
        generation,
    };
    let client = db.pool().get().await.unwrap();
    // A message with idempotency key "k" exists; the queued one carries "k" too,
    // so inserting it violates the unique index.
    client
        .execute(
            "INSERT INTO chat_messages (chat_id, role, content, idempotency_key) VALUES ($1, 'user', '[]', 'k')",
            &[&chat_id],
        )
        .await
        .unwrap();
    let queued = queued_messages::push(
        &client,
        chat_id,
        &[Part::text("queued")],
        Some(owner),
        Some("k"),
    )
    .await
    .unwrap()
    .unwrap();
    let err = lifecycle::release(&client, &fence, &TurnEnd::Done)
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    // Pop and insert are one statement: the failed insert undid the pop.
    assert_eq!(
        queued_messages::list(&client, chat_id).await.unwrap(),
        vec![queued]
    );
    let row = chat(&db, chat_id).await;
    assert_eq!(
        (row.status, row.generation),
        (ChatStatus::Running, generation)
    );
    drop(client);
    replica.shutdown().await;
}
