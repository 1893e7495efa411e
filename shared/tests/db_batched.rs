//! Batched reads (`db::batched`) against a real database: many callers at
//! once, one queue, and each gets exactly what its own read alone would
//! have returned; the batched statements (`messages::visible_after_each`,
//! `prompt_context::load_each`) agree with their one-chat forms.

use chatd_shared::{
    db::{
        DbResult,
        batched::{BatchStatement, Batched},
        chats,
        messages::{self, Message, NewMessage},
        prompt_context,
        sends::{self, SendCall},
        spend, system_prompts, transitions, users,
    },
    ids::{ChatId, MessageId, UserId},
    parts::Part,
    status::{ChatStatus, MessageRole, MessageVisibility, UserRole},
    testing::TestDb,
};
use tokio_util::task::TaskTracker;

/// Messages read per chat by [`NewMessages`].
const LIMIT: i64 = 50;

/// What a stream feed reads: a chat's visible messages after a watermark.
struct NewMessages;

impl BatchStatement for NewMessages {
    type Want = (ChatId, MessageId);
    type Got = Vec<Message>;
    const WRITES: bool = false;

    async fn run_each(
        client: &deadpool_postgres::Client,
        wants: &[Self::Want],
    ) -> DbResult<Vec<Self::Got>> {
        messages::visible_after_each(client, wants, LIMIT).await
    }
}

/// `count` chats of `owner`; chat `i` gets the messages `messages(i)` says
/// (one visibility each). Returns each chat with its message ids.
async fn chats_with_messages(
    client: &deadpool_postgres::Client,
    owner: UserId,
    count: usize,
    messages: impl Fn(usize) -> Vec<MessageVisibility>,
) -> Vec<(ChatId, Vec<MessageId>)> {
    let labels = serde_json::json!({});
    let content = [Part::text("hello")];
    let mut made = Vec::new();
    for index in 0..count {
        let chat = transitions::insert(
            client,
            &chats::NewChat {
                id: ChatId::new_v7(),
                owner_id: owner,
                parent_chat_id: None,
                root_chat_id: None,
                title: "",
                status: ChatStatus::Waiting,
                model_config_id: None,
                system_prompt: None,
                labels: &labels,
                tools: Default::default(),
                trace_parent: None,
            },
        )
        .await
        .unwrap()
        .id;
        let mut ids = Vec::new();
        for visibility in messages(index) {
            let message = NewMessage {
                visibility: Some(visibility),
                content: &content,
                ..Default::default()
            };
            let role = if ids.len() % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            };
            ids.push(
                messages::insert(client, chat, role, &message)
                    .await
                    .unwrap()
                    .id,
            );
        }
        made.push((chat, ids));
    }
    made
}

fn ids(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|message| message.id).collect()
}

#[tokio::test]
async fn concurrent_reads_of_many_chats_each_get_their_own_chats_messages() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let owner = users::insert(&client, UserId::new_random(), "batched", UserRole::Member)
        .await
        .unwrap()
        .id;
    // Chat 0 has a model-only message; chat 1 more than a read's limit.
    let made = chats_with_messages(&client, owner, 40, |index| match index {
        0 => vec![
            MessageVisibility::Both,
            MessageVisibility::Model,
            MessageVisibility::Both,
            MessageVisibility::User,
        ],
        1 => vec![MessageVisibility::Both; LIMIT as usize + 5],
        _ => vec![MessageVisibility::Both; index % 4 + 1],
    })
    .await;
    // Read from the first message on, or from the start.
    let wants: Vec<(ChatId, MessageId)> = made
        .iter()
        .enumerate()
        .map(|(index, (chat, ids))| (*chat, if index % 2 == 0 { ids[0] } else { MessageId(0) }))
        .collect();

    let batched = Batched::<NewMessages>::new(db.pool().clone(), TaskTracker::new());
    let read = futures::future::join_all(wants.iter().map(|want| batched.run(*want))).await;

    let mut total = 0;
    for ((chat, after), got) in wants.iter().zip(read) {
        let got = ids(&got.unwrap());
        total += got.len();
        let alone = messages::visible_after(&client, *chat, *after, LIMIT)
            .await
            .unwrap();
        assert_eq!(got, ids(&alone), "chat {chat} after {after:?}");
    }
    assert!(total > wants.len(), "{total} messages read");
    // Chat 0 after its first: the model-only message left out. Chat 1: a
    // whole read's worth.
    let first_two =
        futures::future::join_all(wants[..2].iter().map(|want| batched.run(*want))).await;
    let lengths: Vec<usize> = first_two
        .into_iter()
        .map(|got| got.unwrap().len())
        .collect();
    assert_eq!(lengths, [2, LIMIT as usize]);
}

