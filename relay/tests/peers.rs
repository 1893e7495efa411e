//! The follower's side of the relay against a scripted worker: a real
//! WebSocket server in the test that records what the peer manager sends and
//! replies with exactly the frames a test chooses (stale ones included).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chatd_relay::{
    PartSink, PeerConfig, PeerDirectory, PeerManager, RelayMetrics,
    protocol::{EndReason, FromWorker, RelayPart, ToWorker},
};
use chatd_shared::{
    ids::{ChatId, Generation, MessageId, ReplicaId},
    parts::Part,
    testing::{eventually, wait_for},
};
use futures::{SinkExt, StreamExt};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "peer-test-secret-0123456789";

/// What the scripted worker does with one connection.
enum Script {
    /// Sends a frame.
    Send(FromWorker),
    /// Drops the connection.
    Close,
}

/// One connection the scripted worker accepted.
struct Connection {
    /// The `Authorization` header it presented.
    authorization: Option<String>,
    /// Frames the peer manager sent.
    received: mpsc::UnboundedReceiver<ToWorker>,
    /// What to do next.
    script: mpsc::UnboundedSender<Script>,
}

impl Connection {
    async fn next_frame(&mut self) -> ToWorker {
        wait_for("a frame from the peer manager", WAIT, self.received.recv())
            .await
            .expect("the connection is open")
    }

    fn send(&self, frame: FromWorker) {
        self.script.send(Script::Send(frame)).unwrap();
    }
}

/// A relay worker whose every reply the test scripts.
struct ScriptedWorker {
    url: String,
    connections: mpsc::UnboundedReceiver<Connection>,
}

impl ScriptedWorker {
    /// Accepts connections; `answer_pings: false` makes it a peer that
    /// stops reading once connected (it never answers a ping).
    async fn start(answer_pings: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let (accepted, connections) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let authorization = Arc::new(Mutex::new(None));
                let seen = authorization.clone();
                // The error type is tungstenite's, as its callback trait wants.
                #[allow(clippy::result_large_err)]
                let callback = move |request: &Request, response: Response| {
                    *seen.lock().unwrap() = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                else {
                    continue;
                };
                let (frames, received) = mpsc::unbounded_channel();
                let (script, mut scripted) = mpsc::unbounded_channel();
                let authorization = authorization.lock().unwrap().take();
                let _ = accepted.send(Connection {
                    authorization,
                    received,
                    script,
                });
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            message = socket.next(), if answer_pings => match message {
                                Some(Ok(Message::Text(text))) => {
                                    let _ = frames.send(serde_json::from_str(&text).unwrap());
                                }
                                Some(Ok(_)) => {}
                                _ => return,
                            },
                            step = scripted.recv() => match step {
                                Some(Script::Send(frame)) => {
                                    let text = serde_json::to_string(&frame).unwrap();
                                    if socket.send(Message::Text(text.into())).await.is_err() {
                                        return;
                                    }
                                }
                                Some(Script::Close) | None => return,
                            },
                        }
                    }
                });
            }
        });
        Self { url, connections }
    }

    async fn accept(&mut self) -> Connection {
        wait_for("a relay connection", WAIT, self.connections.recv())
            .await
            .unwrap()
    }
}

/// The worker's address, whatever the replica id.
struct Directory(String);

