//! Chat streams and the chat-list watch over WebSocket and SSE, against a
//! fake server: events in order, the cursor, resuming, and how streams end.

#![cfg(feature = "client")]

mod client_support;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use chatd_shared::{
    api::{WatchEvent, WatchKind},
    client::{ChatStream, ClientError, Transport},
    ids::{ChatId, Generation, MessageId},
    parts::Part,
    status::ChatStatus,
    stream::{Cursor, PartCursor, StreamEvent},
    testing::wait_for,
};
use client_support::{
    BEARER, FakeServer, Reply, WAIT, WsStep, chat, error_body, message, sse_event, to_json,
};
use futures::{Stream, StreamExt};
use tokio::sync::Notify;

/// A turn as the server streams it, ending with a `reconnect`.
fn turn(chat_id: ChatId) -> Vec<StreamEvent> {
    let part = |seq, text: &str| StreamEvent::Part {
        chat_id,
        generation: Generation(2),
        step: 0,
        seq,
        part: Part::TextDelta {
            text: text.to_owned(),
        },
    };
    vec![
        StreamEvent::Status {
            chat_id,
            status: ChatStatus::Running,
            generation: Generation(2),
        },
        part(1, "hel"),
        part(2, "lo"),
        StreamEvent::Message {
            chat_id,
            message: message(chat_id, 10),
        },
        StreamEvent::Queue {
            chat_id,
            queued: vec![],
        },
        StreamEvent::Reconnect {
            chat_id: Some(chat_id),
            reason: "replica_shutting_down".to_owned(),
        },
    ]
}

/// The cursor after each event of [`turn`].
fn cursors_along_turn() -> Vec<Cursor> {
    let part = |seq| PartCursor {
        generation: Generation(2),
        seq,
    };
    let cursor = |message: Option<i64>, seq: Option<u64>| Cursor {
        after_message_id: message.map(MessageId),
        after_part: seq.map(part),
    };
    vec![
        cursor(None, None),
        cursor(None, Some(1)),
        cursor(None, Some(2)),
        cursor(Some(10), Some(2)),
        cursor(Some(10), Some(2)),
        cursor(Some(10), Some(2)),
    ]
}

fn websocket_script(events: &[StreamEvent]) -> Vec<WsStep> {
    let mut steps: Vec<_> = events
        .iter()
        .map(|event| WsStep::Text(to_json(event).to_string()))
        .collect();
    steps.push(WsStep::Close(1000, ""));
    steps
}

/// An SSE body as the server writes it: each event with the cursor after
/// it as its id, and keep-alive comments between.
fn sse_body(events: &[StreamEvent]) -> String {
    let mut cursor = Cursor::default();
    let mut body = String::from(": keep-alive\n\n");
    for event in events {
        cursor.observe(event);
        body.push_str(&sse_event(&to_json(event), Some(&cursor.to_event_id())));
        body.push_str(": keep-alive\n\n");
    }
    body
}

fn stream_path(chat_id: ChatId) -> String {
    format!("/api/v1/chats/{chat_id}/stream")
}

/// The next item, within the test deadline.
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    wait_for("the next stream item", WAIT, stream.next()).await
}

/// Reads the whole stream, checking the cursor after every event.
async fn read_turn(stream: &mut ChatStream) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    for expected in cursors_along_turn() {
        let event = next(stream).await.expect("an event").expect("a good event");
        events.push(event);
        assert_eq!(stream.cursor(), expected, "after {:?}", events.last());
    }
    assert!(
        next(stream).await.is_none(),
        "the stream ends when the server closes it"
    );
    events
}

#[tokio::test]
async fn websocket_stream_yields_events_in_order_moves_the_cursor_and_ends_after_reconnect() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let events = turn(chat_id);
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::WebSocket(websocket_script(&events)),
    );

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();

    assert_eq!(read_turn(&mut stream).await, events);
    let sent = server.only_request();
    assert_eq!(sent.path, stream_path(chat_id));
    assert_eq!(sent.query, None, "a fresh stream sends no cursor");
    assert_eq!(sent.header("authorization"), Some(BEARER));
    assert_eq!(sent.header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn websocket_client_answers_server_pings() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let events = turn(chat_id);
    let mut script = vec![WsStep::PingForPong(b"are you there")];
    script.extend(websocket_script(&events));
    server.reply(Method::GET, &stream_path(chat_id), Reply::WebSocket(script));

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();

    // The server sends nothing more until it has its pong.
    assert_eq!(read_turn(&mut stream).await, events);
}

