//! A chat's stream and the chat-list watch, over WebSocket or SSE
//! (ARCHITECTURE.md §6). Both transports carry the same JSON events; a stream ends
//! when the server closes it, usually right after a `reconnect` event.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use eventsource_stream::{EventStream, EventStreamError, Eventsource};
use futures::{
    Stream, StreamExt,
    stream::{BoxStream, FusedStream},
};
use reqwest::{
    Method, Response,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName},
};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use url::Url;

use super::{Client, ClientError, append_query, error::decode_json};
use crate::{
    api::WatchEvent,
    ids::ChatId,
    stream::{Cursor, StreamEvent},
};

/// The media type of server-sent events.
const EVENT_STREAM: &str = "text/event-stream";
/// The header an SSE client resumes with.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// How a stream is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket: one JSON event per text frame. Plain `ws://` only (an
    /// `http` base URL): the workspace builds tokio-tungstenite without TLS.
    WebSocket,
    /// Server-sent events (`Accept: text/event-stream`).
    Sse,
}

/// The events of one chat, from one connection. Yields each event in the
/// order the server sent it; ends (`None`) when the server closes the
/// stream, after a transport error, or after a WebSocket closed with an
/// error code ([`ClientError::Closed`]). An event that does not decode is an
/// error item and the stream goes on. To go on after the end, open a new
/// stream from [`ChatStream::cursor`].
pub struct ChatStream {
    chat_id: ChatId,
    events: Events,
    /// The newest message and part received, moved by every event.
    cursor: Cursor,
}

/// The caller's chat-list events ([`WatchEvent`]), from one connection.
/// Ends like a [`ChatStream`]; there is no cursor: after a reconnect, re-read
/// the list with [`Client::list_chats`].
pub struct WatchStream {
    events: Events,
}

impl Client {
    /// Opens `GET /chats/{id}/stream`, resuming after `cursor`
    /// (`Cursor::default()` for everything): as the query
    /// `after_message_id=N&after_part=G.S` over WebSocket, as
    /// `Last-Event-ID` over SSE.
    pub async fn stream_chat(
        &self,
        chat_id: ChatId,
        cursor: Cursor,
        transport: Transport,
    ) -> Result<ChatStream, ClientError> {
        let mut url = self.endpoint(&format!("chats/{chat_id}/stream"))?;
        let events = match transport {
            Transport::WebSocket => {
                append_query(&mut url, "after_message_id", cursor.after_message_id);
                append_query(&mut url, "after_part", cursor.after_part);
                self.open_websocket(url).await?
            }
            Transport::Sse => {
                let last_event_id = (cursor != Cursor::default()).then(|| cursor.to_event_id());
                self.open_sse(url, last_event_id).await?
            }
        };
        Ok(ChatStream {
            chat_id,
            events,
            cursor,
        })
    }

    /// Opens `GET /chats/watch`: the caller's chat-list events.
    pub async fn watch(&self, transport: Transport) -> Result<WatchStream, ClientError> {
        let url = self.endpoint("chats/watch")?;
        let events = match transport {
            Transport::WebSocket => self.open_websocket(url).await?,
            Transport::Sse => self.open_sse(url, None).await?,
        };
        Ok(WatchStream { events })
    }

