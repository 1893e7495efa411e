//! Chat operations announce exactly what their transition implies: for
//! each transition, the notices another replica's listener receives, each
//! once, in order (ARCHITECTURE.md §3, §5).
//!
//! The operations publish through a pubsub whose publisher sends every
//! notice in its own statement (PostgreSQL folds identical notices of one
//! transaction into one, which would hide a notice published twice), and
//! a separate LISTEN connection, like any other replica's, records what
//! arrives. A probe published after the operation marks the end.

mod common;

use std::time::Duration;

use chatd_replica::bootstrap::{self, ProviderBootstrap};
use chatd_replica::operations::{
    Access, ChatChanges, ChatOps, Claim, CreateOutcome, EditOutcome, InterruptOutcome,
    NewChatRequest, QueuedOutcome, SendOutcome, SendRequest,
};
use chatd_shared::{
    api::BusyBehavior,
    db::{
        lifecycle::{Fence, OwnerWebhooks, TurnEnd},
        replicas,
    },
    ids::{ChatId, Generation, MessageId, QueuedMessageId, ReplicaId, UserId},
    parts::Part,
    pubsub::{
        ChatEvent, ChatNotice, ControlNotice, OwnerEventKind, OwnerNotice, PubSub, PubSubConfig,
        PublisherConfig,
    },
    status::{ChatStatus, ProviderKind},
    testing::{TestDb, wait_connected},
};
use common::{WAIT, assistant, user};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A notice as another replica receives it.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Wake,
    Chat(ChatEvent),
    Owner(OwnerEventKind),
}

/// A LISTEN connection on every channel, and the pubsub the operations
/// announce through.
struct Listener {
    pubsub: PubSub,
    heard: mpsc::UnboundedReceiver<(String, String)>,
    _client: tokio_postgres::Client,
    stop: CancellationToken,
    sentinel: ReplicaId,
}