#[tokio::test]
async fn prompt_contexts_read_together_are_those_read_one_by_one() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let ada = users::insert(&client, UserId::new_random(), "ada", UserRole::Member)
        .await
        .unwrap()
        .id;
    let bob = users::insert(&client, UserId::new_random(), "bob", UserRole::Member)
        .await
        .unwrap()
        .id;
    system_prompts::set_user(&client, ada, "Call me Ada.")
        .await
        .unwrap();
    spend::set_user_limit(&client, ada, Some(5)).await.unwrap();
    chatd_shared::testing::webhook_for(&client, bob).await;
    let visibilities = |index: usize| match index % 3 {
        0 => Vec::new(),
        1 => vec![
            MessageVisibility::Both,
            MessageVisibility::User,
            MessageVisibility::Model,
        ],
        _ => vec![MessageVisibility::Both; 6],
    };
    let mut wants = Vec::new();
    for owner in [ada, bob] {
        for (chat, _) in chats_with_messages(&client, owner, 6, visibilities).await {
            wants.push((chat, owner));
        }
    }

    let together = prompt_context::load_each(&client, &wants).await.unwrap();
    assert_eq!(together.len(), wants.len());
    for ((chat, owner), context) in wants.iter().zip(&together) {
        let alone = prompt_context::load(&client, *chat, *owner).await.unwrap();
        assert_eq!(context, &alone, "chat {chat}");
    }
    assert_eq!(together[0].user_prompt, "Call me Ada.");
    assert_eq!(together[0].user_spend_limit, Some(5));
    assert_eq!(together[1].history.len(), 2, "user-only message left out");
    assert_eq!(together[2].history.len(), 6);
    assert_eq!(together[6].user_prompt, "");
    assert!(!together[0].owner_webhooks && together[6].owner_webhooks);
    // The settings come with a history too, not only with an empty one.
    assert_eq!(together[2].user_prompt, "Call me Ada.");
    assert_eq!(together[2].user_spend_limit, Some(5));
    assert!(!together[2].owner_webhooks && together[8].owner_webhooks);
    assert_eq!(together[8].history.len(), 6);

    // Through the queue, as the turn loop reads them.
    let batched = Batched::<prompt_context::Loads>::new(db.pool().clone(), TaskTracker::new());
    let read = futures::future::join_all(wants.iter().map(|want| batched.run(*want))).await;
    for (got, expected) in read.into_iter().zip(&together) {
        assert_eq!(&got.unwrap(), expected);
    }
}

/// A write, for the queue's rules for writes: inserts keys into a table
/// where each key may be once.
struct Inserts;

impl BatchStatement for Inserts {
    type Want = i64;
    type Got = ();
    const WRITES: bool = true;

    async fn run_each(
        client: &deadpool_postgres::Client,
        wants: &[Self::Want],
    ) -> DbResult<Vec<Self::Got>> {
        let keys: Vec<i64> = wants.to_vec();
        client
            .execute(
                "INSERT INTO batched_keys SELECT unnest($1::bigint[])",
                &[&keys],
            )
            .await?;
        Ok(vec![(); wants.len()])
    }
}

#[tokio::test]
async fn a_refused_batched_write_fails_only_the_call_that_caused_it() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute("CREATE TABLE batched_keys (key bigint PRIMARY KEY); INSERT INTO batched_keys VALUES (7)")
        .await
        .unwrap();
    let batched = Batched::<Inserts>::new(db.pool().clone(), TaskTracker::new());
    // Hold the table so that every call queues behind the first and they
    // make one batch with the key that is taken.
    let mut hold = db.pool().get().await.unwrap();
    let lock = hold.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE batched_keys IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let first = tokio::spawn({
        let batched = batched.clone();
        async move { batched.run(1).await }
    });
    chatd_shared::testing::eventually("the first insert to wait on the lock", std::time::Duration::from_secs(10), || async {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO batched_keys%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (waiting == 1).then_some(())
    })
    .await;
    let rest = futures::future::join_all([2, 7, 3].map(|key| batched.run(key)));
    let release = async {
        // The three are queued once the runner is busy with the first.
        tokio::task::yield_now().await;
        lock.commit().await.unwrap();
    };
    let (rest, ()) = tokio::join!(rest, release);
    assert!(first.await.unwrap().is_ok());
    let outcomes: Vec<Option<String>> = rest
        .iter()
        .map(|got| {
            got.as_ref()
                .err()
                .and_then(|err| err.sql_state())
                .map(|s| s.code().to_owned())
        })
        .collect();
    assert_eq!(
        outcomes,
        [None, Some("23505".to_owned()), None],
        "only the taken key fails"
    );
    let keys: Vec<i64> = client
        .query("SELECT key FROM batched_keys ORDER BY key", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(keys, [1, 2, 3, 7]);
}