    /// Upgrades `url` (`http` becomes `ws`) to a WebSocket. A refused
    /// upgrade is an error like a refused request.
    async fn open_websocket(&self, mut url: Url) -> Result<Events, ClientError> {
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        if url.set_scheme(scheme).is_err() {
            return Err(ClientError::Url {
                url: url.to_string(),
                reason: format!("cannot be switched to {scheme}"),
            });
        }
        let mut request = url.as_str().into_client_request()?;
        if let Some(auth) = &self.auth {
            request.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        // Events are small: tungstenite's 128 KiB default read buffer would
        // cost that much per open stream (a load test opens thousands).
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4 * 1024);
        let (socket, _) = tokio::time::timeout(
            self.request_timeout,
            tokio_tungstenite::connect_async_with_config(request, Some(config), true),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.request_timeout))?
        .map_err(refused_upgrade)?;
        Ok(Events::websocket(socket))
    }

    /// Requests `url` as server-sent events.
    async fn open_sse(
        &self,
        url: Url,
        last_event_id: Option<String>,
    ) -> Result<Events, ClientError> {
        let mut request = self.request(Method::GET, url).header(ACCEPT, EVENT_STREAM);
        if let Some(id) = last_event_id {
            request = request.header(LAST_EVENT_ID, id);
        }
        let request = request.build()?;
        let open = async {
            let response = self.http.execute(request).await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let body = response.bytes().await?;
            Err(ClientError::from_refusal(status, &body))
        };
        let response = tokio::time::timeout(self.request_timeout, open)
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))??;
        check_event_stream(&response)?;
        let body = response.bytes_stream().boxed().eventsource();
        Ok(Events::new(Source::Sse(body)))
    }
}

impl ChatStream {
    /// The chat.
    pub fn chat_id(&self) -> ChatId {
        self.chat_id
    }

    /// How the stream is carried.
    pub fn transport(&self) -> Transport {
        self.events.transport()
    }

    /// Where the stream is: pass it to [`Client::stream_chat`] to resume.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Moves the cursor past a received event: by the event itself, and by
    /// the SSE id the server sent with it. Both must agree; the further one
    /// is kept.
    fn advance(&mut self, received: Received<StreamEvent>) -> Result<StreamEvent, ClientError> {
        let Received { event, id } = received;
        self.cursor.observe(&event);
        if let Some(id) = id {
            let sent = Cursor::from_event_id(&id)
                .map_err(|error| ClientError::decode(error, id.as_bytes()))?;
            self.cursor.after_message_id = self.cursor.after_message_id.max(sent.after_message_id);
            self.cursor.after_part = self.cursor.after_part.max(sent.after_part);
        }
        Ok(event)
    }
}

impl Stream for ChatStream {
    type Item = Result<StreamEvent, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let received = ready!(this.events.poll_event(cx));
        Poll::Ready(received.map(|received| received.and_then(|received| this.advance(received))))
    }
}

impl FusedStream for ChatStream {
    fn is_terminated(&self) -> bool {
        self.events.ended
    }
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("chat_id", &self.chat_id)
            .field("transport", &self.transport())
            .field("cursor", &self.cursor)
            .field("ended", &self.events.ended)
            .finish()
    }
}

impl WatchStream {
    /// How the stream is carried.
    pub fn transport(&self) -> Transport {
        self.events.transport()
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let received = ready!(self.get_mut().events.poll_event(cx));
        Poll::Ready(received.map(|received| received.map(|received| received.event)))
    }
}

impl FusedStream for WatchStream {
    fn is_terminated(&self) -> bool {
        self.events.ended
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream")
            .field("transport", &self.transport())
            .field("ended", &self.events.ended)
            .finish()
    }
}

/// One open stream connection, decoding each event it carries.
struct Events {
    source: Source,
    /// Set once the stream has nothing more to yield.
    ended: bool,
}

/// The connection under a stream.
enum Source {
    /// Boxed: it is twice the size of the SSE side.
    WebSocket(Box<WebSocketEvents>),
    Sse(EventStream<BoxStream<'static, reqwest::Result<Bytes>>>),
}

/// A WebSocket, and what its server said when it closed it.
struct WebSocketEvents {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Set once the server sent a close frame: errors after it are the
    /// connection going away, not failures.
    closed_by_server: bool,
    /// What to yield last, when that close frame had an error code.
    close_error: Option<ClientError>,
}

/// What a connection yields next.
enum Next<E> {
    /// An event, or one that does not decode; more may follow.
    Item(Result<Received<E>, ClientError>),
    /// The end of the stream, cleanly (`None`) or on an error.
    End(Option<ClientError>),
}

/// A decoded event, and on SSE the last event id the server sent.
struct Received<E> {
    event: E,
    id: Option<String>,
}

impl Events {
    fn websocket(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self::new(Source::WebSocket(Box::new(WebSocketEvents {
            socket,
            closed_by_server: false,
            close_error: None,
        })))
    }

