//! The listener survives a PostgreSQL restart. Alone in its file: a restart
//! cuts every connection of the test process.

use std::time::Duration;

use chatd_shared::{
    ids::{ChatId, Generation, ReplicaId},
    pubsub::{ChatEvent, Delivery, PubSub, PubSubConfig},
    testing::{TestDb, cluster, eventually, wait_for},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[tokio::test]
async fn listener_reconnects_resyncs_and_hears_notices_after_a_restart() {
    if !cluster().can_restart() {
        return;
    }
    let db = TestDb::new().await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let meter = opentelemetry::global::meter("test");
    let pubsub = PubSub::start(
        ReplicaId::new_random(),
        db.url(),
        db.pool().clone(),
        PubSubConfig::default(),
        &meter,
        &tracker,
        cancel.clone(),
    );
    let connected = || {
        let pubsub = pubsub.clone();
        move || {
            let up = pubsub.is_connected();
            async move { up.then_some(()) }
        }
    };
    eventually("listener connected", Duration::from_secs(10), connected()).await;
    let chat = ChatId::new_v7();
    let mut sub = pubsub.subscribe_chat(chat);
    while sub.try_recv().is_some() {}

    tokio::task::spawn_blocking(|| cluster().restart())
        .await
        .unwrap();

    // The listener noticed, reconnected and told us to re-read.
    let delivery = wait_for(
        "a resync after the restart",
        Duration::from_secs(30),
        sub.recv(),
    )
    .await;
    assert_eq!(delivery, Some(Delivery::Resync));
    eventually(
        "listener connected again",
        Duration::from_secs(30),
        connected(),
    )
    .await;

    let event = ChatEvent::Status {
        status: chatd_shared::status::ChatStatus::Waiting,
        generation: Generation(3),
        worker_id: None,
    };
    // The publisher's pooled connection was cut too: the first batch may be
    // lost (notices are hints). Publish until one arrives.
    let received = eventually(
        "a notice published after the restart",
        Duration::from_secs(30),
        || {
            pubsub.publish_chat(chat, event.clone()).unwrap();
            let next = sub.try_recv();
            async move {
                match next {
                    Some(Delivery::Notice(notice)) => Some(notice),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_eq!(received.event, event);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}