#[tokio::test]
async fn websocket_resume_sends_the_cursor_as_query_parameters() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::WebSocket(vec![WsStep::Close(1000, "")]),
    );
    let client = server.client();
    let full = Cursor {
        after_message_id: Some(MessageId(10)),
        after_part: Some(PartCursor {
            generation: Generation(2),
            seq: 7,
        }),
    };
    let messages_only = Cursor {
        after_part: None,
        ..full
    };

    for cursor in [full, messages_only] {
        let mut stream = client
            .stream_chat(chat_id, cursor, Transport::WebSocket)
            .await
            .unwrap();
        assert_eq!(stream.cursor(), cursor);
        assert!(next(&mut stream).await.is_none());
    }

    let queries: Vec<_> = server.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries,
        [
            Some("after_message_id=10&after_part=2.7".to_owned()),
            Some("after_message_id=10".to_owned()),
        ]
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("last-event-id").is_none())
    );
}

#[tokio::test]
async fn websocket_closed_with_an_error_code_yields_the_error_then_ends() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let status = turn(chat_id).remove(0);
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::WebSocket(vec![
            WsStep::Text(to_json(&status).to_string()),
            WsStep::Close(1011, "internal error"),
        ]),
    );

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();

    assert_eq!(next(&mut stream).await.unwrap().unwrap(), status);
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, ClientError::Closed { code: 1011, reason } if reason == "internal error"),
        "{error:?}"
    );
    assert!(next(&mut stream).await.is_none());
}

#[tokio::test]
async fn websocket_dropped_without_a_close_frame_is_an_error() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let status = turn(chat_id).remove(0);
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::WebSocket(vec![
            WsStep::Text(to_json(&status).to_string()),
            WsStep::Drop,
        ]),
    );

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();

    assert_eq!(next(&mut stream).await.unwrap().unwrap(), status);
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert!(matches!(error, ClientError::WebSocket(_)), "{error:?}");
    assert!(next(&mut stream).await.is_none());
}

#[tokio::test]
async fn an_event_that_does_not_decode_is_an_error_and_the_stream_goes_on() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let status = turn(chat_id).remove(0);
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::WebSocket(vec![
            WsStep::Text(r#"{"type":"from_the_future"}"#.to_owned()),
            WsStep::Binary(b"\x00\x01"),
            WsStep::Text(to_json(&status).to_string()),
            WsStep::Close(1000, ""),
        ]),
    );

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();

    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, ClientError::Decode { excerpt, .. } if excerpt.contains("from_the_future")),
        "{error:?}"
    );
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert!(matches!(error, ClientError::Decode { .. }), "{error:?}");
    assert_eq!(next(&mut stream).await.unwrap().unwrap(), status);
    assert!(next(&mut stream).await.is_none());
}

#[tokio::test]
async fn sse_stream_yields_events_in_order_moves_the_cursor_and_ends_after_reconnect() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let events = turn(chat_id);
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::Sse(sse_body(&events)),
    );

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::Sse)
        .await
        .unwrap();

    assert_eq!(read_turn(&mut stream).await, events);
    let sent = server.only_request();
    assert_eq!(sent.path, stream_path(chat_id));
    assert_eq!(sent.query, None);
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
    assert_eq!(sent.header("authorization"), Some(BEARER));
    assert_eq!(
        sent.header("last-event-id"),
        None,
        "a fresh stream sends no cursor"
    );
}

#[tokio::test]
async fn sse_cursor_keeps_the_further_of_the_event_and_its_id() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let events = turn(chat_id);
    let (status, message) = (to_json(&events[0]), to_json(&events[3]));
    // The status comes with an id ahead of anything observed; the message
    // (id 10) with an id behind it.
    let body = [
        sse_event(&status, Some("8.2.5")),
        sse_event(&message, Some("9.2.5")),
        sse_event(&status, None),
    ]
    .concat();
    server.reply(Method::GET, &stream_path(chat_id), Reply::Sse(body));

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::Sse)
        .await
        .unwrap();

    let at = |message, seq| Cursor {
        after_message_id: Some(MessageId(message)),
        after_part: Some(PartCursor {
            generation: Generation(2),
            seq,
        }),
    };
    next(&mut stream).await.unwrap().unwrap();
    assert_eq!(stream.cursor(), at(8, 5));
    next(&mut stream).await.unwrap().unwrap();
    assert_eq!(stream.cursor(), at(10, 5));
    next(&mut stream).await.unwrap().unwrap();
    assert_eq!(stream.cursor(), at(10, 5));
    assert!(next(&mut stream).await.is_none());
}

