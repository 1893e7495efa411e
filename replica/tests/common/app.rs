//! Whole replicas (API included) against one test database, for tests that
//! drive chatd the way a client does: over HTTP.

use std::{net::SocketAddr, time::Duration};

use chatd_replica::{
    api::ApiConfig,
    bootstrap::ProviderBootstrap,
    server::{RelayConfig, Replica, ReplicaConfig},
    turn::TurnConfig,
};
use chatd_shared::{
    ids::{ReplicaId, UserId},
    pubsub::PubSubConfig,
    status::{ProviderKind, UserRole},
    testing::{TestDb, eventually},
};

use super::{WAIT, fast_config};

/// Test settings of a whole replica: fast lease, the in-process mock model.
pub fn replica_config(db: &TestDb) -> ReplicaConfig {
    let mut database = db.config();
    database.pool_size = 8;
    let mut turn = TurnConfig::default();
    turn.retry.base = Duration::from_millis(10);
    ReplicaConfig {
        database,
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        migrate: false,
        bootstrap: Some(ProviderBootstrap {
            name: "mock".into(),
            kind: ProviderKind::Mock,
            base_url: "mock://?tokens=8".into(),
            api_key_env: None,
            model: "mock".into(),
            context_limit: 100_000,
            make_default: false,
        }),
        runtime: fast_config(ReplicaId::new_random()),
        turn,
        api: ApiConfig::default(),
        test_tools: true,
        pubsub: PubSubConfig::default(),
        relay: Some(RelayConfig::loopback(Some(RELAY_SECRET.into()))),
    }
}

pub use chatd_shared::testing::user_with_token;

/// The relay secret of test clusters.
pub const RELAY_SECRET: &str = "test-relay-secret-0123456789";

/// Replicas with their API, and an admin.
pub struct TestApp {
    pub db: TestDb,
    pub replicas: Vec<Replica>,
    pub admin_token: String,
    pub admin_id: UserId,
}

impl TestApp {
    /// `count` replicas with test settings (`tweak` adjusts each).
    pub async fn start(count: usize, tweak: impl Fn(&mut ReplicaConfig)) -> Self {
        Self::start_each(count, |_, config| tweak(config)).await
    }

    /// `count` replicas; `tweak` adjusts replica `index`'s settings.
    pub async fn start_each(count: usize, tweak: impl Fn(usize, &mut ReplicaConfig)) -> Self {
        let db = TestDb::new().await;
        let mut replicas = Vec::new();
        for index in 0..count {
            let mut config = replica_config(&db);
            tweak(index, &mut config);
            let replica = Replica::start(config).await.expect("replica starts");
            replicas.push(replica);
        }
        for replica in &replicas {
            wait_up(replica).await;
        }
        let (admin_id, admin_token) = user_with_token(&db, "admin", UserRole::Admin).await;
        Self {
            db,
            replicas,
            admin_token,
            admin_id,
        }
    }

    /// Starts one more replica (`tweak` adjusts its settings); returns its index.
    pub async fn add(&mut self, tweak: impl FnOnce(&mut ReplicaConfig)) -> usize {
        let mut config = replica_config(&self.db);
        tweak(&mut config);
        let replica = Replica::start(config).await.expect("replica starts");
        wait_up(&replica).await;
        self.replicas.push(replica);
        self.replicas.len() - 1
    }

    /// The text of replica `index`'s `/metrics`.
    pub async fn metrics(&self, index: usize) -> String {
        reqwest::get(format!("{}/metrics", self.url(index)))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The API URL of replica `index`.
    pub fn url(&self, index: usize) -> String {
        self.replicas[index].url()
    }

    /// A new user and a token for them.
    pub async fn user(&self, name: &str) -> (UserId, String) {
        user_with_token(&self.db, name, UserRole::Member).await
    }

    /// Stops every replica gracefully.
    pub async fn shutdown(self) {
        for replica in self.replicas {
            replica.shutdown().await;
        }
    }
}

impl TestApp {
    /// A typed client of replica `index`, acting with `token`.
    pub fn client(&self, index: usize, token: &str) -> chatd_shared::client::Client {
        chatd_shared::client::Client::new(&self.url(index), token).expect("client")
    }

    /// The admin's client of replica `index`.
    pub fn admin(&self, index: usize) -> chatd_shared::client::Client {
        self.client(index, &self.admin_token)
    }

