//! Chats through the public API with the typed client: turns end to end over
//! WebSocket and SSE, busy behaviours, idempotency, edits.

mod common;

use chatd_shared::{
    api::{BusyBehavior, CreateChat, EditMessage, SendMessage, SendResult},
    client::{Client, MessagesQuery, Transport},
    ids::ChatId,
    parts::Part,
    status::{ChatStatus, MessageRole},
    stream::{Cursor, StreamEvent},
    testing::eventually,
};
use common::{
    WAIT,
    app::{TestApp, idle_at, is_running, message_texts, read_until, say},
};
use serde_json::json;

fn text(part_texts: &[StreamEvent]) -> String {
    part_texts
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Part {
                part: Part::TextDelta { text },
                ..
            } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

async fn create(client: &Client, text: &str) -> ChatId {
    let created = client
        .create_chat(
            &CreateChat {
                text: Some(text.into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    created.body.id
}

async fn turns_end_to_end(transport: Transport) {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    // An idle chat first, so the stream is open before anything runs.
    let chat = client
        .create_chat(&CreateChat::default(), None)
        .await
        .unwrap()
        .body;
    assert_eq!(chat.status, ChatStatus::Waiting);
    let mut stream = client
        .stream_chat(chat.id, Cursor::default(), transport)
        .await
        .unwrap();
    let snapshot = read_until(&mut stream, |e| matches!(e, StreamEvent::Queue { .. })).await;
    assert!(
        matches!(
            snapshot[0],
            StreamEvent::Status {
                status: ChatStatus::Waiting,
                ..
            }
        ),
        "{snapshot:?}"
    );

    let sent = client
        .send_message(
            chat.id,
            &SendMessage {
                text: Some(say(json!({"text": "Hello over the wire"}))),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(sent.status, 201);
    let events = read_until(&mut stream, |e| idle_at(e, 1)).await;
    let running = events.iter().position(is_running).expect("running");
    let first_part = events
        .iter()
        .position(|e| matches!(e, StreamEvent::Part { .. }))
        .expect("parts");
    assert!(
        running < first_part,
        "running precedes the first part: {events:#?}"
    );
    assert_eq!(text(&events), "Hello over the wire");
    let replies = message_texts(&events);
    assert_eq!(
        replies.last().unwrap(),
        &(MessageRole::Assistant, "Hello over the wire".to_owned())
    );
    assert_eq!(
        replies.first().unwrap().0,
        MessageRole::User,
        "the user message is streamed too"
    );

    // A second turn on the same stream.
    client
        .send_message(
            chat.id,
            &SendMessage {
                text: Some(say(json!({"text": "Second reply"}))),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let events = read_until(&mut stream, |e| idle_at(e, 2)).await;
    assert_eq!(text(&events), "Second reply");
    let history = client
        .list_messages(chat.id, &MessagesQuery::default())
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 4);
    assert!(!history.has_more);
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_streams_turn_after_turn_over_websocket() {
    turns_end_to_end(Transport::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_streams_turn_after_turn_over_sse() {
    turns_end_to_end(Transport::Sse).await;
}

async fn wait_status(client: &Client, id: ChatId, status: ChatStatus) -> chatd_shared::api::Chat {
    eventually(&format!("chat {id} {status}"), WAIT, || async move {
        let chat = client.get_chat(id).await.ok()?;
        (chat.status == status).then_some(chat)
    })
    .await
}

fn slow(text: &str) -> String {
    say(json!({"text": text, "token_delay_ms": 150}))
}

fn send(text: String, busy: Option<BusyBehavior>) -> SendMessage {
    SendMessage {
        text: Some(text),
        busy_behavior: busy,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_chats_queue_reject_or_interrupt() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = create(
        &client,
        &slow("one two three four five six seven eight nine ten"),
    )
    .await;
    wait_status(&client, id, ChatStatus::Running).await;

    // reject: 409, nothing written.
    let rejected = client
        .send_message(id, &send("no".into(), Some(BusyBehavior::Reject)), None)
        .await
        .unwrap_err();
    assert_eq!(
        (rejected.status().map(|s| s.as_u16()), rejected.code()),
        (Some(409), Some("chat_busy"))
    );

    // queue: 202 and visible in the queue.
    let queued = client
        .send_message(id, &send(say(json!({"text": "queued answer"})), None), None)
        .await
        .unwrap();
    assert_eq!(queued.status, 202);
    let SendResult::Queued { queued } = queued.body else {
        panic!("queued")
    };
    assert_eq!(client.list_queue(id).await.unwrap().queued[0].id, queued.id);

    // interrupt: the running turn stops with its partial output saved, then
    // the queue runs: first the queued message, then the interrupting one.
    let interrupting = client
        .send_message(
            id,
            &send(
                say(json!({"text": "right away"})),
                Some(BusyBehavior::Interrupt),
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(interrupting.status, 202);
    eventually("both queued messages answered", WAIT, || async {
        let history = client
            .list_messages(id, &MessagesQuery::default())
            .await
            .ok()?;
        let chat = client.get_chat(id).await.ok()?;
        (history.messages.len() == 6 && chat.status == ChatStatus::Waiting).then_some(())
    })
    .await;
    let history = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    let roles: Vec<MessageRole> = history.iter().map(|m| m.role).collect();
    use MessageRole::{Assistant, User};
    assert_eq!(roles, [User, Assistant, User, Assistant, User, Assistant]);
    let partial = match &history[1].content[..] {
        [Part::Text { text }] => text.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        partial.len() < "one two three four five six seven eight nine ten".len(),
        "partial: {partial}"
    );
    assert!(history.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(history[3].content, [Part::text("queued answer")]);
    assert_eq!(history[5].content, [Part::text("right away")]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twenty_first_queued_message_is_refused() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = create(
        &client,
        &say(json!({"text": "a b c d e f g h", "token_delay_ms": 2000})),
    )
    .await;
    wait_status(&client, id, ChatStatus::Running).await;
    for n in 0..20 {
        let sent = client
            .send_message(id, &send(format!("queued {n}"), None), None)
            .await
            .unwrap();
        assert_eq!(sent.status, 202);
    }
    let full = client
        .send_message(id, &send("one too many".into(), None), None)
        .await
        .unwrap_err();
    assert_eq!(
        (full.status().map(|s| s.as_u16()), full.code()),
        (Some(429), Some("queue_full"))
    );
    assert_eq!(
        client.list_queue(id).await.unwrap().queued.len(),
        20,
        "nothing written"
    );
    client.interrupt_chat(id).await.unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_delete_reorder_the_queue() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = create(&client, &slow("a b c d e f g h i j k l")).await;
    wait_status(&client, id, ChatStatus::Running).await;
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        let SendResult::Queued { queued } = client
            .send_message(id, &send(say(json!({"text": name})), None), None)
            .await
            .unwrap()
            .body
        else {
            panic!("queued")
        };
        ids.push(queued.id);
    }
    client.delete_queued(id, ids[0]).await.unwrap();
    assert_eq!(
        client.delete_queued(id, ids[0]).await.unwrap_err().code(),
        Some("not_found")
    );
    let promoted = client.promote_queued(id, ids[2]).await.unwrap();
    assert_eq!(promoted.status, 202);
    assert_eq!(
        promoted
            .body
            .queued
            .iter()
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    // Promoting interrupts the running turn: "third" runs next, then "second".
    eventually("the queue to drain", WAIT, || async {
        let chat = client.get_chat(id).await.ok()?;
        let history = client
            .list_messages(id, &MessagesQuery::default())
            .await
            .ok()?;
        (chat.status == ChatStatus::Waiting && history.messages.len() == 6).then_some(())
    })
    .await;
    let history = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(history[3].content, [Part::text("third")]);
    assert_eq!(history[5].content, [Part::text("second")]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_gives_one_message_and_the_same_answer() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let chat = client
        .create_chat(&CreateChat::default(), Some("chat-key"))
        .await
        .unwrap();
    let again = client
        .create_chat(&CreateChat::default(), Some("chat-key"))
        .await
        .unwrap();
    assert_eq!((chat.status.as_u16(), again.status.as_u16()), (201, 200));
    assert_eq!(again.body.id, chat.body.id);
    let id = chat.body.id;

    let body = send(say(json!({"text": "once"})), None);
    let first = client
        .send_message(id, &body, Some("msg-key"))
        .await
        .unwrap();
    let second = client
        .send_message(id, &body, Some("msg-key"))
        .await
        .unwrap();
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (201, 200));
    assert_eq!(first.body, second.body);
    wait_status(&client, id, ChatStatus::Waiting).await;
    let third = client
        .send_message(id, &body, Some("msg-key"))
        .await
        .unwrap();
    assert_eq!(
        third.body, first.body,
        "still the original, even after the turn"
    );
    assert_eq!(user_messages(&client, id).await, 1);

    // A queued message replays as queued.
    client
        .send_message(id, &send(slow("a b c d e f g h"), None), None)
        .await
        .unwrap();
    wait_status(&client, id, ChatStatus::Running).await;
    let queued = client
        .send_message(id, &send("later".into(), None), Some("q-key"))
        .await
        .unwrap();
    let replayed = client
        .send_message(id, &send("later".into(), None), Some("q-key"))
        .await
        .unwrap();
    assert_eq!(
        (queued.status.as_u16(), replayed.status.as_u16()),
        (202, 200)
    );
    assert_eq!(queued.body, replayed.body);
    assert_eq!(client.list_queue(id).await.unwrap().queued.len(), 1);
    app.shutdown().await;
}

/// How many user messages chat `id` shows.
async fn user_messages(client: &Client, id: ChatId) -> usize {
    client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages
        .iter()
        .filter(|m| m.role == MessageRole::User)
        .count()
}

/// Sends with one key racing to an idle chat: one message, one 201, and
/// every other answer is that message (the one-statement send checks the
/// key in the statement that makes the chat busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sends_with_one_key_make_one_message() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = client
        .create_chat(&CreateChat::default(), None)
        .await
        .unwrap()
        .body
        .id;
    let body = send(say(json!({"text": "once"})), None);
    let answers =
        futures::future::join_all((0..8).map(|_| client.send_message(id, &body, Some("race-key"))))
            .await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    let created: Vec<_> = answers
        .iter()
        .filter(|answer| answer.status.as_u16() == 201)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for answer in &answers {
        assert_eq!(answer.body, created[0].body);
    }
    wait_status(&client, id, ChatStatus::Waiting).await;
    assert_eq!(user_messages(&client, id).await, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_message_reruns_the_chat_from_it() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = create(&client, &say(json!({"text": "first answer"}))).await;
    wait_status(&client, id, ChatStatus::Waiting).await;
    client
        .send_message(id, &send(say(json!({"text": "second answer"})), None), None)
        .await
        .unwrap();
    wait_status(&client, id, ChatStatus::Waiting).await;
    let before = client
        .list_messages(id, &MessagesQuery::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(before.len(), 4);
    let generation = client.get_chat(id).await.unwrap().generation;

    let edited = client
        .edit_message(
            id,
            before[2].id,
            &EditMessage {
                text: Some(say(json!({"text": "edited answer"}))),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(edited.id > before[3].id);
    let after = eventually("the edited turn", WAIT, || async {
        let chat = client.get_chat(id).await.ok()?;
        let history = client
            .list_messages(id, &MessagesQuery::default())
            .await
            .ok()?
            .messages;
        (chat.status == ChatStatus::Waiting && chat.generation > generation && history.len() == 4)
            .then_some(history)
    })
    .await;
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(after[1].id, before[1].id);
    assert_eq!(after[2].id, edited.id);
    assert_eq!(after[3].content, [Part::text("edited answer")]);
    // Assistant messages cannot be edited.
    let refused = client
        .edit_message(
            id,
            after[3].id,
            &EditMessage {
                text: Some("x".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("not_a_user_message"));
    app.shutdown().await;
}