#[tokio::test]
async fn sse_resume_sends_the_cursor_as_last_event_id() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::Sse(String::new()),
    );
    let cursor = Cursor {
        after_message_id: Some(MessageId(10)),
        after_part: Some(PartCursor {
            generation: Generation(2),
            seq: 7,
        }),
    };

    let mut stream = server
        .client()
        .stream_chat(chat_id, cursor, Transport::Sse)
        .await
        .unwrap();

    assert!(next(&mut stream).await.is_none());
    assert_eq!(stream.cursor(), cursor);
    let sent = server.only_request();
    assert_eq!(sent.header("last-event-id"), Some("10.2.7"));
    assert_eq!(sent.query, None);
}

#[tokio::test]
async fn sse_stream_cut_short_is_a_transport_error() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let events = turn(chat_id);
    let cut = Arc::new(Notify::new());
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::SseCut(sse_body(&events[..2]), Arc::clone(&cut)),
    );

    let mut stream = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::Sse)
        .await
        .unwrap();

    assert_eq!(next(&mut stream).await.unwrap().unwrap(), events[0]);
    assert_eq!(next(&mut stream).await.unwrap().unwrap(), events[1]);
    cut.notify_one();
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert!(matches!(error, ClientError::Http(_)), "{error:?}");
    assert!(next(&mut stream).await.is_none());
    assert_eq!(stream.cursor(), cursors_along_turn()[1]);
}

#[tokio::test]
async fn sse_answer_that_is_not_an_event_stream_is_a_decode_error() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::Json(StatusCode::OK, to_json(&chat(chat_id))),
    );

    let error = server
        .client()
        .stream_chat(chat_id, Cursor::default(), Transport::Sse)
        .await
        .unwrap_err();

    assert!(matches!(error, ClientError::Decode { .. }), "{error:?}");
}

#[tokio::test]
async fn a_refused_stream_is_an_api_error_on_both_transports() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    server.reply(
        Method::GET,
        &stream_path(chat_id),
        Reply::Json(StatusCode::NOT_FOUND, error_body("not_found")),
    );
    let client = server.client();

    for transport in [Transport::WebSocket, Transport::Sse] {
        let error = client
            .stream_chat(chat_id, Cursor::default(), transport)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some("not_found"), "{transport:?}: {error:?}");
        assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    }
}

#[tokio::test]
async fn watch_yields_chat_list_events_on_both_transports() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let events = vec![
        WatchEvent::Chat {
            kind: WatchKind::Created,
            chat: chat(chat_id),
        },
        WatchEvent::Deleted { chat_id },
        WatchEvent::Refresh,
        WatchEvent::Reconnect {
            reason: "slow_consumer".to_owned(),
        },
    ];
    let client = server.client();

    for transport in [Transport::WebSocket, Transport::Sse] {
        let reply = match transport {
            Transport::WebSocket => Reply::WebSocket(
                events
                    .iter()
                    .map(|event| WsStep::Text(to_json(event).to_string()))
                    .chain([WsStep::Close(1001, "going away")])
                    .collect(),
            ),
            Transport::Sse => Reply::Sse(
                events
                    .iter()
                    .map(|event| sse_event(&to_json(event), None))
                    .collect(),
            ),
        };
        server.reply(Method::GET, "/api/v1/chats/watch", reply);

        let stream = client.watch(transport).await.unwrap();
        assert_eq!(stream.transport(), transport);
        let received: Vec<_> = wait_for("the watch to end", WAIT, stream.collect::<Vec<_>>())
            .await
            .into_iter()
            .map(|item| item.unwrap())
            .collect();

        assert_eq!(received, events, "{transport:?}");
    }
    let requests = server.requests();
    assert!(requests.iter().all(|r| r.path == "/api/v1/chats/watch"));
    assert_eq!(requests[0].header("upgrade"), Some("websocket"));
    assert_eq!(requests[1].header("accept"), Some("text/event-stream"));
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(BEARER))
    );
}
