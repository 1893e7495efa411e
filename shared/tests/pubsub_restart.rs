//! The listener survives a PostgreSQL restart. Alone in its file: a restart
//! cuts every connection of the test process.

use std::time::Duration;

use chatd_shared::{
    ids::{ChatId, Generation},
    pubsub::{ChatEvent, Delivery},
    status::ChatStatus,
    testing::{TestDb, TestPubSub, cluster, eventually, wait_connected, wait_for},
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn listener_reconnects_resyncs_and_hears_notices_after_a_restart() {
    if !cluster().can_restart() {
        return;
    }
    let db = TestDb::new().await;
    let node = TestPubSub::start(&db).await;
    let pubsub = node.pubsub.clone();
    let chat = ChatId::new_v7();
    let mut sub = pubsub.subscribe_chat(chat);
    while sub.try_recv().is_some() {}

    tokio::task::spawn_blocking(|| cluster().restart())
        .await
        .unwrap();

    // The listener noticed, reconnected and told us to re-read.
    let delivery = wait_for("a resync after the restart", WAIT, sub.recv()).await;
    assert_eq!(delivery, Some(Delivery::Resync));
    wait_connected(&pubsub, WAIT).await;

    let event = ChatEvent::Status {
        status: ChatStatus::Waiting,
        generation: Generation(3),
        worker_id: None,
    };
    // The publisher's pooled connection was cut too, so its first batch may
    // be lost (notices are hints): publish until one arrives.
    let received = eventually("a notice published after the restart", WAIT, || {
        pubsub.publish_chat(chat, event.clone()).unwrap();
        let next = sub.try_recv();
        async move {
            match next {
                Some(Delivery::Notice(notice)) => Some(notice),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(received.event, event);
    node.stop().await;
}
