//! Shared pieces of the replica's integration tests: replicas in one process
//! against one test database, chats made pending, scripted runners.
#![allow(dead_code)]

pub mod app;
pub mod http;
pub mod otlp;
pub mod proxy;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chatd_replica::{
    operations::ChatOps,
    runtime::{ChatRunner, RunContext, Runtime, RuntimeConfig, RuntimeParts},
    streams::StreamHub,
};
use chatd_shared::{
    db::{
        Pool,
        chats::{self, Chat},
        lifecycle::{StepMessage, TurnEnd},
        messages, transitions,
    },
    ids::{ChatId, Generation, MessageId, ReplicaId, UserId},
    parts::{Part, Usage},
    pubsub::PubSub,
    status::{ChatStatus, MessageRole},
    testing::{TestDb, TestPubSub, eventually, wait_for},
};

/// Generous deadline for conditions in tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// A replica (pool, pubsub, runtime) inside the test process.
pub struct TestReplica {
    pub id: ReplicaId,
    pub runtime: Runtime,
    pub pubsub: PubSub,
    pub pool: Pool,
    pub hub: Arc<StreamHub>,
    node: TestPubSub,
}

/// Test defaults: fast heartbeats and a short lease so recovery takes ~1 s.
pub fn fast_config(id: ReplicaId) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(id);
    config.heartbeat_interval = Duration::from_millis(200);
    config.lease_ttl = Duration::from_secs(1);
    config.poll_interval = Duration::from_millis(500);
    config.drain_timeout = Duration::from_secs(2);
    config.pending_gauge_interval = Duration::from_secs(60);
    config.lock_judge_after = Duration::from_secs(1);
    config
}

impl TestReplica {
    /// Starts a replica with `runner`; `tweak` adjusts the fast defaults.
    pub async fn start(
        db: &TestDb,
        runner: Arc<dyn ChatRunner>,
        tweak: impl FnOnce(&mut RuntimeConfig),
    ) -> Self {
        let id = ReplicaId::new_random();
        let mut config = fast_config(id);
        tweak(&mut config);
        let mut db_config = db.config();
        db_config.pool_size = 8;
        let pool = chatd_shared::db::connect_pool(&db_config).unwrap();
        let node = TestPubSub::start_with(id, db.url(), pool.clone()).await;
        let pubsub = node.pubsub.clone();
        let meter = opentelemetry::global::meter("test");
        let hub = StreamHub::new(Default::default(), 1024, &meter);
        let parts = RuntimeParts {
            ops: ChatOps::new(pool.clone(), pubsub.clone()),
            pool: pool.clone(),
            pubsub: pubsub.clone(),
            hub: hub.clone(),
            runner,
            meter,
            parent: tokio_util::sync::CancellationToken::new(),
            database: db_config,
        };
        let runtime = Runtime::start(config, parts);
        wait_for("replica registered", WAIT, runtime.wait_running()).await;
        Self {
            id,
            runtime,
            pubsub,
            pool,
            hub,
            node,
        }
    }

    /// Graceful shutdown of the runtime, then its pubsub.
    pub async fn shutdown(self) {
        self.runtime.shutdown().await;
        self.node.stop().await;
    }

    /// Kills the replica: no cleanup at all, its row stays and its lease lapses.
    pub fn crash(self) {
        self.runtime.abort();
        self.node.kill();
    }
}

/// Inserts a user.
pub async fn user(db: &TestDb) -> UserId {
    let client = db.pool().get().await.unwrap();
    let name = format!("user-{}", uuid_suffix());
    chatd_shared::db::users::insert(
        &client,
        UserId::new_random(),
        &name,
        chatd_shared::status::UserRole::Member,
    )
    .await
    .unwrap()
    .id
}

fn uuid_suffix() -> String {
    ChatId::new_v7().to_string()[24..].to_owned()
}