#[async_trait::async_trait]
impl PeerDirectory for Directory {
    async fn relay_url(&self, _: ReplicaId, _: bool) -> Option<String> {
        Some(self.0.clone())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Delivered {
    Parts(ChatId, Generation, Vec<u64>),
    Committed(ChatId, Generation, MessageId),
    Ended(ChatId, Generation),
}

/// Records what reaches the local hub.
#[derive(Default)]
struct Recorder(Mutex<Vec<Delivered>>);

impl Recorder {
    fn delivered(&self) -> Vec<Delivered> {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, expected: &[Delivered]) {
        eventually("the sink to get the parts", WAIT, || {
            let got = self.delivered();
            async move { (got == expected).then_some(()) }
        })
        .await;
    }
}

impl PartSink for Recorder {
    fn parts(&self, chat_id: ChatId, generation: Generation, parts: &[RelayPart]) {
        let seqs = parts.iter().map(|p| p.seq).collect();
        self.0
            .lock()
            .unwrap()
            .push(Delivered::Parts(chat_id, generation, seqs));
    }

    fn committed(&self, chat_id: ChatId, generation: Generation, through: MessageId) {
        self.0
            .lock()
            .unwrap()
            .push(Delivered::Committed(chat_id, generation, through));
    }

    fn ended(&self, chat_id: ChatId, generation: Generation) {
        self.0
            .lock()
            .unwrap()
            .push(Delivered::Ended(chat_id, generation));
    }
}

struct Follower {
    peers: PeerManager,
    sink: Arc<Recorder>,
    stop: CancellationToken,
}

impl Follower {
    fn new(url: &str, config: PeerConfig) -> Self {
        let sink = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let meter = opentelemetry::global::meter("relay-test");
        let peers = PeerManager::new(
            config,
            Arc::new(Directory(url.into())),
            sink.clone(),
            RelayMetrics::new(&meter),
            TaskTracker::new(),
            stop.clone(),
        );
        Self { peers, sink, stop }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A scripted worker, a follower following one chat there, and the
/// connection the follower made, past its first `sub`.
async fn following(generation: i64) -> (ScriptedWorker, Follower, ChatId, ReplicaId, Connection) {
    let mut worker = ScriptedWorker::start(true).await;
    let follower = Follower::new(&worker.url, config());
    let (chat, peer) = (ChatId::new_v7(), ReplicaId::new_random());
    follower.peers.follow(chat, peer, Generation(generation));
    let mut connection = worker.accept().await;
    assert_eq!(connection.next_frame().await, sub(chat, generation, None));
    (worker, follower, chat, peer, connection)
}

fn config() -> PeerConfig {
    PeerConfig {
        secret: Some(SECRET.into()),
        ..Default::default()
    }
}

fn parts(chat_id: ChatId, generation: i64, seqs: impl IntoIterator<Item = u64>) -> FromWorker {
    FromWorker::Parts {
        chat_id,
        generation: Generation(generation),
        parts: seqs
            .into_iter()
            .map(|seq| RelayPart {
                seq,
                step: 0,
                part: Part::TextDelta {
                    text: format!("t{seq}"),
                },
            })
            .collect(),
        sent_at_us: chatd_relay::protocol::now_us(),
    }
}

fn sub(chat_id: ChatId, generation: i64, after_seq: Option<u64>) -> ToWorker {
    ToWorker::Sub {
        chat_id,
        generation: Generation(generation),
        after_seq,
    }
}

#[tokio::test]
async fn parts_of_a_generation_no_longer_followed_are_discarded() {
    let (_worker, follower, chat, peer, mut connection) = following(1).await;
    assert_eq!(
        connection.authorization.as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
    connection.send(parts(chat, 1, [1, 2]));
    follower
        .sink
        .wait_for(&[Delivered::Parts(chat, Generation(1), vec![1, 2])])
        .await;

    // The chat moved on to generation 2 while generation 1's parts were in flight.
    follower.peers.follow(chat, peer, Generation(2));
    assert_eq!(connection.next_frame().await, sub(chat, 2, None));
    connection.send(parts(chat, 1, [3, 4]));
    connection.send(FromWorker::Committed {
        chat_id: chat,
        generation: Generation(1),
        through: MessageId(10),
    });
    connection.send(parts(chat, 2, [1]));
    connection.send(FromWorker::Committed {
        chat_id: chat,
        generation: Generation(2),
        through: MessageId(11),
    });
    follower
        .sink
        .wait_for(&[
            Delivered::Parts(chat, Generation(1), vec![1, 2]),
            Delivered::Parts(chat, Generation(2), vec![1]),
            Delivered::Committed(chat, Generation(2), MessageId(11)),
        ])
        .await;

    // After an unfollow nothing of the chat is delivered at all.
    follower.peers.unfollow(chat);
    assert_eq!(
        connection.next_frame().await,
        ToWorker::Unsub { chat_id: chat }
    );
    connection.send(parts(chat, 2, [2]));
    let other = ChatId::new_v7();
    follower.peers.follow(other, peer, Generation(1));
    assert_eq!(connection.next_frame().await, sub(other, 1, None));
    connection.send(parts(other, 1, [1]));
    follower
        .sink
        .wait_for(&[
            Delivered::Parts(chat, Generation(1), vec![1, 2]),
            Delivered::Parts(chat, Generation(2), vec![1]),
            Delivered::Committed(chat, Generation(2), MessageId(11)),
            Delivered::Parts(other, Generation(1), vec![1]),
        ])
        .await;
}

#[tokio::test]
async fn a_lost_connection_resubscribes_from_the_last_seq_without_repeats() {
    let (mut worker, follower, chat, _, first) = following(3).await;
    first.send(parts(chat, 3, [1, 2, 3]));
    follower
        .sink
        .wait_for(&[Delivered::Parts(chat, Generation(3), vec![1, 2, 3])])
        .await;
    first.script.send(Script::Close).unwrap();

    let mut second = worker.accept().await;
    assert_eq!(second.next_frame().await, sub(chat, 3, Some(3)));
    // A worker that sends a part again (it was in flight when the link
    // broke) is not believed twice.
    second.send(parts(chat, 3, [3, 4, 5]));
    second.send(FromWorker::End {
        chat_id: chat,
        generation: Generation(3),
        reason: EndReason::Released,
    });
    follower
        .sink
        .wait_for(&[
            Delivered::Parts(chat, Generation(3), vec![1, 2, 3]),
            Delivered::Parts(chat, Generation(3), vec![4, 5]),
            Delivered::Ended(chat, Generation(3)),
        ])
        .await;
}

#[tokio::test]
async fn an_overflow_resubscribes_that_chat_from_its_last_seq() {
    let (_worker, _follower, chat, _, mut connection) = following(1).await;
    connection.send(parts(chat, 1, [1, 2]));
    connection.send(FromWorker::Overflow { chat_id: chat });
    assert_eq!(connection.next_frame().await, sub(chat, 1, Some(2)));
}

#[tokio::test]
async fn every_chat_on_one_peer_shares_one_connection() {
    let mut worker = ScriptedWorker::start(true).await;
    let follower = Follower::new(&worker.url, config());
    let peer = ReplicaId::new_random();
    let chats: Vec<ChatId> = (0..50).map(|_| ChatId::new_v7()).collect();
    for chat in &chats {
        follower.peers.follow(*chat, peer, Generation(1));
    }
    let mut connection = worker.accept().await;
    let mut subscribed = Vec::new();
    for _ in &chats {
        match connection.next_frame().await {
            ToWorker::Sub { chat_id, .. } => subscribed.push(chat_id),
            other => panic!("expected a sub, got {other:?}"),
        }
    }
    subscribed.sort();
    let mut expected = chats.clone();
    expected.sort();
    assert_eq!(subscribed, expected);
    eventually("one peer connected", WAIT, || {
        let connected = follower.peers.connected_peers();
        async move { (connected == 1).then_some(()) }
    })
    .await;
    assert!(
        worker.connections.try_recv().is_err(),
        "no second connection"
    );
}

#[tokio::test]
async fn a_silent_peer_is_dropped_and_dialed_again() {
    let mut worker = ScriptedWorker::start(false).await;
    let follower = Follower::new(
        &worker.url,
        PeerConfig {
            ping_interval: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(300),
            ..config()
        },
    );
    let (chat, peer) = (ChatId::new_v7(), ReplicaId::new_random());
    follower.peers.follow(chat, peer, Generation(1));
    let first = worker.accept().await;
    first.send(parts(chat, 1, [1]));
    // It never answers a ping: after the idle timeout the follower dials again.
    let _second = worker.accept().await;
    follower
        .sink
        .wait_for(&[Delivered::Parts(chat, Generation(1), vec![1])])
        .await;
}
