//! The failover client against real replicas (invariant 14): a client whose
//! replica dies resumes on another with its cursor and sees no gap and no
//! repeat; when the dead replica was running the chat, the step is
//! regenerated under a new generation and replaces the client's draft.
//!
//! Each replica's API is reached through a proxy; "killing" a replica cuts
//! its proxy first (the client's connection breaks without a `reconnect`,
//! as with SIGKILL) and then kills the replica without cleanup.

mod common;

use std::time::Duration;

use chatd_loadtest::chaos::proxy::Proxy;
use chatd_shared::{
    api::{CreateChat, SendMessage},
    client::{
        Applied, Break, ChatView, Committed, Delivery, FailoverClient, FailoverStream, RetryPolicy,
        Transport,
    },
    ids::{ChatId, Generation, MessageId},
    parts::Part,
    status::ChatStatus,
    stream::{Cursor, StreamEvent},
    testing::{eventually, wait_for},
};
use common::{Cluster, WAIT};

/// A reply that takes about two seconds to stream.
const SLOW_REPLY: &str = r#"@mock {"tokens": 100, "token_delay_ms": 20}"#;

/// Three replicas, each behind a proxy, and a failover client of the proxies.
struct Proxied {
    cluster: Cluster,
    proxies: Vec<Proxy>,
    client: FailoverClient,
}

impl Proxied {
    async fn start() -> Self {
        let cluster = Cluster::start(3, |_| {}).await;
        let mut proxies = Vec::new();
        for replica in &cluster.replicas {
            proxies.push(Proxy::start(replica.http_addr()).await.expect("proxy"));
        }
        let urls: Vec<String> = proxies
            .iter()
            .map(|proxy| format!("http://{}", proxy.addr()))
            .collect();
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_secs(5),
            deadline: WAIT,
            ..RetryPolicy::default()
        };
        let client = FailoverClient::new(reqwest::Client::new(), &urls, &cluster.token, policy)
            .expect("client");
        Self {
            cluster,
            proxies,
            client,
        }
    }

    /// A chat, with a slow reply running; returns it and the index of the
    /// replica running it.
    async fn chat_running_a_slow_reply(&self) -> (ChatId, usize) {
        let chat = self
            .client
            .create_chat(&CreateChat::default(), "create-1")
            .await
            .expect("created")
            .body;
        let message = SendMessage {
            text: Some(SLOW_REPLY.into()),
            ..SendMessage::default()
        };
        self.client
            .send_message(chat.id, &message, "send-1")
            .await
            .expect("sent");
        let worker = eventually("a replica to run the chat", WAIT, || {
            let worker = self
                .cluster
                .replicas
                .iter()
                .position(|replica| replica.running().iter().any(|(id, _)| *id == chat.id));
            async move { worker }
        })
        .await;
        (chat.id, worker)
    }

    /// The chat's stream, opened from the start on replica `index`.
    async fn stream_on(&self, chat_id: ChatId, index: usize) -> FailoverStream {
        let stream = self
            .client
            .preferring(index)
            .stream_chat(chat_id, Cursor::default(), Transport::WebSocket)
            .await
            .expect("stream opens");
        assert_eq!(stream.replica(), index);
        stream
    }

    /// Cuts replica `index`'s connections, then kills it without cleanup.
    fn kill(&mut self, index: usize) {
        self.proxies[index].cut();
        self.cluster.replicas.remove(index).kill();
    }

    /// The ids of the chat's visible messages, in order.
    async fn stored_messages(&self, chat_id: ChatId) -> Vec<MessageId> {
        let client = self.cluster.db.pool().get().await.expect("connection");
        client
            .query(
                "SELECT id FROM chat_messages WHERE chat_id = $1 AND NOT deleted
                 AND visibility <> 'model' ORDER BY id",
                &[&chat_id.0],
            )
            .await
            .expect("messages")
            .iter()
            .map(|row| MessageId(row.get(0)))
            .collect()
    }
}

/// What a client saw of a chat: every delivery, and its view.
#[derive(Default)]
struct Seen {
    events: Vec<StreamEvent>,
    resumed: Vec<Break>,
    view: ChatView,
    /// Drafts a newer generation's status dropped.
    dropped: Vec<chatd_shared::client::Draft>,
    /// Each assistant message with the draft it replaced.
    replaced: Vec<(Committed, Option<chatd_shared::client::Draft>)>,
}

impl Seen {
    /// Reads deliveries until `until` holds for one.
    async fn read_until(
        &mut self,
        stream: &mut FailoverStream,
        mut until: impl FnMut(&StreamEvent) -> bool,
    ) {
        loop {
            let delivery = wait_for("the next delivery", WAIT, stream.next())
                .await
                .expect("the stream goes on");
            let event = match delivery {
                Delivery::Resumed(resumed) => {
                    self.resumed.push(resumed.cause);
                    continue;
                }
                Delivery::Event(event) => event,
            };
            match self.view.apply(&event) {
                Applied::Status {
                    dropped: Some(draft),
                } => self.dropped.push(draft),
                Applied::Message { replaced } => {
                    if let StreamEvent::Message { message, .. } = &event {
                        self.replaced.push((Committed::of(message), replaced));
                    }
                }
                _ => {}
            }
            let done = until(&event);
            self.events.push(event);
            if done {
                return;
            }
        }
    }

