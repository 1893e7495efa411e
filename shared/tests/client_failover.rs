//! The failover client against several fake replicas: streams reopened on
//! the next replica from their cursor (after a broken connection, a
//! `reconnect`, a silence), repeats dropped, writes repeated only with
//! their idempotency key, and calls that give up at their deadline.

#![cfg(feature = "client")]

mod client_support;

use std::{net::TcpListener, time::Duration};

use axum::http::{Method, StatusCode};
use chatd_shared::{
    api::{CreateChat, SendMessage},
    client::{
        Break, ClientError, Delivery, FailoverClient, FailoverStream, Repeat, RetryPolicy,
        Transport,
    },
    ids::{ChatId, Generation},
    parts::Part,
    status::ChatStatus,
    stream::{Cursor, StreamEvent},
    testing::wait_for,
};
use client_support::{FakeServer, Reply, TOKEN, WAIT, WsStep, chat, error_body, message, to_json};
use serde_json::json;

/// A policy quick enough for tests.
fn quick() -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_millis(300),
        deadline: Duration::from_secs(5),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        quarantine: Duration::from_secs(5),
    }
}

fn failover(urls: &[&str]) -> FailoverClient {
    FailoverClient::new(reqwest::Client::new(), urls, TOKEN, quick()).expect("failover client")
}

fn stream_path(chat_id: ChatId) -> String {
    format!("/api/v1/chats/{chat_id}/stream")
}

fn status(chat_id: ChatId, status: ChatStatus) -> StreamEvent {
    StreamEvent::Status {
        chat_id,
        status,
        generation: Generation(2),
    }
}

fn part(chat_id: ChatId, seq: u64) -> StreamEvent {
    StreamEvent::Part {
        chat_id,
        generation: Generation(2),
        step: 0,
        seq,
        part: Part::TextDelta {
            text: format!("t{seq} "),
        },
    }
}

fn text(event: &StreamEvent) -> WsStep {
    WsStep::Text(to_json(event).to_string())
}

/// A WebSocket stream that sends `events`, then `end`.
fn websocket(events: &[StreamEvent], end: Option<WsStep>) -> Reply {
    let mut steps: Vec<WsStep> = events.iter().map(text).collect();
    steps.extend(end);
    Reply::WebSocket(steps)
}

/// Reads deliveries until `count` events arrived (resumptions included in
/// the result).
async fn read(stream: &mut FailoverStream, count: usize) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    let mut events = 0;
    while events < count {
        let delivery = wait_for("the next delivery", WAIT, stream.next())
            .await
            .expect("the stream goes on");
        events += usize::from(matches!(delivery, Delivery::Event(_)));
        deliveries.push(delivery);
    }
    deliveries
}

fn events(deliveries: &[Delivery]) -> Vec<StreamEvent> {
    deliveries
        .iter()
        .filter_map(|delivery| match delivery {
            Delivery::Event(event) => Some(event.clone()),
            Delivery::Resumed(_) => None,
        })
        .collect()
}

fn resumptions(deliveries: &[Delivery]) -> Vec<(Break, usize)> {
    deliveries
        .iter()
        .filter_map(|delivery| match delivery {
            Delivery::Resumed(resumed) => Some((resumed.cause.clone(), resumed.replica)),
            Delivery::Event(_) => None,
        })
        .collect()
}

/// A base URL nobody listens on.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

/// Two fake replicas serving one chat's stream, the first one first.
struct Replicas {
    a: FakeServer,
    b: FakeServer,
    chat_id: ChatId,
}

impl Replicas {
    async fn start() -> Self {
        Self {
            a: FakeServer::start().await,
            b: FakeServer::start().await,
            chat_id: ChatId::new_v7(),
        }
    }

    /// What each replica answers on the chat's stream.
    fn serve(&self, a: Reply, b: Reply) {
        self.a.reply(Method::GET, &stream_path(self.chat_id), a);
        self.b.reply(Method::GET, &stream_path(self.chat_id), b);
    }

