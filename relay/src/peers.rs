//! The following replica's side of the relay: at most one connection per
//! peer, carrying every chat followed there.
//!
//! A peer task owns its connection. It dials the peer's advertised relay URL
//! (refreshing it after a failed dial), subscribes to every chat followed
//! there from the last seq it saw, hands parts to the [`PartSink`], and on
//! any failure reconnects with jittered backoff (100 ms → 5 s) and
//! subscribes again, so nothing is skipped or repeated. Parts of a
//! generation (or worker) that is no longer the one followed are discarded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};
use tracing::Instrument;

use chatd_shared::{
    backoff::Backoff,
    ids::{ChatId, Generation, ReplicaId},
    sync::lock,
};
use futures::{SinkExt, StreamExt};
use tokio::{net::TcpStream, sync::mpsc, time::Instant};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    metrics::RelayMetrics,
    protocol::{EndReason, FromWorker, RELAY_PATH, ToWorker, now_us},
    pulse::{Due, Pulse},
    source::{PartSink, PeerDirectory},
};

/// How peer connections behave.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The shared secret presented to peers.
    pub secret: Option<String>,
    /// How often a silent connection is pinged.
    pub ping_interval: Duration,
    /// A peer silent this long is considered gone (and dialed again).
    pub idle_timeout: Duration,
    /// How long a connection with nothing followed stays open (the next
    /// turn of a chat usually follows within seconds; redialing per turn
    /// would add a dial to its first parts).
    pub linger: Duration,
    /// How long a dial may take.
    pub connect_timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            secret: None,
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            linger: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

enum Command {
    Follow {
        chat_id: ChatId,
        generation: Generation,
    },
    Unfollow {
        chat_id: ChatId,
    },
}

struct Inner {
    config: PeerConfig,
    directory: Arc<dyn PeerDirectory>,
    sink: Arc<dyn PartSink>,
    metrics: RelayMetrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The span peer tasks run in: the one current when the manager was
    /// made (the replica's).
    span: tracing::Span,
    /// Command queues of the running peer tasks.
    peers: Mutex<HashMap<ReplicaId, mpsc::UnboundedSender<Command>>>,
    /// What each followed chat is followed on: `(worker, generation)`.
    follows: Mutex<HashMap<ChatId, (ReplicaId, Generation)>>,
}

/// Follows chats on the replicas that run them. Cheap to clone.
#[derive(Clone)]
pub struct PeerManager {
    inner: Arc<Inner>,
}

impl PeerManager {
    /// A manager whose peer tasks run on `tracker` until `shutdown`, in the
    /// span current now.
    pub fn new(
        config: PeerConfig,
        directory: Arc<dyn PeerDirectory>,
        sink: Arc<dyn PartSink>,
        metrics: RelayMetrics,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                directory,
                sink,
                metrics,
                tracker,
                shutdown,
                span: tracing::Span::current(),
                peers: Mutex::new(HashMap::new()),
                follows: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Follows `chat_id`'s run `generation` on `worker`. Following it
    /// anywhere else (or under another generation) stops first, so parts of
    /// the old run are never mixed with the new one's.
    pub fn follow(&self, chat_id: ChatId, worker: ReplicaId, generation: Generation) {
        let previous = {
            let mut follows = lock(&self.inner.follows);
            match follows.get(&chat_id) {
                Some(&current) if current == (worker, generation) => return,
                // A late notice of an older run: the newer one stands.
                Some(&current) if current.1 > generation => return,
                _ => follows.insert(chat_id, (worker, generation)),
            }
        };
        if let Some((old_worker, _)) = previous
            && old_worker != worker
        {
            self.command(old_worker, Command::Unfollow { chat_id });
        }
        self.inner
            .metrics
            .subscriptions
            .store(lock(&self.inner.follows).len() as i64, Ordering::Relaxed);
        self.command(
            worker,
            Command::Follow {
                chat_id,
                generation,
            },
        );
    }

    /// Stops following `chat_id`.
    pub fn unfollow(&self, chat_id: ChatId) {
        let previous = lock(&self.inner.follows).remove(&chat_id);
        self.inner
            .metrics
            .subscriptions
            .store(lock(&self.inner.follows).len() as i64, Ordering::Relaxed);
        if let Some((worker, _)) = previous {
            self.command(worker, Command::Unfollow { chat_id });
        }
    }

    /// How many peer connections are up now.
    pub fn connected_peers(&self) -> i64 {
        self.inner.metrics.peers_connected.load(Ordering::Relaxed)
    }

    fn command(&self, worker: ReplicaId, command: Command) {
        let mut peers = lock(&self.inner.peers);
        let sender = peers.entry(worker).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            self.inner.tracker.spawn(
                peer(self.inner.clone(), worker, receiver).instrument(self.inner.span.clone()),
            );
            sender
        });
        if let Err(mpsc::error::SendError(command)) = sender.send(command) {
            // The task ended (it had nothing left to follow): start another.
            let (sender, receiver) = mpsc::unbounded_channel();
            let _ = sender.send(command);
            self.inner.tracker.spawn(
                peer(self.inner.clone(), worker, receiver).instrument(self.inner.span.clone()),
            );
            peers.insert(worker, sender);
        }
    }
}