    /// Reads deliveries until `count` parts arrived.
    async fn read_parts(&mut self, stream: &mut FailoverStream, count: usize) {
        let mut parts = 0;
        self.read_until(stream, |event| {
            parts += usize::from(matches!(event, StreamEvent::Part { .. }));
            parts == count
        })
        .await;
    }

    /// `(generation, seq, text)` of every part, in order.
    fn parts(&self) -> Vec<(i64, u64, String)> {
        self.events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::Part {
                    generation,
                    seq,
                    part: Part::TextDelta { text },
                    ..
                } => Some((generation.0, *seq, text.clone())),
                _ => None,
            })
            .collect()
    }

    fn message_ids(&self) -> Vec<MessageId> {
        self.events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::Message { message, .. } => Some(message.id),
                _ => None,
            })
            .collect()
    }
}

fn waiting_after(generation: Generation) -> impl FnMut(&StreamEvent) -> bool {
    move |event| matches!(event, StreamEvent::Status { status: ChatStatus::Waiting, generation: g, .. } if *g > generation)
}

/// Parts of `generation`, checked to run from seq 0 with no gap or repeat.
fn contiguous_text(parts: &[(i64, u64, String)], generation: i64) -> String {
    let mine: Vec<_> = parts.iter().filter(|(g, ..)| *g == generation).collect();
    let seqs: Vec<u64> = mine.iter().map(|(_, seq, _)| *seq).collect();
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "parts of generation {generation}");
    mine.iter().map(|(.., text)| text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_replica_dies_while_the_worker_lives_resumes_with_no_gap_or_repeat() {
    let mut app = Proxied::start().await;
    let (chat_id, worker) = app.chat_running_a_slow_reply().await;
    let streamer = (worker + 1) % 3;
    let mut stream = app.stream_on(chat_id, streamer).await;
    let mut seen = Seen::default();
    seen.read_parts(&mut stream, 10).await;
    let generation = seen.view.status().expect("a status").1;

    app.kill(streamer);
    seen.read_until(&mut stream, waiting_after(Generation(generation.0 - 1)))
        .await;

    assert!(
        matches!(seen.resumed[..], [Break::Failed(_) | Break::Ended]),
        "one resumption after the connection broke: {:?}",
        seen.resumed
    );
    let parts = seen.parts();
    let text = contiguous_text(&parts, generation.0);
    assert!(
        parts.iter().all(|(g, ..)| *g == generation.0),
        "the run never moved"
    );
    let (committed, draft) = seen.replaced.last().expect("the reply's message");
    assert_eq!(committed.text, text, "the message is what the parts spelt");
    assert_eq!(draft.as_ref().map(|d| d.text.as_str()), Some(text.as_str()));
    assert_eq!(stream.repeats_dropped(), 0, "the server repeated nothing");
    assert_eq!(seen.message_ids(), app.stored_messages(chat_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_the_replica_that_dies_mid_step_resumes_elsewhere_and_the_regenerated_step_replaces_its_draft()
 {
    let mut app = Proxied::start().await;
    let (chat_id, worker) = app.chat_running_a_slow_reply().await;
    let mut stream = app.stream_on(chat_id, worker).await;
    let mut seen = Seen::default();
    seen.read_parts(&mut stream, 10).await;
    let old = seen.view.status().expect("a status").1;
    let shown = seen.view.draft().expect("a draft").text.clone();

    app.kill(worker);
    seen.read_until(&mut stream, waiting_after(old)).await;

    assert!(
        !seen.resumed.is_empty(),
        "the stream moved to another replica"
    );
    let new = seen.view.status().expect("a status").1;
    assert!(new > old, "the step ran again under a newer generation");
    let parts = seen.parts();
    let streamed = contiguous_text(&parts, old.0);
    assert!(streamed.starts_with(&shown), "no gap before the death");
    assert_eq!(
        seen.dropped
            .iter()
            .map(|d| (d.generation, d.text.clone()))
            .collect::<Vec<_>>(),
        [(old, streamed)],
        "the newer generation's status dropped the draft of the old one"
    );
    let regenerated = contiguous_text(&parts, new.0);
    let (committed, draft) = seen.replaced.last().expect("the reply's message");
    assert_eq!(
        committed.text, regenerated,
        "the message is the regenerated step"
    );
    assert_eq!(draft.as_ref().map(|d| d.generation), Some(new));
    assert_eq!(
        seen.view.draft(),
        None,
        "nothing of the old run is left shown"
    );
    assert_eq!(stream.repeats_dropped(), 0);
    assert_eq!(seen.message_ids(), app.stored_messages(chat_id).await);
}