    /// A failover client of both, and the chat's stream opened on the first.
    async fn open(&self, transport: Transport) -> (FailoverClient, FailoverStream) {
        let client = failover(&[self.a.base_url(), self.b.base_url()]);
        let stream = client
            .stream_chat(self.chat_id, Cursor::default(), transport)
            .await
            .expect("opens on the first replica");
        assert_eq!(stream.replica(), 0);
        (client, stream)
    }
}

#[tokio::test]
async fn a_broken_websocket_resumes_on_the_next_replica_from_its_cursor() {
    let replicas = Replicas::start().await;
    let chat_id = replicas.chat_id;
    let first = [
        status(chat_id, ChatStatus::Running),
        part(chat_id, 0),
        part(chat_id, 1),
    ];
    let rest = [
        status(chat_id, ChatStatus::Running),
        part(chat_id, 2),
        StreamEvent::Message {
            chat_id,
            message: message(chat_id, 10),
        },
        status(chat_id, ChatStatus::Waiting),
    ];
    replicas.serve(
        websocket(&first, Some(WsStep::Drop)),
        websocket(&rest, None),
    );

    let (client, mut stream) = replicas.open(Transport::WebSocket).await;
    let deliveries = read(&mut stream, 7).await;

    assert!(matches!(
        resumptions(&deliveries)[..],
        [(Break::Failed(_), 1)]
    ));
    let seen = events(&deliveries);
    assert_eq!(seen[..3], first);
    assert_eq!(seen[3..], rest);
    let resumed = replicas.b.only_request();
    assert_eq!(resumed.query.as_deref(), Some("after_part=2.1"));
    assert_eq!(client.stats().counts().resumes, 1);
}

#[tokio::test]
async fn an_sse_stream_resumes_elsewhere_with_last_event_id_after_reconnect() {
    let replicas = Replicas::start().await;
    let chat_id = replicas.chat_id;
    let body = |events: &[StreamEvent]| {
        let body = events
            .iter()
            .map(|event| client_support::sse_event(&to_json(event), None))
            .collect::<String>();
        Reply::Sse(body)
    };
    let first = [
        StreamEvent::Message {
            chat_id,
            message: message(chat_id, 7),
        },
        status(chat_id, ChatStatus::Running),
        part(chat_id, 0),
    ];
    let reconnect = StreamEvent::Reconnect {
        chat_id: Some(chat_id),
        reason: "replica_shutting_down".into(),
    };
    let mut sent = first.to_vec();
    sent.push(reconnect);
    replicas.serve(body(&sent), body(&[part(chat_id, 1)]));

    let (_, mut stream) = replicas.open(Transport::Sse).await;
    let deliveries = read(&mut stream, 4).await;

    assert_eq!(
        resumptions(&deliveries),
        [(Break::Reconnect("replica_shutting_down".into()), 1)],
        "the reconnect event is acted on, not delivered"
    );
    assert_eq!(events(&deliveries)[..3], first);
    let resumed = replicas.b.only_request();
    assert_eq!(resumed.header("last-event-id"), Some("7.2.0"));
}

#[tokio::test]
async fn parts_and_messages_a_server_repeats_are_dropped_and_counted() {
    let replicas = Replicas::start().await;
    let chat_id = replicas.chat_id;
    let parts = [part(chat_id, 0), part(chat_id, 1), part(chat_id, 2)];
    // The second replica ignores the cursor and starts over.
    replicas.serve(
        websocket(&parts[..2], Some(WsStep::Close(1000, ""))),
        websocket(&parts, None),
    );

    let (client, mut stream) = replicas.open(Transport::WebSocket).await;
    let deliveries = read(&mut stream, 3).await;

    assert_eq!(events(&deliveries), parts);
    assert_eq!(resumptions(&deliveries), [(Break::Ended, 1)]);
    assert_eq!(client.stats().counts().duplicates_dropped, 2);
}