/// What a peer task knows of one followed chat.
struct Followed {
    generation: Generation,
    last_seq: Option<u64>,
    /// The worker said this run is over: do not subscribe again.
    ended: bool,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One peer's connection, for as long as something is followed there.
async fn peer(
    inner: Arc<Inner>,
    worker: ReplicaId,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut followed: HashMap<ChatId, Followed> = HashMap::new();
    let mut backoff = Backoff::for_reconnect();
    let mut refresh = false;
    let mut first = true;
    loop {
        // Nothing to follow: wait for something (or stop).
        if followed.values().all(|f| f.ended) {
            followed.retain(|_, f| !f.ended);
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                command = commands.recv() => match command {
                    Some(command) => {
                        let _ = apply(&mut followed, command, None).await;
                    }
                    None => return,
                },
            }
            continue;
        }
        let Some(url) = inner.directory.relay_url(worker, refresh).await else {
            // The peer is gone: its runs are over, recovery will start new ones.
            tracing::debug!(%worker, "relay peer has no address; dropping its follows");
            for (chat_id, follow) in followed.drain() {
                inner.sink.ended(chat_id, follow.generation);
            }
            refresh = false;
            continue;
        };
        let dialed = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            dialed = dial(&inner.config, &url) => dialed,
        };
        let mut socket = match dialed {
            Ok(socket) => socket,
            Err(err) => {
                tracing::debug!(%worker, %url, error = %err, "relay dial failed");
                refresh = true;
                if !wait_backoff(&inner, &mut backoff, &mut followed, &mut commands).await {
                    return;
                }
                continue;
            }
        };
        refresh = false;
        if !first {
            inner.metrics.reconnects.add(1, &[]);
        }
        first = false;
        inner
            .metrics
            .peers_connected
            .fetch_add(1, Ordering::Relaxed);
        // One span per connection (ARCHITECTURE.md §11): how long it lasted, how it ended.
        let session_span = tracing::info_span!(
            "relay_peer_session",
            peer = %worker,
            url = %url,
            outcome = tracing::field::Empty,
        );
        let outcome = session(
            &inner,
            &mut socket,
            &mut followed,
            &mut commands,
            &mut backoff,
        )
        .instrument(session_span.clone())
        .await;
        session_span.record(
            "outcome",
            match &outcome {
                Session::Stop => "stopped",
                Session::Idle => "idle",
                Session::Lost(_) => "lost",
            },
        );
        inner
            .metrics
            .peers_connected
            .fetch_sub(1, Ordering::Relaxed);
        let _ = socket.close(None).await;
        match outcome {
            Session::Stop => return,
            Session::Idle => {}
            Session::Lost(reason) => {
                tracing::info!(%worker, reason, "relay connection lost; reconnecting");
                if !wait_backoff(&inner, &mut backoff, &mut followed, &mut commands).await {
                    return;
                }
            }
        }
    }
}

