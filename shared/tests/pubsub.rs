//! Pubsub over a real PostgreSQL: delivery between replicas, local fan-out,
//! batching, the payload limit.

use std::time::Duration;

use chatd_shared::{
    db::Pool,
    ids::{ChatId, Generation, UserId},
    pubsub::{ChatEvent, ChatNotice, Delivery, OwnerEventKind, PublishError},
    testing::{TestDb, TestPubSub, wait_for},
};

const WAIT: Duration = Duration::from_secs(10);

/// Skips the initial Resync every subscriber may get when the listener connects.
async fn next_notice<T>(sub: &mut chatd_shared::pubsub::Subscription<T>) -> T {
    loop {
        match wait_for("a notice", WAIT, sub.recv()).await {
            Some(Delivery::Notice(notice)) => return notice,
            Some(Delivery::Resync) => continue,
            None => panic!("pubsub closed"),
        }
    }
}

fn status(generation: i64) -> ChatEvent {
    ChatEvent::Status {
        status: chatd_shared::status::ChatStatus::Running,
        generation: Generation(generation),
        worker_id: None,
    }
}

#[tokio::test]
async fn notices_reach_subscribers_on_another_replica() {
    let db = TestDb::new().await;
    let (a, b) = (TestPubSub::start(&db).await, TestPubSub::start(&db).await);
    let chat = ChatId::new_v7();
    let owner = UserId::new_random();
    let mut on_b = b.pubsub.subscribe_chat(chat);
    let mut other_chat_on_b = b.pubsub.subscribe_chat(ChatId::new_v7());
    let mut owner_on_b = b.pubsub.subscribe_owner(owner);
    let mut wake_on_b = b.pubsub.subscribe_wake();

    a.pubsub.publish_chat(chat, status(7)).unwrap();
    a.pubsub
        .publish_owner(owner, chat, OwnerEventKind::Created)
        .unwrap();
    a.pubsub.publish_wake();

    assert_eq!(
        next_notice(&mut on_b).await,
        ChatNotice {
            chat_id: chat,
            event: status(7)
        }
    );
    let owner_notice = next_notice(&mut owner_on_b).await;
    assert_eq!(
        (owner_notice.chat_id, owner_notice.kind),
        (chat, OwnerEventKind::Created)
    );
    next_notice(&mut wake_on_b).await;
    // Routing is by chat: a subscriber of another chat got nothing but resyncs.
    while let Some(delivery) = other_chat_on_b.try_recv() {
        assert_eq!(delivery, Delivery::Resync);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn one_notice_fans_out_to_a_thousand_local_subscribers() {
    let db = TestDb::new().await;
    let node = TestPubSub::start(&db).await;
    let chat = ChatId::new_v7();
    let mut subscribers: Vec<_> = (0..1000)
        .map(|_| node.pubsub.subscribe_chat(chat))
        .collect();
    node.pubsub.publish_chat(chat, status(1)).unwrap();
    for sub in &mut subscribers {
        assert_eq!(next_notice(sub).await.event, status(1));
    }
    drop(subscribers);
    assert_eq!(
        node.pubsub.subscribed_chat_count(),
        0,
        "dropped subscriptions unregister"
    );
    node.stop().await;
}

async fn notify_statement_calls(pool: &Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = current_database() AND s.query LIKE '%pg_notify%unnest%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_burst_of_a_thousand_publishes_goes_out_in_a_few_statements() {
    let db = TestDb::new().await;
    let sender = TestPubSub::start(&db).await;
    let receiver = TestPubSub::start(&db).await;
    let chat = ChatId::new_v7();
    let mut sub = receiver.pubsub.subscribe_all_chats();
    let before = notify_statement_calls(db.pool()).await;

    for generation in 0..1000 {
        sender
            .pubsub
            .publish_chat(chat, status(generation))
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 1000 {
        seen.push(next_notice(&mut sub).await.event);
    }
    let expected: Vec<ChatEvent> = (0..1000).map(status).collect();
    assert_eq!(seen, expected, "every notice arrives, in publish order");

    let statements = notify_statement_calls(db.pool()).await - before;
    println!("1000 publishes -> {statements} pg_notify statements");
    assert!(statements >= 1, "the batch statement ran");
    assert!(
        statements <= 10,
        "1000 publishes took {statements} statements"
    );
    sender.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn payloads_over_one_kilobyte_are_refused() {
    let db = TestDb::new().await;
    let node = TestPubSub::start(&db).await;
    let big = ChatEvent::Retry {
        generation: Generation(1),
        attempt: 1,
        delay_ms: 1,
        error: "x".repeat(1100),
    };
    let err = node.pubsub.publish_chat(ChatId::new_v7(), big).unwrap_err();
    assert!(
        matches!(err, PublishError::TooLarge { bytes } if bytes > 1024),
        "{err}"
    );
    node.stop().await;
}
