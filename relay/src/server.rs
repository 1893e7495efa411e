//! The worker's side of the relay: `GET /relay/v1`, one WebSocket per
//! subscribing peer, carrying every chat that peer follows here.
//!
//! Each subscription is its own task feeding the connection's bounded
//! queue. A chat may have only so many frames in that queue: past it (or
//! when the queue is full) that chat alone gets `overflow` and its
//! subscription ends; the peer subscribes again from its last seq. Nothing
//! here ever waits on a slow peer while holding the hub: the hub's queues
//! are bounded too, and overflow there ends the subscription the same way.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tracing::Instrument;

use axum::{
    Router,
    extract::{
        State,
        ws::{Message as WsMessage, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chatd_shared::ids::{ChatId, Generation, MessageId};
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    metrics::RelayMetrics,
    protocol::{EndReason, FromWorker, RELAY_PATH, RelayPart, ToWorker, now_us},
    pulse::{Due, Pulse},
    source::{PartSource, SourceItem, Watch},
};

/// How the relay server behaves.
#[derive(Debug, Clone)]
pub struct RelayServerConfig {
    /// The shared secret peers must present (`None`: anyone may connect;
    /// only for single-host setups, see `--insecure-relay`).
    pub secret: Option<String>,
    /// Frames queued per connection at most.
    pub connection_queue: usize,
    /// Frames of one chat queued at most before that chat overflows.
    pub per_chat_frames: usize,
    /// Parts in one frame at most: the follower fans a frame out to its
    /// subscribers at once, and their queues are bounded too.
    pub max_frame_parts: usize,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// A peer silent this long is dropped.
    pub idle_timeout: Duration,
    /// How long a `sub` for a run that has not started here yet waits for it.
    pub start_grace: Duration,
}

impl Default for RelayServerConfig {
    fn default() -> Self {
        Self {
            secret: None,
            connection_queue: 1024,
            per_chat_frames: 128,
            max_frame_parts: 256,
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            start_grace: Duration::from_secs(5),
        }
    }
}

struct Server {
    source: Arc<dyn PartSource>,
    config: RelayServerConfig,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    secret_digest: Option<[u8; 32]>,
    /// The span connections run in: the one current when the router was
    /// made (the replica's), so their log lines name the replica.
    span: tracing::Span,
}

/// The relay listener's router. Connections end when `shutdown` fires;
/// their tasks run on `tracker`, in the span current now.
pub fn router(
    source: Arc<dyn PartSource>,
    config: RelayServerConfig,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Router {
    let secret_digest = config.secret.as_deref().map(digest);
    let server = Arc::new(Server {
        source,
        config,
        metrics,
        shutdown,
        tracker,
        secret_digest,
        span: tracing::Span::current(),
    });
    Router::new()
        .route(RELAY_PATH, get(upgrade))
        .with_state(server)
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares digests in constant time (and so never leaks the secret's length).
fn authorized(server: &Server, headers: &HeaderMap) -> bool {
    let Some(expected) = &server.secret_digest else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(digest)
        .unwrap_or([0; 32]);
    bool::from(presented.ct_eq(expected)) && headers.contains_key(header::AUTHORIZATION)
}

async fn upgrade(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !authorized(&server, &headers) {
        server.metrics.rejected.add(1, &[]);
        return (StatusCode::UNAUTHORIZED, "relay secret missing or wrong").into_response();
    }
    let tracker = server.tracker.clone();
    upgrade
        .read_buffer_size(16 * 1024)
        .on_upgrade(move |socket| async move {
            let span = server.span.clone();
            tracker.spawn(connection(server, socket).instrument(span));
        })
}

/// A frame waiting to be written.
struct Outbound {
    frame: FromWorker,
    /// The count of its chat's queued frames (parts and commit markers).
    queued: Option<Arc<AtomicUsize>>,
    /// The subscription this frame ends.
    ends: Option<u64>,
}

async fn connection(server: Arc<Server>, socket: WebSocket) {
    server.metrics.served.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut incoming) = socket.split();
    let (outbound, mut queue) = mpsc::channel::<Outbound>(server.config.connection_queue.max(1));
    // `overflow`: few and small, and ahead of the parts. Each carries the
    // id of the subscription it ends, to forget it.
    let (control, mut control_queue) =
        mpsc::channel::<(u64, FromWorker)>(server.config.connection_queue.max(1));
    let mut subscriptions: HashMap<ChatId, (u64, CancellationToken)> = HashMap::new();
    let mut next_id = 0u64;
    let closing = CancellationToken::new();
    let mut pulse = Pulse::new(server.config.ping_interval, server.config.idle_timeout);
    let pulse_timer = tokio::time::sleep_until(pulse.wake_at());
    tokio::pin!(pulse_timer);
    loop {
        tokio::select! {
            biased;
            _ = server.shutdown.cancelled() => break,
            Some((id, frame)) = control_queue.recv() => {
                forget(&mut subscriptions, &frame, id);
                if send(&server, &mut sink, &frame).await.is_err() {
                    break;
                }
            }
            Some(item) = queue.recv() => {
                if let Some(queued) = &item.queued {
                    queued.fetch_sub(1, Ordering::AcqRel);
                }
                if let Some(id) = item.ends {
                    forget(&mut subscriptions, &item.frame, id);
                }
                if send(&server, &mut sink, &item.frame).await.is_err() {
                    break;
                }
            }
            message = incoming.next() => {
                pulse.heard();
                match message {
                    Some(Ok(WsMessage::Text(text))) => match serde_json::from_str::<ToWorker>(&text) {
                        Ok(ToWorker::Sub { chat_id, generation, after_seq }) => {
                            let stop = closing.child_token();
                            next_id += 1;
                            if let Some((_, old)) = subscriptions.insert(chat_id, (next_id, stop.clone())) {
                                old.cancel();
                            }
                            let watch = server.source.watch(chat_id, generation);
                            server.tracker.spawn(subscription(
                                server.clone(),
                                Subscription { id: next_id, chat_id, generation, after_seq },
                                watch,
                                outbound.clone(),
                                control.clone(),
                                stop,
                            ).in_current_span());
                        }
                        Ok(ToWorker::Unsub { chat_id }) => {
                            if let Some((_, stop)) = subscriptions.remove(&chat_id) {
                                stop.cancel();
                            }
                        }
                        Err(err) => tracing::debug!(%err, "ignoring an unreadable relay frame"),
                    },
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            _ = &mut pulse_timer => {
                match pulse.wake() {
                    Due::Gone => {
                        tracing::info!("relay peer silent too long; closing");
                        break;
                    }
                    Due::Ping => {
                        if send_within(&server, &mut sink, WsMessage::Ping(Default::default())).await.is_err() {
                            break;
                        }
                    }
                    Due::Nothing => {}
                }
                pulse_timer.as_mut().reset(pulse.wake_at());
            }
        }
    }
    closing.cancel();
    server.metrics.served.fetch_sub(1, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(WsMessage::Close(None))).await;
}

/// Drops the record of subscription `id` that `frame` ends (unless a newer
/// `sub` of the chat replaced it already).
fn forget(
    subscriptions: &mut HashMap<ChatId, (u64, CancellationToken)>,
    frame: &FromWorker,
    id: u64,
) {
    if let FromWorker::End { chat_id, .. } | FromWorker::Overflow { chat_id } = frame
        && subscriptions
            .get(chat_id)
            .is_some_and(|(current, _)| *current == id)
    {
        subscriptions.remove(chat_id);
    }
}

async fn send(
    server: &Server,
    sink: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    frame: &FromWorker,
) -> Result<(), axum::Error> {
    let text = serde_json::to_string(frame).map_err(axum::Error::new)?;
    let parts = match frame {
        FromWorker::Parts { parts, .. } => parts.len(),
        _ => 0,
    };
    server.metrics.frame("sent", text.len(), parts);
    send_within(server, sink, WsMessage::Text(text.into())).await
}

/// Writes a message, giving up on a peer that has not taken anything for
/// the idle timeout: a peer that stopped reading must not hold the
/// connection (and its subscriptions) forever.
async fn send_within(
    server: &Server,
    sink: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    message: WsMessage,
) -> Result<(), axum::Error> {
    match tokio::time::timeout(server.config.idle_timeout, sink.send(message)).await {
        Ok(sent) => sent,
        Err(_) => {
            tracing::info!("relay peer stopped reading; closing");
            Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "relay peer stopped reading",
            )))
        }
    }
}

/// What ended a subscription.
enum Ending {
    /// Tell the peer the run is over (or not here).
    End(EndReason),
    /// Tell the peer to subscribe again.
    Overflow,
    /// The peer left or unsubscribed: say nothing.
    Quiet,
}

/// One `sub` as received.
struct Subscription {
    /// Tells this subscription from a later one of the same chat.
    id: u64,
    chat_id: ChatId,
    generation: Generation,
    after_seq: Option<u64>,
}

/// Serves one `sub`: the last commit and the buffered parts after
/// `after_seq`, then live ones, until the run ends, the peer unsubscribes, or
/// this chat overflows.
async fn subscription(
    server: Arc<Server>,
    sub: Subscription,
    mut watch: Watch,
    outbound: mpsc::Sender<Outbound>,
    control: mpsc::Sender<(u64, FromWorker)>,
    stop: CancellationToken,
) {
    let Subscription {
        id,
        chat_id,
        generation,
        after_seq,
    } = sub;
    let outlet = Outlet {
        server: &server,
        outbound: &outbound,
        queued: Arc::new(AtomicUsize::new(0)),
        chat_id,
        generation,
    };
    let mut last_seq = after_seq;
    let ending = 'serve: {
        if watch.ended {
            break 'serve Ending::End(EndReason::Released);
        }
        // Is the run here? It may be about to start: the peer can learn that
        // a chat runs here a moment before this replica's hub does.
        let mut running = match watch.run.take() {
            Some((current, parts)) if current == generation => {
                // Steps committed before now: their parts are gone (superseded).
                if let Some(through) = watch.committed
                    && !outlet.committed(through)
                {
                    break 'serve Ending::Overflow;
                }
                let fresh: Vec<RelayPart> = parts
                    .into_iter()
                    .filter(|p| last_seq.is_none_or(|s| p.seq > s))
                    .collect();
                if let Some(last) = fresh.last() {
                    last_seq = Some(last.seq);
                    for chunk in fresh.chunks(server.config.max_frame_parts.max(1)) {
                        if !outlet.parts(chunk.to_vec()) {
                            break 'serve Ending::Overflow;
                        }
                    }
                }
                true
            }
            Some((current, _)) if current > generation => {
                break 'serve Ending::End(EndReason::GenerationChanged);
            }
            _ => false,
        };
        let grace = tokio::time::sleep(server.config.start_grace);
        tokio::pin!(grace);
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => break 'serve Ending::Quiet,
                _ = &mut grace, if !running => break 'serve Ending::End(EndReason::NotRunning),
                item = watch.items.next() => item,
            };
            let mut batch = Vec::new();
            let mut next = Some(item);
            while let Some(item) = next.take() {
                match item {
                    SourceItem::Part {
                        generation: g,
                        part,
                    } if g == generation && running && last_seq.is_none_or(|s| part.seq > s) => {
                        last_seq = Some(part.seq);
                        batch.push(part);
                        if batch.len() >= server.config.max_frame_parts && !outlet.flush(&mut batch)
                        {
                            break 'serve Ending::Overflow;
                        }
                    }
                    SourceItem::Committed {
                        generation: g,
                        through,
                    } if g == generation && running => {
                        // The marker goes after every part of the step.
                        let sent = outlet.flush(&mut batch) && outlet.committed(through);
                        if !sent {
                            break 'serve Ending::Overflow;
                        }
                    }
                    SourceItem::RunStarted(g) if g == generation => running = true,
                    SourceItem::RunStarted(g) if g > generation => {
                        break 'serve Ending::End(EndReason::GenerationChanged);
                    }
                    SourceItem::RunEnded(g) if g == generation => {
                        if !outlet.flush(&mut batch) {
                            break 'serve Ending::Overflow;
                        }
                        break 'serve Ending::End(EndReason::Released);
                    }
                    SourceItem::Overflowed => break 'serve Ending::Overflow,
                    _ => {}
                }
                // Everything already waiting goes into the same frame.
                next = watch.items.try_next();
            }
            if !outlet.flush(&mut batch) {
                break 'serve Ending::Overflow;
            }
        }
    };
    // Nothing more is read from the hub.
    drop(watch);
    match ending {
        // After the run's last parts, in order: the peer must not drop them
        // as parts of an ended run.
        Ending::End(reason) => {
            let end = Outbound {
                frame: FromWorker::End {
                    chat_id,
                    generation,
                    reason,
                },
                queued: None,
                ends: Some(id),
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = outbound.send(end) => {}
            }
        }
        // Ahead of anything queued: the peer subscribes again from its last
        // seq, and drops what it then gets twice.
        Ending::Overflow => {
            server.metrics.overflows.add(1, &[]);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = control.send((id, FromWorker::Overflow { chat_id })) => {}
            }
        }
        Ending::Quiet => {}
    }
}