enum Session {
    /// Shut down.
    Stop,
    /// Nothing left to follow.
    Idle,
    /// The connection failed.
    Lost(&'static str),
}

async fn dial(config: &PeerConfig, url: &str) -> Result<Socket, tungstenite::Error> {
    let endpoint = format!("{}{RELAY_PATH}", url.trim_end_matches('/'));
    let mut request = endpoint.into_client_request()?;
    if let Some(secret) = &config.secret {
        let value = HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|err| tungstenite::Error::HttpFormat(err.into()))?;
        request.headers_mut().insert("authorization", value);
    }
    match tokio::time::timeout(
        config.connect_timeout,
        // No Nagle: parts frames are small and must not wait for ACKs.
        tokio_tungstenite::connect_async_with_config(request, None, true),
    )
    .await
    {
        Ok(result) => result.map(|(socket, _)| socket),
        Err(_) => Err(tungstenite::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "relay dial timed out",
        ))),
    }
}

/// Waits out a backoff delay, still taking commands. False on shutdown.
async fn wait_backoff(
    inner: &Inner,
    backoff: &mut Backoff,
    followed: &mut HashMap<ChatId, Followed>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> bool {
    let until = Instant::now() + backoff.next_delay();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return false,
            _ = tokio::time::sleep_until(until) => return true,
            command = commands.recv() => match command {
                Some(command) => {
                    let _ = apply(followed, command, None).await;
                }
                None => return false,
            },
        }
    }
}

/// Records a command, and tells the peer when connected.
async fn apply(
    followed: &mut HashMap<ChatId, Followed>,
    command: Command,
    socket: Option<&mut Socket>,
) -> Result<(), tungstenite::Error> {
    let frame = match command {
        Command::Follow {
            chat_id,
            generation,
        } => {
            let follow = followed.entry(chat_id).or_insert(Followed {
                generation,
                last_seq: None,
                ended: false,
            });
            if follow.generation != generation {
                *follow = Followed {
                    generation,
                    last_seq: None,
                    ended: false,
                };
            }
            ToWorker::Sub {
                chat_id,
                generation,
                after_seq: follow.last_seq,
            }
        }
        Command::Unfollow { chat_id } => {
            if followed.remove(&chat_id).is_none() {
                return Ok(());
            }
            ToWorker::Unsub { chat_id }
        }
    };
    match socket {
        Some(socket) => send(socket, &frame).await,
        None => Ok(()),
    }
}

async fn send(socket: &mut Socket, frame: &ToWorker) -> Result<(), tungstenite::Error> {
    let text = serde_json::to_string(frame)
        .map_err(|err| tungstenite::Error::Io(std::io::Error::other(err)))?;
    socket.send(Message::Text(text.into())).await
}