/// Chats of `owner` in every state a send meets: idle, in error, busy,
/// archived, idle with a key used before; and the sends to them, the
/// first chat twice (two requests at once), one by a stranger.
async fn sends_of_every_kind(
    client: &deadpool_postgres::Client,
    owner: UserId,
    stranger: UserId,
) -> Vec<(ChatId, Option<&'static str>, Option<UserId>)> {
    let chats: Vec<ChatId> = chats_with_messages(client, owner, 6, |_| Vec::new())
        .await
        .into_iter()
        .map(|(chat, _)| chat)
        .collect();
    let set = |sql: &'static str, chat: ChatId| async move {
        client.execute(sql, &[&chat]).await.unwrap();
    };
    set(
        "UPDATE chats SET status = 'error', last_error = 'x' WHERE id = $1",
        chats[1],
    )
    .await;
    set(
        "UPDATE chats SET status = 'pending' WHERE id = $1",
        chats[2],
    )
    .await;
    set("UPDATE chats SET archived = true WHERE id = $1", chats[3]).await;
    let used = NewMessage {
        content: &[Part::text("before")],
        idempotency_key: Some("k-used"),
        ..Default::default()
    };
    messages::insert(client, chats[4], MessageRole::User, &used)
        .await
        .unwrap();
    vec![
        (chats[0], Some("k-a"), Some(owner)),
        (chats[0], Some("k-b"), Some(owner)),
        (chats[1], None, Some(owner)),
        (chats[2], None, Some(owner)),
        (chats[3], None, None),
        (chats[4], Some("k-used"), Some(owner)),
        (chats[5], None, Some(stranger)),
    ]
}

/// What a send left for a client to see: its answer and the chat row.
async fn send_seen(
    client: &deadpool_postgres::Client,
    chat: ChatId,
    answer: Option<(Message, chats::BecamePending)>,
) -> String {
    let answer =
        answer.map(|(m, pending)| (m.role, m.content, m.idempotency_key, pending.generation));
    let row = chats::get(client, chat).await.unwrap().unwrap();
    format!(
        "{answer:?} status={:?} error={:?} trace={:?}",
        row.status, row.last_error, row.trace_parent
    )
}

#[tokio::test]
async fn sends_made_together_are_those_made_one_by_one() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let mut seen = Vec::new();
    for together in [false, true] {
        let user = |name: String| {
            let client = &client;
            async move {
                users::insert(client, UserId::new_random(), &name, UserRole::Member)
                    .await
                    .unwrap()
                    .id
            }
        };
        let owner = user(format!("o{together}")).await;
        let stranger = user(format!("s{together}")).await;
        let sends = sends_of_every_kind(&client, owner, stranger).await;
        let content = [Part::text("hi")];
        let outgoing = |key: Option<&'static str>| transitions::Outgoing {
            content: &content,
            created_by: Some(owner),
            idempotency_key: key,
            trace_parent: Some("00-trace-01"),
        };
        let answers = if together {
            let calls: Vec<_> = sends
                .iter()
                .map(|(chat, key, only)| SendCall::new(*chat, &outgoing(*key), *only).unwrap())
                .collect();
            sends::send_each(&client, &calls).await.unwrap()
        } else {
            let mut answers = Vec::new();
            for (chat, key, only) in &sends {
                answers.push(
                    transitions::send_to_idle(&client, *chat, &outgoing(*key), *only)
                        .await
                        .unwrap(),
                );
            }
            answers
        };
        let mut this = Vec::new();
        for ((chat, _, _), answer) in sends.iter().zip(answers) {
            this.push(send_seen(&client, *chat, answer).await);
        }
        seen.push(this);
    }
    assert_eq!(seen[1], seen[0]);
    // And what they are: the first send of the two to one chat, the chat in
    // error, and nothing else.
    let sent: Vec<bool> = seen[1].iter().map(|s| s.starts_with("Some")).collect();
    assert_eq!(sent, [true, false, true, false, false, false, false]);
}