#[tokio::test]
async fn a_running_chat_that_goes_silent_is_reopened_elsewhere_after_the_stall_timeout() {
    let replicas = Replicas::start().await;
    let chat_id = replicas.chat_id;
    // A replica cut from its database: the connection stays open, silent.
    replicas.serve(
        websocket(
            &[status(chat_id, ChatStatus::Running), part(chat_id, 0)],
            None,
        ),
        websocket(&[part(chat_id, 1)], None),
    );

    let (_, stream) = replicas.open(Transport::WebSocket).await;
    let mut stream = stream.with_stall_timeout(Duration::from_millis(200));
    let deliveries = read(&mut stream, 3).await;

    assert_eq!(
        resumptions(&deliveries),
        [(Break::Stalled(Duration::from_millis(200)), 1)]
    );
    assert_eq!(events(&deliveries)[2], part(chat_id, 1));
}

#[tokio::test]
async fn a_stream_refused_for_good_is_not_reopened() {
    let replicas = Replicas::start().await;
    replicas.serve(
        websocket(&[part(replicas.chat_id, 0)], Some(WsStep::Drop)),
        Reply::Json(StatusCode::NOT_FOUND, error_body("not_found")),
    );
    let (_, mut stream) = replicas.open(Transport::WebSocket).await;
    assert!(matches!(stream.next().await, Ok(Delivery::Event(_))));
    let error = stream.next().await.expect_err("a 404 is final");
    assert_eq!(error.code(), Some("not_found"));
    assert_eq!(replicas.b.requests().len(), 1);
}

#[tokio::test]
async fn a_create_that_timed_out_is_repeated_on_the_next_replica_with_the_same_key() {
    let (a, b) = (FakeServer::start().await, FakeServer::start().await);
    let chat_id = ChatId::new_v7();
    a.reply(Method::POST, "/api/v1/chats", Reply::Hang);
    b.reply(
        Method::POST,
        "/api/v1/chats",
        Reply::Json(StatusCode::OK, to_json(&chat(chat_id))),
    );

    let client = failover(&[a.base_url(), b.base_url()]);
    let created = client
        .create_chat(&CreateChat::default(), "key-1")
        .await
        .expect("created on the second replica");
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.body.id, chat_id);
    let keys: Vec<_> = [a.only_request(), b.only_request()]
        .iter()
        .map(|request| request.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys, [Some("key-1".to_owned()), Some("key-1".to_owned())]);
    assert_eq!(client.current(), 1, "the replica that answered is kept");
    assert_eq!(client.stats().counts().retries, 1);
}

#[tokio::test]
async fn a_send_refused_with_503_moves_on_and_a_refusal_for_good_does_not() {
    let (a, b) = (FakeServer::start().await, FakeServer::start().await);
    let chat_id = ChatId::new_v7();
    let path = format!("/api/v1/chats/{chat_id}/messages");
    a.reply(
        Method::POST,
        &path,
        Reply::Json(StatusCode::SERVICE_UNAVAILABLE, error_body("shutting_down")),
    );
    b.reply(
        Method::POST,
        &path,
        Reply::Json(
            StatusCode::CREATED,
            json!({"message": to_json(&message(chat_id, 3))}),
        ),
    );
    let client = failover(&[a.base_url(), b.base_url()]);
    let message = SendMessage {
        text: Some("hi".into()),
        ..SendMessage::default()
    };
    let sent = client
        .send_message(chat_id, &message, "key-2")
        .await
        .expect("sent on the second replica");
    assert_eq!(sent.status, StatusCode::CREATED);

    b.reply(
        Method::POST,
        &path,
        Reply::Json(StatusCode::CONFLICT, error_body("chat_busy")),
    );
    let error = client
        .send_message(chat_id, &message, "key-3")
        .await
        .expect_err("409 is an answer");
    assert_eq!(error.code(), Some("chat_busy"));
    assert_eq!(a.requests().len(), 1, "409 is not retried elsewhere");
}

