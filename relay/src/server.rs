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
use chatd_shared::ids::{ChatId, Generation};
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    metrics::RelayMetrics,
    protocol::{EndReason, FromWorker, RELAY_PATH, RelayPart, ToWorker, now_us},
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
}

/// The relay listener's router. Connections end when `shutdown` fires;
/// their tasks run on `tracker`.
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
            tracker.spawn(connection(server, socket));
        })
}

/// A frame waiting to be written, and the count of its chat's queued frames.
struct Outbound {
    frame: FromWorker,
    queued: Option<Arc<AtomicUsize>>,
}

async fn connection(server: Arc<Server>, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let (outbound, mut queue) = mpsc::channel::<Outbound>(server.config.connection_queue.max(1));
    // `end` and `overflow`: few and small, but they must get through.
    let (control, mut control_queue) =
        mpsc::channel::<FromWorker>(server.config.connection_queue.max(1));
    let mut subscriptions: HashMap<ChatId, CancellationToken> = HashMap::new();
    let closing = CancellationToken::new();
    let mut ping = tokio::time::interval(server.config.ping_interval);
    ping.reset();
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = server.shutdown.cancelled() => break,
            Some(frame) = control_queue.recv() => {
                if send(&server, &mut sink, &frame).await.is_err() {
                    break;
                }
            }
            Some(item) = queue.recv() => {
                if let Some(queued) = &item.queued {
                    queued.fetch_sub(1, Ordering::AcqRel);
                }
                if send(&server, &mut sink, &item.frame).await.is_err() {
                    break;
                }
            }
            message = incoming.next() => {
                last_heard = tokio::time::Instant::now();
                match message {
                    Some(Ok(WsMessage::Text(text))) => match serde_json::from_str::<ToWorker>(&text) {
                        Ok(ToWorker::Sub { chat_id, generation, after_seq }) => {
                            if let Some(old) = subscriptions.remove(&chat_id) {
                                old.cancel();
                            }
                            let stop = closing.child_token();
                            subscriptions.insert(chat_id, stop.clone());
                            let watch = server.source.watch(chat_id);
                            server.tracker.spawn(subscription(
                                server.clone(),
                                chat_id,
                                generation,
                                after_seq,
                                watch,
                                outbound.clone(),
                                control.clone(),
                                stop,
                            ));
                        }
                        Ok(ToWorker::Unsub { chat_id }) => {
                            if let Some(stop) = subscriptions.remove(&chat_id) {
                                stop.cancel();
                            }
                        }
                        Err(err) => tracing::debug!(%err, "ignoring an unreadable relay frame"),
                    },
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= server.config.idle_timeout {
                    tracing::info!("relay peer silent too long; closing");
                    break;
                }
                if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    closing.cancel();
    let _ = sink.send(WsMessage::Close(None)).await;
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
    sink.send(WsMessage::Text(text.into())).await
}

/// What ended a subscription.
enum Ending {
    /// Tell the peer the run is over (or not here).
    End(Generation, EndReason),
    /// Tell the peer to subscribe again.
    Overflow,
    /// The peer left or unsubscribed: say nothing.
    Quiet,
}

/// Serves one `sub`: buffered parts after `after_seq`, then live ones, until
/// the run ends, the peer unsubscribes, or this chat overflows.
#[allow(clippy::too_many_arguments)]
async fn subscription(
    server: Arc<Server>,
    chat_id: ChatId,
    generation: Generation,
    after_seq: Option<u64>,
    mut watch: Watch,
    outbound: mpsc::Sender<Outbound>,
    control: mpsc::Sender<FromWorker>,
    stop: CancellationToken,
) {
    let queued = Arc::new(AtomicUsize::new(0));
    let mut last_seq = after_seq;
    let ending = 'serve: {
        // Is the run here? It may be about to start: the peer can learn that
        // a chat runs here a moment before this replica's hub does.
        let mut running = match watch.run.take() {
            Some((current, parts)) if current == generation => {
                let fresh: Vec<RelayPart> = parts
                    .into_iter()
                    .filter(|p| last_seq.is_none_or(|s| p.seq > s))
                    .collect();
                if let Some(last) = fresh.last() {
                    last_seq = Some(last.seq);
                    if !offer(&server, &outbound, &queued, chat_id, generation, fresh) {
                        break 'serve Ending::Overflow;
                    }
                }
                true
            }
            Some((current, _)) if current > generation => {
                break 'serve Ending::End(generation, EndReason::GenerationChanged);
            }
            _ => false,
        };
        let grace = tokio::time::sleep(server.config.start_grace);
        tokio::pin!(grace);
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => break 'serve Ending::Quiet,
                _ = &mut grace, if !running => break 'serve Ending::End(generation, EndReason::NotRunning),
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
                    }
                    SourceItem::RunStarted(g) if g == generation => running = true,
                    SourceItem::RunStarted(g) if g > generation => {
                        break 'serve Ending::End(generation, EndReason::GenerationChanged);
                    }
                    SourceItem::RunEnded(g) if g == generation => {
                        if !batch.is_empty()
                            && !offer(
                                &server,
                                &outbound,
                                &queued,
                                chat_id,
                                generation,
                                std::mem::take(&mut batch),
                            )
                        {
                            break 'serve Ending::Overflow;
                        }
                        break 'serve Ending::End(generation, EndReason::Released);
                    }
                    SourceItem::Overflowed => break 'serve Ending::Overflow,
                    _ => {}
                }
                // Everything already waiting goes into the same frame.
                next = watch.items.try_next();
            }
            if !batch.is_empty() && !offer(&server, &outbound, &queued, chat_id, generation, batch)
            {
                break 'serve Ending::Overflow;
            }
        }
    };
    let frame = match ending {
        Ending::End(generation, reason) => FromWorker::End {
            chat_id,
            generation,
            reason,
        },
        Ending::Overflow => {
            server.metrics.overflows.add(1, &[]);
            FromWorker::Overflow { chat_id }
        }
        Ending::Quiet => return,
    };
    let _ = control.send(frame).await;
}

/// Queues a parts frame unless this chat (or the connection) is full.
fn offer(
    server: &Server,
    outbound: &mpsc::Sender<Outbound>,
    queued: &Arc<AtomicUsize>,
    chat_id: ChatId,
    generation: Generation,
    parts: Vec<RelayPart>,
) -> bool {
    if queued.load(Ordering::Acquire) >= server.config.per_chat_frames {
        return false;
    }
    let frame = FromWorker::Parts {
        chat_id,
        generation,
        parts,
        sent_at_us: now_us(),
    };
    queued.fetch_add(1, Ordering::AcqRel);
    match outbound.try_send(Outbound {
        frame,
        queued: Some(queued.clone()),
    }) {
        Ok(()) => true,
        Err(_) => {
            queued.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }
}