impl Listener {
    async fn start(db: &TestDb) -> Self {
        let (client, mut connection) = tokio_postgres::connect(db.url(), NoTls).await.unwrap();
        let (tx, heard) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(note) = message {
                    let _ = tx.send((note.channel().to_owned(), note.payload().to_owned()));
                }
            }
        });
        client
            .batch_execute(
                "LISTEN chatd_wake; LISTEN chatd_chat; LISTEN chatd_owner; LISTEN chatd_control",
            )
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let config = PubSubConfig {
            publisher: PublisherConfig {
                batch_window: Duration::ZERO,
                max_batch: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let pubsub = PubSub::start(
            ReplicaId::new_random(),
            db.url(),
            db.pool().clone(),
            config,
            &opentelemetry::global::meter("test"),
            &TaskTracker::new(),
            stop.clone(),
        );
        wait_connected(&pubsub, WAIT).await;
        Self {
            pubsub,
            heard,
            _client: client,
            stop,
            sentinel: ReplicaId::new_random(),
        }
    }

    fn ops(&self, db: &TestDb) -> ChatOps {
        ChatOps::new(db.pool().clone(), self.pubsub.clone())
    }

    /// Everything heard about `chat_id` (and wake-ups) since the last call,
    /// up to a probe published now through the operations' pubsub.
    async fn heard(&mut self, chat_id: ChatId) -> Vec<Heard> {
        let probe = ControlNotice::Probe {
            replica_id: self.sentinel,
            sent_at_micros: 0,
        };
        self.pubsub.publish_control(&probe).unwrap();
        let mut heard = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (channel, payload) = tokio::time::timeout_at(deadline, self.heard.recv())
                .await
                .expect("the probe arrives")
                .expect("the listener runs");
            match channel.as_str() {
                "chatd_wake" => heard.push(Heard::Wake),
                "chatd_chat" => {
                    let notice: ChatNotice = serde_json::from_str(&payload).unwrap();
                    if notice.chat_id == chat_id {
                        heard.push(Heard::Chat(notice.event));
                    }
                }
                "chatd_owner" => {
                    let notice: OwnerNotice = serde_json::from_str(&payload).unwrap();
                    if notice.chat_id == chat_id {
                        heard.push(Heard::Owner(notice.kind));
                    }
                }
                _ => {
                    if serde_json::from_str::<ControlNotice>(&payload).unwrap() == probe {
                        return heard;
                    }
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn owner_access(user_id: UserId) -> Access {
    Access {
        user_id,
        admin: false,
    }
}

fn status(status: ChatStatus, generation: i64, worker_id: Option<ReplicaId>) -> Heard {
    Heard::Chat(ChatEvent::Status {
        status,
        generation: Generation(generation),
        worker_id,
    })
}

fn messages(first: i64, last: i64) -> Heard {
    Heard::Chat(ChatEvent::Message {
        after_id: MessageId(first - 1),
        last_id: MessageId(last),
    })
}

/// What becoming pending sounds like.
fn pending(generation: i64) -> [Heard; 3] {
    [
        Heard::Wake,
        status(ChatStatus::Pending, generation, None),
        Heard::Owner(OwnerEventKind::Status),
    ]
}

async fn create(ops: &ChatOps, access: Access, first: Option<&[Part]>) -> ChatId {
    let labels = serde_json::json!({});
    let request = NewChatRequest {
        title: "",
        system_prompt: None,
        labels: &labels,
        model: None,
        first,
        idempotency_key: None,
        tools: Default::default(),
    };
    match ops.create(access, &request).await.unwrap() {
        CreateOutcome::Created(chat) => chat.id,
        other => panic!("created: {other:?}"),
    }
}

async fn send(ops: &ChatOps, access: Access, id: ChatId, behavior: BusyBehavior) -> SendOutcome {
    let request = SendRequest {
        content: &[Part::text("next")],
        behavior,
        model: None,
        idempotency_key: None,
        client_tools: None,
    };
    ops.send(access, id, &request).await.unwrap()
}

/// Claims every pending chat for `worker`; returns the fences.
async fn claim(ops: &ChatOps, worker: ReplicaId) -> Vec<Fence> {
    match ops.claim(worker, 100, || true).await.unwrap() {
        Claim::Started(claimed) => claimed
            .iter()
            .map(|claimed| Fence {
                chat_id: claimed.chat.id,
                worker_id: worker,
                generation: claimed.chat.generation,
            })
            .collect(),
        Claim::HandedBack(_) => panic!("still acquiring"),
    }
}

/// A chat, a model to run it with, and the listener.
struct Setup {
    db: TestDb,
    listener: Listener,
    ops: ChatOps,
    access: Access,
}

async fn setup() -> Setup {
    let db = TestDb::new().await;
    let owner = user(&db).await;
    let listener = Listener::start(&db).await;
    let model = ProviderBootstrap {
        name: "mock".into(),
        kind: ProviderKind::Mock,
        base_url: "mock://".into(),
        api_key_env: None,
        model: "mock".into(),
        context_limit: 100_000,
        make_default: true,
    };
    bootstrap::ensure(db.pool(), &listener.pubsub, &model)
        .await
        .unwrap();
    let ops = listener.ops(&db);
    Setup {
        db,
        listener,
        ops,
        access: owner_access(owner),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_chat_announces_it_and_with_a_message_its_pending_turn() {
    let Setup {
        db: _db,
        mut listener,
        ops,
        access,
    } = setup().await;
    let idle = create(&ops, access, None).await;
    assert_eq!(
        listener.heard(idle).await,
        [Heard::Owner(OwnerEventKind::Created)]
    );

    let busy = create(&ops, access, Some(&[Part::text("hello")])).await;
    let heard = listener.heard(busy).await;
    let Heard::Chat(ChatEvent::Message { last_id, .. }) = heard[1] else {
        panic!("the first message: {heard:?}");
    };
    let mut expected = vec![
        Heard::Owner(OwnerEventKind::Created),
        messages(last_id.0, last_id.0),
    ];
    expected.extend(pending(0));
    assert_eq!(heard, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_announces_the_message_and_pending_or_the_queue_by_busy_behaviour() {
    let Setup {
        db: _db,
        mut listener,
        ops,
        access,
    } = setup().await;
    let id = create(&ops, access, None).await;
    listener.heard(id).await;

    let SendOutcome::Sent(sent) = send(&ops, access, id, BusyBehavior::Queue).await else {
        panic!("an idle chat takes the message");
    };
    let mut expected = vec![messages(sent.id.0, sent.id.0)];
    expected.extend(pending(0));
    assert_eq!(listener.heard(id).await, expected);

    // Pending is busy: queued.
    assert!(matches!(
        send(&ops, access, id, BusyBehavior::Queue).await,
        SendOutcome::Queued(_)
    ));
    assert_eq!(listener.heard(id).await, [Heard::Chat(ChatEvent::Queue)]);
    assert!(matches!(
        send(&ops, access, id, BusyBehavior::Reject).await,
        SendOutcome::Busy
    ));
    assert_eq!(listener.heard(id).await, []);

    // Running: `interrupt` queues and asks the worker to stop.
    let worker = ReplicaId::new_random();
    let [fence] = claim(&ops, worker).await[..] else {
        panic!("one chat claimed");
    };
    listener.heard(id).await;
    assert!(matches!(
        send(&ops, access, id, BusyBehavior::Interrupt).await,
        SendOutcome::Queued(_)
    ));
    assert_eq!(
        listener.heard(id).await,
        [
            Heard::Chat(ChatEvent::Queue),
            Heard::Chat(ChatEvent::Interrupt {
                generation: fence.generation
            })
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_announces_what_it_did_to_a_pending_or_running_chat() {
    let Setup {
        db: _db,
        mut listener,
        ops,
        access,
    } = setup().await;
    // Pending, nothing queued: it goes back to waiting.
    let id = create(&ops, access, Some(&[Part::text("hello")])).await;
    listener.heard(id).await;
    let InterruptOutcome::Done(_, chat) = ops.interrupt(access, id).await.unwrap() else {
        panic!("interrupted");
    };
    assert_eq!(chat.0.status, ChatStatus::Waiting);
    assert_eq!(
        listener.heard(id).await,
        [
            status(ChatStatus::Waiting, 0, None),
            Heard::Owner(OwnerEventKind::Status)
        ]
    );

    // Pending with a queued message: that message replaces the stopped one.
    assert!(matches!(
        send(&ops, access, id, BusyBehavior::Queue).await,
        SendOutcome::Sent(_)
    ));
    let SendOutcome::Queued(_) = send(&ops, access, id, BusyBehavior::Queue).await else {
        panic!("queued behind the pending turn");
    };
    listener.heard(id).await;
    let InterruptOutcome::Done(_, chat) = ops.interrupt(access, id).await.unwrap() else {
        panic!("interrupted");
    };
    assert_eq!((chat.0.status, chat.1), (ChatStatus::Pending, 0));
    let heard = listener.heard(id).await;
    let Heard::Chat(ChatEvent::Message { last_id, .. }) = heard[0] else {
        panic!("the popped message: {heard:?}");
    };
    assert_eq!(
        heard,
        [
            messages(last_id.0, last_id.0),
            Heard::Chat(ChatEvent::Queue)
        ]
    );

    // Running: the worker is asked to stop; idle: nothing.
    let [fence] = claim(&ops, ReplicaId::new_random()).await[..] else {
        panic!("one chat claimed");
    };
    listener.heard(id).await;
    ops.interrupt(access, id).await.unwrap();
    assert_eq!(
        listener.heard(id).await,
        [Heard::Chat(ChatEvent::Interrupt {
            generation: fence.generation
        })]
    );
    ops.finish(&fence, &[], &TurnEnd::Done, OwnerWebhooks::Unknown)
        .await
        .unwrap();
    listener.heard(id).await;
    ops.interrupt(access, id).await.unwrap();
    assert_eq!(listener.heard(id).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_announces_a_refresh_the_queue_and_one_pending() {
    let Setup {
        db,
        mut listener,
        ops,
        access,
    } = setup().await;
    let id = create(&ops, access, Some(&[Part::text("hello")])).await;
    let first = common::messages(&db, id).await[0].id;
    listener.heard(id).await;
    let EditOutcome::Edited(_) = ops
        .edit(access, id, first, &[Part::text("hello again")])
        .await
        .unwrap()
    else {
        panic!("edited");
    };
    let mut expected = vec![
        Heard::Chat(ChatEvent::Refresh),
        Heard::Chat(ChatEvent::Queue),
    ];
    expected.extend(pending(1));
    assert_eq!(listener.heard(id).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_changes_announce_the_queue_and_a_promotion_interrupts() {
    let Setup {
        db: _db,
        mut listener,
        ops,
        access,
    } = setup().await;
    let id = create(&ops, access, Some(&[Part::text("hello")])).await;
    let [fence] = claim(&ops, ReplicaId::new_random()).await[..] else {
        panic!("one chat claimed");
    };
    let SendOutcome::Queued(first) = send(&ops, access, id, BusyBehavior::Queue).await else {
        panic!("queued");
    };
    let SendOutcome::Queued(second) = send(&ops, access, id, BusyBehavior::Queue).await else {
        panic!("queued");
    };
    listener.heard(id).await;

    assert!(matches!(
        ops.delete_queued(access, id, first.id).await.unwrap(),
        QueuedOutcome::Done(())
    ));
    assert_eq!(listener.heard(id).await, [Heard::Chat(ChatEvent::Queue)]);
    assert!(matches!(
        ops.delete_queued(access, id, QueuedMessageId(first.id.0))
            .await
            .unwrap(),
        QueuedOutcome::QueuedNotFound
    ));
    assert_eq!(listener.heard(id).await, []);

    assert!(matches!(
        ops.promote(access, id, second.id).await.unwrap(),
        QueuedOutcome::Done(_)
    ));
    assert_eq!(
        listener.heard(id).await,
        [
            Heard::Chat(ChatEvent::Queue),
            Heard::Chat(ChatEvent::Interrupt {
                generation: fence.generation
            })
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_a_chat_announce_title_archive_restore_and_deletion() {
    let Setup {
        db: _db,
        mut listener,
        ops,
        access,
    } = setup().await;
    let id = create(&ops, access, Some(&[Part::text("hello")])).await;
    listener.heard(id).await;
    let change = |title, archived| ChatChanges {
        title,
        archived,
        ..Default::default()
    };

    ops.update(access, id, &change(Some("New"), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        listener.heard(id).await,
        [
            Heard::Chat(ChatEvent::Title),
            Heard::Owner(OwnerEventKind::Title)
        ]
    );
    // The same title again changes nothing.
    ops.update(access, id, &change(Some("New"), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listener.heard(id).await, []);

    ops.update(access, id, &change(None, Some(true)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        listener.heard(id).await,
        [Heard::Owner(OwnerEventKind::Archived)]
    );
    // Restored while pending: the acquirers hear of it.
    ops.update(access, id, &change(None, Some(false)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        listener.heard(id).await,
        [Heard::Owner(OwnerEventKind::Archived), Heard::Wake]
    );

    assert!(ops.delete(access, id).await.unwrap());
    assert_eq!(
        listener.heard(id).await,
        [
            Heard::Owner(OwnerEventKind::Deleted),
            Heard::Chat(ChatEvent::Refresh)
        ]
    );
    assert!(!ops.delete(access, id).await.unwrap());
    assert_eq!(listener.heard(id).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_announces_its_claim_steps_and_end() {
    let Setup {
        db: _db,
        mut listener,
        ops,
        access,
    } = setup().await;
    let id = create(&ops, access, Some(&[Part::text("hello")])).await;
    listener.heard(id).await;
    let worker = ReplicaId::new_random();
    let [fence] = claim(&ops, worker).await[..] else {
        panic!("one chat claimed");
    };
    assert_eq!(
        listener.heard(id).await,
        [
            status(ChatStatus::Running, 1, Some(worker)),
            Heard::Owner(OwnerEventKind::Status)
        ]
    );

    let step = ops
        .persist_step(&fence, &[assistant("step 0", 0)])
        .await
        .unwrap()
        .expect("owned");
    assert_eq!(
        listener.heard(id).await,
        [messages(step[0].id.0, step[0].id.0)]
    );

    // The last step with a queued message: that message continues the run.
    let SendOutcome::Queued(_) = send(&ops, access, id, BusyBehavior::Queue).await else {
        panic!("queued");
    };
    listener.heard(id).await;
    let (committed, released) = ops
        .finish(
            &fence,
            &[assistant("step 1", 1)],
            &TurnEnd::Done,
            OwnerWebhooks::Unknown,
        )
        .await
        .unwrap()
        .expect("owned");
    let next = released.next.expect("the queued message is next");
    assert_eq!(
        listener.heard(id).await,
        [
            messages(committed[0].id.0, next.id.0),
            Heard::Chat(ChatEvent::Queue)
        ]
    );

    assert!(
        ops.retrying(&fence, 2, 1000, "rate limited".into())
            .await
            .unwrap()
    );
    assert_eq!(
        listener.heard(id).await,
        [Heard::Chat(ChatEvent::Retry {
            generation: fence.generation,
            attempt: 2,
            delay_ms: 1000,
            error: "rate limited".into()
        })]
    );

    let (committed, _) = ops
        .finish(
            &fence,
            &[assistant("step 2", 2)],
            &TurnEnd::Done,
            OwnerWebhooks::Unknown,
        )
        .await
        .unwrap()
        .expect("owned");
    assert_eq!(
        listener.heard(id).await,
        [
            messages(committed[0].id.0, committed[0].id.0),
            status(ChatStatus::Waiting, 1, None),
            Heard::Owner(OwnerEventKind::Status)
        ]
    );

    // A write after ownership moved on is refused and announces nothing.
    assert!(
        ops.persist_step(&fence, &[assistant("late", 3)])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(listener.heard(id).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_back_and_a_recovery_announce_pending_once() {
    let Setup {
        db,
        mut listener,
        ops,
        access,
    } = setup().await;
    let id = create(&ops, access, Some(&[Part::text("hello")])).await;
    let worker = ReplicaId::new_random();
    let [fence] = claim(&ops, worker).await[..] else {
        panic!("one chat claimed");
    };
    listener.heard(id).await;
    let back = ops
        .hand_back(worker, &[(id, fence.generation)])
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(listener.heard(id).await, pending(2));
    // Handed back already: a second hand-back changes nothing.
    assert!(
        ops.hand_back(worker, &[(id, fence.generation)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(listener.heard(id).await, []);

    // Claimed by a replica that has no lease: the next beat of a live
    // replica recovers it.
    let [_] = claim(&ops, ReplicaId::new_random()).await[..] else {
        panic!("one chat claimed");
    };
    listener.heard(id).await;
    let live = ReplicaId::new_random();
    let client = db.pool().get().await.unwrap();
    replicas::register(
        &client,
        &replicas::Registration {
            id: live,
            hostname: "test",
            relay_url: None,
            version: "test",
            lease_ttl: Duration::from_secs(10),
            max_running_chats: 1,
        },
    )
    .await
    .unwrap();
    let beat = ops
        .beat(db.pool(), live, Duration::from_secs(10), 100, false)
        .await
        .unwrap();
    assert_eq!(beat.recovered.len(), 1);
    assert_eq!(listener.heard(id).await, pending(4));

    // Found dead by its free lock: the same recovery, announced the same way.
    let dead = ReplicaId::new_random();
    let [_] = claim(&ops, dead).await[..] else {
        panic!("one chat claimed");
    };
    listener.heard(id).await;
    let recovered = ops.recover_replica(dead).await.unwrap();
    assert_eq!(recovered.chats.len(), 1);
    assert_eq!(listener.heard(id).await, pending(6));
}