#[tokio::test]
async fn a_write_without_a_key_is_repeated_only_when_it_never_left() {
    let hanging = FakeServer::start().await;
    hanging.reply(Method::POST, "/api/v1/chats", Reply::Hang);
    let other = FakeServer::start().await;
    other.reply(
        Method::POST,
        "/api/v1/chats",
        Reply::Json(StatusCode::CREATED, to_json(&chat(ChatId::new_v7()))),
    );
    let create = |client: chatd_shared::client::Client| async move {
        client.create_chat(&CreateChat::default(), None).await
    };

    // It may have reached the hanging replica: not repeated.
    let client = failover(&[hanging.base_url(), other.base_url()]);
    let error = client
        .retrying(Repeat::Unsafe, create)
        .await
        .expect_err("a timeout without a key is final");
    assert!(matches!(error, ClientError::Timeout(_)), "{error:?}");
    assert!(other.requests().is_empty());

    // Nobody listens on the first: the request never left, so it moves on.
    let dead = dead_url();
    let client = failover(&[dead.as_str(), other.base_url()]);
    let created = client
        .retrying(Repeat::Unsafe, create)
        .await
        .expect("created on the live replica");
    assert_eq!(created.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_call_gives_up_at_its_deadline_when_no_replica_answers() {
    let client = FailoverClient::new(
        reqwest::Client::new(),
        &[dead_url(), dead_url()],
        TOKEN,
        RetryPolicy {
            deadline: Duration::from_millis(400),
            ..quick()
        },
    )
    .expect("client");
    let started = tokio::time::Instant::now();
    let error = wait_for(
        "the call to give up",
        WAIT,
        client.get_chat(ChatId::new_v7()),
    )
    .await
    .expect_err("nobody answers");
    assert!(matches!(error, ClientError::Http(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(client.stats().counts().retries >= 2, "it kept trying");
}

#[tokio::test]
async fn a_replica_that_timed_out_is_passed_over_by_every_clone_for_a_while() {
    let (a, b) = (FakeServer::start().await, FakeServer::start().await);
    let chat_id = ChatId::new_v7();
    a.reply(
        Method::GET,
        &format!("/api/v1/chats/{chat_id}"),
        Reply::Hang,
    );
    b.reply(
        Method::GET,
        &format!("/api/v1/chats/{chat_id}"),
        Reply::Json(StatusCode::OK, to_json(&chat(chat_id))),
    );
    let first = failover(&[a.base_url(), b.base_url()]);
    first.get_chat(chat_id).await.expect("answered by b");
    // Another user's client, preferring the replica that hung.
    let second = first.preferring(0);
    second.get_chat(chat_id).await.expect("answered by b");
    assert_eq!(a.requests().len(), 1, "only the first client waited for a");
    assert_eq!(b.requests().len(), 2);
}

#[tokio::test]
async fn a_stream_left_silent_after_the_caller_sent_a_message_is_reopened_elsewhere() {
    let replicas = Replicas::start().await;
    let chat_id = replicas.chat_id;
    // The replica's last word was `waiting`; the turn the caller starts
    // runs elsewhere, and this replica (cut from its database) never says.
    replicas.serve(
        websocket(&[status(chat_id, ChatStatus::Waiting)], None),
        websocket(&[part(chat_id, 0)], None),
    );
    let (_, stream) = replicas.open(Transport::WebSocket).await;
    let mut stream = stream.with_stall_timeout(Duration::from_millis(200));
    assert_eq!(read(&mut stream, 1).await.len(), 1);
    stream.expect_activity();
    let deliveries = read(&mut stream, 1).await;
    assert_eq!(
        resumptions(&deliveries),
        [(Break::Stalled(Duration::from_millis(200)), 1)]
    );
    assert_eq!(events(&deliveries), [part(chat_id, 0)]);
}