    /// Waits until no replica holds a slot for `chat` (deadline: [`WAIT`]).
    /// A run leaves its slot just after the commit that shows the chat
    /// waiting, so a stream or read may see the wait a moment before.
    pub async fn wait_no_slot(&self, chat: chatd_shared::ids::ChatId) {
        eventually(
            &format!("no replica to hold a slot for {chat}"),
            WAIT,
            || {
                let free = self
                    .replicas
                    .iter()
                    .all(|replica| replica.running().iter().all(|(id, _)| *id != chat));
                async move { free.then_some(()) }
            },
        )
        .await;
    }
}

/// `@mock` directive text for the in-process mock model.
pub fn say(script: serde_json::Value) -> String {
    format!("@mock {script}")
}

/// Reads events from `stream` until `done` says so (deadline: [`WAIT`]).
pub async fn read_until<S>(
    stream: &mut S,
    mut done: impl FnMut(&chatd_shared::stream::StreamEvent) -> bool,
) -> Vec<chatd_shared::stream::StreamEvent>
where
    S: futures::Stream<
            Item = Result<chatd_shared::stream::StreamEvent, chatd_shared::client::ClientError>,
        > + Unpin,
{
    use futures::StreamExt;
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) = stream.next().await {
            let event = event.expect("stream event");
            let stop = done(&event);
            events.push(event);
            if stop {
                return;
            }
        }
        panic!("the stream ended before the condition held: {events:#?}");
    };
    chatd_shared::testing::wait_for("stream events", WAIT, collect).await;
    events
}

/// True for `status: running` (of any generation).
pub fn is_running(event: &chatd_shared::stream::StreamEvent) -> bool {
    use chatd_shared::{status::ChatStatus, stream::StreamEvent};
    matches!(
        event,
        StreamEvent::Status {
            status: ChatStatus::Running,
            ..
        }
    )
}

/// True for `status: waiting` (or `error`) of a generation at least `generation`.
pub fn idle_at(event: &chatd_shared::stream::StreamEvent, generation: i64) -> bool {
    use chatd_shared::{status::ChatStatus, stream::StreamEvent};
    matches!(event, StreamEvent::Status { status: ChatStatus::Waiting | ChatStatus::Error, generation: g, .. } if g.0 >= generation)
}

/// Waits until `replica` runs and listens.
pub async fn wait_up(replica: &Replica) {
    eventually("the replica to run", WAIT, || {
        let up = replica.is_running() && replica.pubsub().is_connected();
        async move { up.then_some(()) }
    })
    .await;
}

/// A new chat with nothing in it.
pub async fn idle_chat(client: &chatd_shared::client::Client) -> chatd_shared::ids::ChatId {
    client
        .create_chat(&chatd_shared::api::CreateChat::default(), None)
        .await
        .expect("create chat")
        .body
        .id
}

/// Sends `text` to chat `id`.
pub async fn send_text(
    client: &chatd_shared::client::Client,
    id: chatd_shared::ids::ChatId,
    text: String,
) {
    client
        .send_message(
            id,
            &chatd_shared::api::SendMessage {
                text: Some(text),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("send message");
}

/// Opens chat `id`'s stream from the start and reads its snapshot (up to
/// the queue, its last event).
pub async fn open_stream(
    client: &chatd_shared::client::Client,
    id: chatd_shared::ids::ChatId,
    transport: chatd_shared::client::Transport,
) -> chatd_shared::client::ChatStream {
    use chatd_shared::stream::{Cursor, StreamEvent};
    let mut stream = client
        .stream_chat(id, Cursor::default(), transport)
        .await
        .expect("stream");
    read_until(&mut stream, |e| matches!(e, StreamEvent::Queue { .. })).await;
    stream
}

/// `(role, text)` of every message among `events`.
pub fn message_texts(
    events: &[chatd_shared::stream::StreamEvent],
) -> Vec<(chatd_shared::status::MessageRole, String)> {
    use chatd_shared::{parts::Part, stream::StreamEvent};
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Message { message, .. } => Some((
                message.role,
                message
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

/// The result of tool call `call_id` in `history`, and whether it is an
/// error; panics when the call has none.
pub fn tool_result_of(
    history: &[chatd_shared::api::Message],
    call_id: &str,
) -> (serde_json::Value, bool) {
    history
        .iter()
        .flat_map(|m| &m.content)
        .find_map(|p| match p {
            chatd_shared::parts::Part::ToolResult {
                tool_call_id,
                result,
                is_error,
                ..
            } if tool_call_id == call_id => Some((result.clone(), *is_error)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no result of {call_id} in {history:#?}"))
}
