//! A PostgreSQL restart ends every replica's session, so every replica's
//! advisory lock is free until its holder reconnects: that must not read as
//! a death (ARCHITECTURE.md §4). Its own test binary: restarting the
//! server cuts every test's connections.

mod common;

use std::time::Duration;

use chatd_shared::{
    api::CreateChat,
    status::{ChatStatus, MessageRole},
    testing::{cluster, eventually, metric_sum},
};
use common::{
    WAIT,
    app::{TestApp, say},
};
use serde_json::json;

/// How long PostgreSQL stays down (a fault's length, not a wait for anything).
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_no_death_and_every_turn_finishes_once() {
    if !cluster().can_restart() {
        eprintln!("skipped: needs the private test cluster (CHATD_TEST_DATABASE_URL is set)");
        return;
    }
    let app = TestApp::start(2, |config| {
        // Leases outlast the restart, and free locks are judged only once a
        // replica's own session has lasted longer than the reconnects take.
        config.runtime.lease_ttl = Duration::from_secs(15);
        config.runtime.heartbeat_interval = Duration::from_millis(500);
        config.runtime.lock_judge_after = Duration::from_secs(8);
    })
    .await;
    let (_, token) = app.user("restart").await;
    let client = app.client(0, &token);
    let reply: String = (0..60).map(|n| format!("w{n} ")).collect();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let created = client
            .create_chat(
                &CreateChat {
                    text: Some(say(json!({"text": reply.trim(), "token_delay_ms": 50}))),
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("create")
            .body;
        ids.push(created.id);
    }
    eventually("the chats to run", WAIT, || async {
        let mut running = 0;
        for id in &ids {
            if client.get_chat(*id).await.expect("chat").status == ChatStatus::Running {
                running += 1;
            }
        }
        (running == ids.len()).then_some(())
    })
    .await;

    // Down for a few seconds: the replicas' reconnects (backing off, with
    // jitter) come back at different times, as after any real outage.
    tokio::task::spawn_blocking(|| {
        cluster().stop();
        std::thread::sleep(OUTAGE);
        cluster().start_again();
    })
    .await
    .expect("restart");

    for id in &ids {
        eventually("the chat to finish", Duration::from_secs(60), || async {
            let chat = client.get_chat(*id).await.ok()?;
            (chat.status == ChatStatus::Waiting).then_some(())
        })
        .await;
        let messages = client
            .list_messages(*id, &Default::default())
            .await
            .expect("messages")
            .messages;
        let replies: Vec<_> = messages
            .iter()
            .filter(|m| m.role == MessageRole::Assistant)
            .collect();
        assert_eq!(replies.len(), 1, "the turn finished once: {messages:#?}");
    }
    for index in 0..2 {
        let text = app.metrics(index).await;
        let deaths = metric_sum(&text, "chatd_replica_deaths_detected_total");
        assert_eq!(deaths, 0.0, "replica {index} judged a peer dead");
    }
    app.shutdown().await;
}