/// One subscription's way into its connection's queue.
struct Outlet<'a> {
    server: &'a Server,
    outbound: &'a mpsc::Sender<Outbound>,
    /// This chat's frames in the queue now.
    queued: Arc<AtomicUsize>,
    chat_id: ChatId,
    generation: Generation,
}

impl Outlet<'_> {
    /// Queues a parts frame; false when this chat (or the connection) is full.
    fn parts(&self, parts: Vec<RelayPart>) -> bool {
        self.offer(FromWorker::Parts {
            chat_id: self.chat_id,
            generation: self.generation,
            parts,
            sent_at_us: now_us(),
        })
    }

    /// Queues the parts gathered in `batch`, if any.
    fn flush(&self, batch: &mut Vec<RelayPart>) -> bool {
        batch.is_empty() || self.parts(std::mem::take(batch))
    }

    /// Queues a commit marker; false when full.
    fn committed(&self, through: MessageId) -> bool {
        self.offer(FromWorker::Committed {
            chat_id: self.chat_id,
            generation: self.generation,
            through,
        })
    }

    fn offer(&self, frame: FromWorker) -> bool {
        if self.queued.load(Ordering::Acquire) >= self.server.config.per_chat_frames {
            return false;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let item = Outbound {
            frame,
            queued: Some(self.queued.clone()),
            ends: None,
        };
        match self.outbound.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                false
            }
        }
    }
}