async fn session(
    inner: &Inner,
    socket: &mut Socket,
    followed: &mut HashMap<ChatId, Followed>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backoff: &mut Backoff,
) -> Session {
    // Subscribe again to everything, from where we were.
    for (chat_id, follow) in followed.iter().filter(|(_, f)| !f.ended) {
        let sub = ToWorker::Sub {
            chat_id: *chat_id,
            generation: follow.generation,
            after_seq: follow.last_seq,
        };
        if send(socket, &sub).await.is_err() {
            return Session::Lost("subscribing");
        }
    }
    // The connection works: later failures start from the smallest delay.
    backoff.reset();
    let mut pulse = Pulse::new(inner.config.ping_interval, inner.config.idle_timeout);
    let pulse_timer = tokio::time::sleep_until(pulse.wake_at());
    tokio::pin!(pulse_timer);
    let mut idle_since: Option<Instant> = None;
    loop {
        if followed.values().all(|f| f.ended) {
            followed.retain(|_, f| !f.ended);
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= inner.config.linger {
                return Session::Idle;
            }
        } else {
            idle_since = None;
        }
        let linger_over = idle_since.map(|since| since + inner.config.linger);
        tokio::select! {
            _ = inner.shutdown.cancelled() => return Session::Stop,
            _ = sleep_until_some(linger_over) => continue,
            command = commands.recv() => match command {
                Some(command) => {
                    if apply(followed, command, Some(&mut *socket)).await.is_err() {
                        return Session::Lost("sending a command");
                    }
                }
                None => return Session::Stop,
            },
            message = socket.next() => {
                pulse.heard();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        inner.metrics.frame("received", text.len(), 0);
                        match serde_json::from_str::<FromWorker>(&text) {
                            Ok(frame) => {
                                if let Some(resubscribe) = receive(inner, followed, frame)
                                    && send(socket, &resubscribe).await.is_err()
                                {
                                    return Session::Lost("resubscribing");
                                }
                            }
                            Err(err) => tracing::debug!(%err, "ignoring an unreadable relay frame"),
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return Session::Lost("closed by the peer"),
                    Some(Err(_)) => return Session::Lost("connection error"),
                    Some(Ok(_)) => {}
                }
            }
            _ = &mut pulse_timer => {
                match pulse.wake() {
                    Due::Gone => return Session::Lost("peer silent too long"),
                    Due::Ping => {
                        if socket.send(Message::Ping(Default::default())).await.is_err() {
                            return Session::Lost("pinging");
                        }
                    }
                    Due::Nothing => {}
                }
                pulse_timer.as_mut().reset(pulse.wake_at());
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Handles one frame; returns a `sub` to send when the chat must be
/// subscribed again (after an overflow).
fn receive(
    inner: &Inner,
    followed: &mut HashMap<ChatId, Followed>,
    frame: FromWorker,
) -> Option<ToWorker> {
    match frame {
        FromWorker::Parts {
            chat_id,
            generation,
            parts,
            sent_at_us,
        } => {
            inner.metrics.parts.add(
                parts.len() as u64,
                &[opentelemetry::KeyValue::new("direction", "received")],
            );
            let latency = (now_us() - sent_at_us).max(0) as f64 / 1e6;
            inner.metrics.latency.record(latency, &[]);
            let Some(follow) = followed
                .get_mut(&chat_id)
                .filter(|f| f.generation == generation && !f.ended)
            else {
                // A run we no longer follow (the chat moved on): never deliver it.
                inner.metrics.stale.add(parts.len() as u64, &[]);
                return None;
            };
            let fresh: Vec<_> = parts
                .into_iter()
                .filter(|p| follow.last_seq.is_none_or(|s| p.seq > s))
                .collect();
            if let Some(last) = fresh.last() {
                follow.last_seq = Some(last.seq);
                inner.sink.parts(chat_id, generation, &fresh);
            }
            None
        }
        FromWorker::Committed {
            chat_id,
            generation,
            through,
        } => {
            if followed
                .get(&chat_id)
                .is_some_and(|f| f.generation == generation && !f.ended)
            {
                inner.sink.committed(chat_id, generation, through);
            }
            None
        }
        FromWorker::End {
            chat_id,
            generation,
            reason,
        } => {
            if let Some(follow) = followed
                .get_mut(&chat_id)
                .filter(|f| f.generation == generation)
            {
                follow.ended = true;
                inner.sink.ended(chat_id, generation);
                if reason == EndReason::GenerationChanged {
                    tracing::debug!(%chat_id, %generation, "relay: the worker runs a newer generation");
                }
            }
            None
        }
        FromWorker::Overflow { chat_id } => {
            inner.metrics.overflows.add(1, &[]);
            let follow = followed.get(&chat_id).filter(|f| !f.ended)?;
            Some(ToWorker::Sub {
                chat_id,
                generation: follow.generation,
                after_seq: follow.last_seq,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use chatd_shared::{ids::MessageId, parts::Part};

    use super::*;
    use crate::protocol::RelayPart;

    /// What the sink was given, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl PartSink for Recorded {
        fn parts(&self, _: ChatId, generation: Generation, parts: &[RelayPart]) {
            let seqs: Vec<String> = parts.iter().map(|p| p.seq.to_string()).collect();
            lock(&self.0).push(format!("parts g{} {}", generation.0, seqs.join(",")));
        }

        fn committed(&self, _: ChatId, generation: Generation, through: MessageId) {
            lock(&self.0).push(format!("committed g{} {}", generation.0, through.0));
        }

        fn ended(&self, _: ChatId, generation: Generation) {
            lock(&self.0).push(format!("ended g{}", generation.0));
        }
    }

    struct NoPeers;

    #[async_trait::async_trait]
    impl PeerDirectory for NoPeers {
        async fn relay_url(&self, _: ReplicaId, _: bool) -> Option<String> {
            None
        }
    }

    fn inner(sink: Arc<Recorded>) -> Inner {
        let meter = opentelemetry::global::meter("test");
        Inner {
            config: PeerConfig::default(),
            directory: Arc::new(NoPeers),
            sink,
            metrics: RelayMetrics::new(&meter),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            span: tracing::Span::none(),
            peers: Mutex::default(),
            follows: Mutex::default(),
        }
    }

    fn parts(chat_id: ChatId, generation: i64, seqs: &[u64]) -> FromWorker {
        FromWorker::Parts {
            chat_id,
            generation: Generation(generation),
            parts: seqs
                .iter()
                .map(|&seq| RelayPart {
                    seq,
                    step: 0,
                    part: Part::TextDelta { text: "x".into() },
                })
                .collect(),
            sent_at_us: now_us(),
        }
    }

    fn following(chat_id: ChatId, generation: i64) -> HashMap<ChatId, Followed> {
        HashMap::from([(
            chat_id,
            Followed {
                generation: Generation(generation),
                last_seq: None,
                ended: false,
            },
        )])
    }

    #[test]
    fn parts_reach_the_sink_once_in_order_and_only_for_the_run_followed() {
        let sink = Arc::new(Recorded::default());
        let inner = inner(sink.clone());
        let chat = ChatId::new_v7();
        let mut followed = following(chat, 2);
        for frame in [
            parts(chat, 2, &[0, 1]),
            // Repeated after a resubscription: only what is new passes.
            parts(chat, 2, &[1, 2]),
            parts(chat, 2, &[1]),
            // An older run, and a chat nobody follows: never delivered.
            parts(chat, 1, &[3]),
            parts(ChatId::new_v7(), 2, &[0]),
            FromWorker::Committed {
                chat_id: chat,
                generation: Generation(2),
                through: MessageId(9),
            },
            FromWorker::Committed {
                chat_id: chat,
                generation: Generation(1),
                through: MessageId(10),
            },
        ] {
            assert_eq!(receive(&inner, &mut followed, frame), None);
        }
        assert_eq!(
            *lock(&sink.0),
            ["parts g2 0,1", "parts g2 2", "committed g2 9"]
        );
    }

    #[test]
    fn an_overflow_resubscribes_from_the_last_seq_and_an_ended_run_stays_ended() {
        let sink = Arc::new(Recorded::default());
        let inner = inner(sink.clone());
        let chat = ChatId::new_v7();
        let mut followed = following(chat, 3);
        receive(&inner, &mut followed, parts(chat, 3, &[0, 1, 2]));
        assert_eq!(
            receive(
                &inner,
                &mut followed,
                FromWorker::Overflow { chat_id: chat }
            ),
            Some(ToWorker::Sub {
                chat_id: chat,
                generation: Generation(3),
                after_seq: Some(2),
            })
        );
        let end = FromWorker::End {
            chat_id: chat,
            generation: Generation(3),
            reason: EndReason::Released,
        };
        assert_eq!(receive(&inner, &mut followed, end), None);
        // After its end, nothing of the run passes and no resubscription happens.
        receive(&inner, &mut followed, parts(chat, 3, &[3]));
        assert_eq!(
            receive(
                &inner,
                &mut followed,
                FromWorker::Overflow { chat_id: chat }
            ),
            None
        );
        assert_eq!(*lock(&sink.0), ["parts g3 0,1,2", "ended g3"]);
    }
}