/// Inserts `count` pending chats of `owner`, each with one user message, in
/// one statement (so no replica can claim a chat before its message exists).
pub async fn pending_chats(db: &TestDb, owner: UserId, count: i64) -> Vec<ChatId> {
    let client = db.pool().get().await.unwrap();
    let rows = client
        .query(
            "WITH new_chats AS (
                 INSERT INTO chats (id, owner_id, status)
                 SELECT gen_random_uuid(), $1, 'pending' FROM generate_series(1, $2::bigint)
                 RETURNING id
             ), first_messages AS (
                 INSERT INTO chat_messages (chat_id, role, content)
                 SELECT id, 'user', '[{\"type\":\"text\",\"text\":\"hello\"}]'::jsonb FROM new_chats
             )
             SELECT id FROM new_chats",
            &[&owner, &count],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// The chat row.
pub async fn chat(db: &TestDb, id: ChatId) -> Chat {
    let client = db.pool().get().await.unwrap();
    chats::get(&client, id).await.unwrap().expect("chat exists")
}

/// Waits until `id` has `status`.
pub async fn wait_status(db: &TestDb, id: ChatId, status: ChatStatus) -> Chat {
    eventually(&format!("chat {id} to be {status}"), WAIT, || async move {
        let row = chat(db, id).await;
        (row.status == status).then_some(row)
    })
    .await
}

/// Messages of a chat, in id order.
pub async fn messages(db: &TestDb, id: ChatId) -> Vec<chatd_shared::db::messages::Message> {
    let client = db.pool().get().await.unwrap();
    messages::list_after(&client, id, MessageId(0), 1000)
        .await
        .unwrap()
}

/// An assistant message saying `text`.
pub fn assistant(text: &str, step: i32) -> StepMessage {
    StepMessage {
        role: MessageRole::Assistant,
        content: vec![Part::text(text)],
        model_config_id: None,
        step,
        usage: Usage::default(),
        cost_micros: None,
        runtime_ms: None,
    }
}

/// What a scripted runner did: (chat, generation, replica) per run.
pub type RunLog = Arc<Mutex<Vec<(ChatId, Generation, ReplicaId)>>>;

/// Per turn, appends one assistant message naming its replica and releases;
/// goes on while the release hands it a queued message.
pub struct AppendAndRelease {
    pub log: RunLog,
}

impl AppendAndRelease {
    pub fn new() -> (Arc<Self>, RunLog) {
        let log = RunLog::default();
        (Arc::new(Self { log: log.clone() }), log)
    }
}

#[async_trait::async_trait]
impl ChatRunner for AppendAndRelease {
    async fn run(&self, run: RunContext) {
        let fence = *run.fence();
        self.log
            .lock()
            .unwrap()
            .push((fence.chat_id, fence.generation, fence.worker_id));
        for step in 0.. {
            let text = format!("done by {}", fence.worker_id);
            if run.persist_step(&[assistant(&text, step)]).await.is_err() {
                return;
            }
            match run.release(TurnEnd::Done).await {
                Ok(released) if released.next.is_some() => continue,
                _ => return,
            }
        }
    }
}

/// Persists one step ("step 0"), records itself in `started`, then waits:
/// for `release` (then saves "step 1" and releases), for an interrupt (then
/// saves "interrupted" and releases), or until stopped.
#[derive(Default)]
pub struct Holding {
    pub release: tokio::sync::Notify,
    pub started: Mutex<Vec<(ChatId, Generation, ReplicaId)>>,
    /// Fences of runs that were stopped (for writes after ownership loss).
    pub stopped: Mutex<
        Vec<(
            chatd_shared::db::lifecycle::Fence,
            Option<chatd_replica::runtime::StopReason>,
        )>,
    >,
}

impl Holding {
    /// Waits until `count` runs have saved their first step and are holding.
    pub async fn wait_started(&self, count: usize) {
        eventually(&format!("{count} runs holding"), WAIT, || {
            let started = self.started.lock().unwrap().len();
            async move { (started == count).then_some(()) }
        })
        .await;
    }
}

#[async_trait::async_trait]
impl ChatRunner for Holding {
    async fn run(&self, run: RunContext) {
        let fence = *run.fence();
        if run.persist_step(&[assistant("step 0", 0)]).await.is_err() {
            return;
        }
        self.started
            .lock()
            .unwrap()
            .push((fence.chat_id, fence.generation, fence.worker_id));
        tokio::select! {
            _ = self.release.notified() => {
                if run.persist_step(&[assistant("step 1", 1)]).await.is_ok() {
                    let _ = run.release(TurnEnd::Done).await;
                }
            }
            _ = run.interrupted() => {
                if run.persist_step(&[assistant("interrupted", 1)]).await.is_ok() {
                    let _ = run.release(TurnEnd::Done).await;
                }
            }
            _ = run.cancelled() => {
                self.stopped.lock().unwrap().push((fence, run.stop_reason()));
            }
        }
    }
}

/// Which wire format a test drives the turn loop through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// Registers a provider of `wire` named `{name}-{wire}` pointing at `mock`
/// (with `api_key`).
pub async fn mock_provider(
    db: &TestDb,
    mock: &chatd_mockllm::MockLlm,
    wire: Wire,
    api_key: &str,
    name: &str,
) -> chatd_shared::ids::ProviderId {
    use chatd_shared::{db::providers, status::ProviderKind};
    let client = db.pool().get().await.unwrap();
    let (kind, base_url) = match wire {
        Wire::OpenAi => (ProviderKind::Openai, mock.openai_base_url()),
        Wire::Anthropic => (ProviderKind::Anthropic, mock.anthropic_base_url()),
    };
    providers::insert(
        &client,
        &providers::NewProvider {
            name: &format!("{name}-{kind}"),
            kind,
            base_url: &base_url,
            api_key: Some(api_key),
            api_key_env: None,
            enabled: true,
        },
    )
    .await
    .unwrap()
    .id
}

/// Registers a provider of `wire` pointing at `mock` (with `api_key`) and a
/// default model on it.
pub async fn mock_model(
    db: &TestDb,
    mock: &chatd_mockllm::MockLlm,
    wire: Wire,
    api_key: &str,
) -> chatd_shared::ids::ModelConfigId {
    use chatd_shared::db::model_configs;
    let client = db.pool().get().await.unwrap();
    let provider = mock_provider(db, mock, wire, api_key, "mock").await;
    let model = model_configs::insert(
        &client,
        &model_configs::NewModelConfig {
            provider_id: provider,
            model: "mock-model",
            display_name: "Mock",
            enabled: true,
            is_default: false,
            context_limit: 100_000,
            compaction_threshold_pct: 70,
            max_output_tokens: 1024,
            prices: [Some(1_000_000), Some(2_000_000), None, None],
            options: serde_json::json!({}),
        },
    )
    .await
    .unwrap();
    model_configs::set_default(&client, model.id).await.unwrap();
    model.id
}

/// The turn loop of a real replica, calling providers over HTTP.
pub fn turn_runner(
    pool: &Pool,
    tools: chatd_replica::tools::ToolRegistry,
    config: chatd_replica::turn::TurnConfig,
) -> Arc<chatd_replica::turn::TurnRunner> {
    let http = chatd_replica::llm::http_client().unwrap();
    let factory: chatd_replica::models::ProviderFactory =
        Arc::new(move |row| chatd_replica::llm::build(row, &http));
    let catalog = chatd_replica::models::ModelCatalog::new(pool.clone(), factory);
    let metrics = chatd_replica::turn::TurnMetrics::new(&opentelemetry::global::meter("test"));
    let prompts =
        chatd_shared::db::batched::Batched::new(pool.clone(), tokio_util::task::TaskTracker::new());
    Arc::new(chatd_replica::turn::TurnRunner::new(
        catalog, tools, config, metrics, prompts,
    ))
}

/// Inserts a waiting chat of `owner` on `model` with one user message saying
/// `text`, then makes it pending (one statement, as a send does) and wakes
/// the acquirers through `pubsub`.
pub async fn start_chat(
    db: &TestDb,
    pubsub: &PubSub,
    owner: UserId,
    model: chatd_shared::ids::ModelConfigId,
    text: &str,
) -> ChatId {
    let client = db.pool().get().await.unwrap();
    let chat = transitions::insert(
        &client,
        &chats::NewChat {
            id: ChatId::new_v7(),
            owner_id: owner,
            parent_chat_id: None,
            root_chat_id: None,
            title: "",
            status: ChatStatus::Waiting,
            model_config_id: Some(model),
            system_prompt: Some("You are a test."),
            labels: &serde_json::json!({}),
            tools: Default::default(),
            trace_parent: None,
        },
    )
    .await
    .unwrap();
    send(db, pubsub, chat.id, owner, text).await;
    chat.id
}

/// Sends a user message to an idle chat (one statement: insert + pending),
/// announced, as the API does.
pub async fn send(db: &TestDb, pubsub: &PubSub, chat_id: ChatId, owner: UserId, text: &str) {
    let ops = ChatOps::new(db.pool().clone(), pubsub.clone());
    let access = chatd_replica::operations::Access {
        user_id: owner,
        admin: false,
    };
    let request = chatd_replica::operations::SendRequest {
        content: &[Part::text(text)],
        behavior: Default::default(),
        model: None,
        idempotency_key: None,
        client_tools: None,
    };
    let sent = ops.send(access, chat_id, &request).await.unwrap();
    assert!(
        matches!(sent, chatd_replica::operations::SendOutcome::Sent(_)),
        "the chat is idle: {sent:?}"
    );
}

/// Waits until the chat is idle (`waiting` or `error`) and returns it.
pub async fn wait_idle(db: &TestDb, id: ChatId) -> Chat {
    eventually(&format!("chat {id} to be idle"), WAIT, || async move {
        let row = chat(db, id).await;
        matches!(row.status, ChatStatus::Waiting | ChatStatus::Error).then_some(row)
    })
    .await
}

/// Every event queued for `receiver` right now.
pub fn drain(
    receiver: &chatd_replica::streams::HubReceiver,
) -> Vec<chatd_shared::stream::StreamEvent> {
    let mut events = Vec::new();
    while let Ok(Some(item)) = receiver.try_recv() {
        if let chatd_replica::streams::HubItem::Event(event) = item {
            events.push((*event).clone());
        }
    }
    events
}