    fn new(source: Source) -> Self {
        Self {
            source,
            ended: false,
        }
    }

    fn transport(&self) -> Transport {
        match self.source {
            Source::WebSocket(_) => Transport::WebSocket,
            Source::Sse(_) => Transport::Sse,
        }
    }

    /// The next event; `None` once the stream ended.
    fn poll_event<E: DeserializeOwned>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Received<E>, ClientError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = match &mut self.source {
            Source::WebSocket(socket) => ready!(socket.poll_next(cx)),
            Source::Sse(events) => ready!(poll_sse(events, cx)),
        };
        Poll::Ready(match next {
            Next::Item(item) => Some(item),
            Next::End(error) => {
                self.ended = true;
                error.map(Err)
            }
        })
    }
}

impl WebSocketEvents {
    fn poll_next<E: DeserializeOwned>(&mut self, cx: &mut Context<'_>) -> Poll<Next<E>> {
        loop {
            let next = match ready!(self.socket.poll_next_unpin(cx)) {
                Some(Ok(Message::Text(text))) => Next::Item(decode_event(text.as_bytes(), None)),
                Some(Ok(Message::Binary(bytes))) => Next::Item(Err(ClientError::decode(
                    "a binary frame (events are text frames)",
                    &bytes,
                ))),
                // Keep reading: tungstenite sends the close reply on the next
                // read, and the stream ends when the server then closes the
                // connection.
                Some(Ok(Message::Close(frame))) => {
                    self.closed_by_server = true;
                    self.close_error = frame.and_then(close_error);
                    continue;
                }
                // Pings are answered by tungstenite on the next read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(_)) | None if self.closed_by_server => Next::End(self.close_error.take()),
                Some(Err(error)) => Next::End(Some(error.into())),
                None => Next::End(None),
            };
            return Poll::Ready(next);
        }
    }
}

/// The next server-sent event.
fn poll_sse<E: DeserializeOwned>(
    events: &mut EventStream<BoxStream<'static, reqwest::Result<Bytes>>>,
    cx: &mut Context<'_>,
) -> Poll<Next<E>> {
    Poll::Ready(match ready!(events.poll_next_unpin(cx)) {
        Some(Ok(event)) => {
            let id = (!event.id.is_empty()).then_some(event.id);
            Next::Item(decode_event(event.data.as_bytes(), id))
        }
        Some(Err(EventStreamError::Transport(error))) => Next::End(Some(error.into())),
        // The parser cannot get past a malformed stream.
        Some(Err(error)) => Next::End(Some(ClientError::decode(error, b""))),
        None => Next::End(None),
    })
}

/// Decodes one event's JSON.
fn decode_event<E: DeserializeOwned>(
    data: &[u8],
    id: Option<String>,
) -> Result<Received<E>, ClientError> {
    decode_json(data).map(|event| Received { event, id })
}

/// The error a close frame stands for: none for normal closure and going
/// away (a server shutting down or dropping a slow consumer says why in a
/// `reconnect` event first).
fn close_error(frame: CloseFrame) -> Option<ClientError> {
    match frame.code {
        CloseCode::Normal | CloseCode::Away => None,
        code => Some(ClientError::Closed {
            code: code.into(),
            reason: frame.reason.to_string(),
        }),
    }
}

/// The error of a failed upgrade: a refused one is an HTTP refusal.
fn refused_upgrade(error: tungstenite::Error) -> ClientError {
    match error {
        tungstenite::Error::Http(response) => ClientError::from_refusal(
            response.status(),
            response.body().as_deref().unwrap_or_default(),
        ),
        error => ClientError::WebSocket(error),
    }
}

/// Checks that a successful answer is an event stream (a route that ignored
/// `Accept` would answer JSON).
fn check_event_stream(response: &Response) -> Result<(), ClientError> {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with(EVENT_STREAM) {
        return Ok(());
    }
    Err(ClientError::decode(
        format!("expected Content-Type {EVENT_STREAM}, got {content_type:?}"),
        b"",
    ))
}
