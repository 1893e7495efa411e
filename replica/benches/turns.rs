//! Per-turn overhead of chatd itself (not a timed test): one replica, a
//! zero-delay mock model, N chats talking at once, each sending its next
//! message as soon as the previous turn ends. Reports turns per second and
//! database statements per turn (from `pg_stat_statements`).
//!
//! ```sh
//! cargo bench -p chatd-replica --bench turns              # in-process mock and HTTP mock, 1/100/1000 chats
//! cargo bench -p chatd-replica --bench turns -- inprocess # only the in-process mock model
//! ```

use std::{sync::Arc, time::Duration};

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::{
    llm,
    models::{ModelCatalog, ProviderFactory},
    operations::{Access, ChatOps, SendOutcome, SendRequest},
    runtime::{Runtime, RuntimeConfig, RuntimeParts},
    streams::StreamHub,
    tools::ToolRegistry,
    turn::{TurnConfig, TurnMetrics, TurnRunner},
};
use chatd_shared::{
    db::{Pool, chats::NewChat, model_configs, providers},
    ids::{ChatId, ReplicaId, UserId},
    parts::Part,
    pubsub::{ChatEvent, Delivery},
    status::{ChatStatus, ProviderKind, UserRole},
    testing::{TestDb, TestPubSub, wait_for},
};
use tokio::time::Instant;

async fn model(pool: &Pool, kind: ProviderKind, base_url: &str) {
    let client = pool.get().await.unwrap();
    let provider = providers::insert(
        &client,
        &providers::NewProvider {
            name: "bench",
            kind,
            base_url,
            api_key: None,
            api_key_env: None,
            enabled: true,
        },
    )
    .await
    .unwrap();
    let config = model_configs::insert(
        &client,
        &model_configs::NewModelConfig {
            provider_id: provider.id,
            model: "bench",
            display_name: "bench",
            enabled: true,
            is_default: true,
            context_limit: 1_000_000,
            compaction_threshold_pct: 70,
            max_output_tokens: 256,
            prices: [None; 4],
            options: serde_json::json!({}),
        },
    )
    .await
    .unwrap();
    let _ = config;
}

async fn statements(pool: &Pool) -> i64 {
    pool.get()
        .await
        .unwrap()
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn run(
    label: &str,
    kind: ProviderKind,
    base_url: &str,
    concurrency: usize,
    turns_per_chat: usize,
) {
    let db = TestDb::new().await;
    model(db.pool(), kind, base_url).await;
    let mut db_config = db.config();
    db_config.pool_size = 16;
    let pool = chatd_shared::db::connect_pool(&db_config).unwrap();
    let id = ReplicaId::new_random();
    let node = TestPubSub::start_with(id, db.url(), pool.clone()).await;
    let meter = opentelemetry::global::meter("bench");
    let http = llm::http_client().unwrap();
    let factory: ProviderFactory = Arc::new(move |row| llm::build(row, &http));
    let runner = Arc::new(TurnRunner::new(
        ModelCatalog::new(pool.clone(), factory),
        ToolRegistry::builtin(false),
        TurnConfig::default(),
        TurnMetrics::new(&meter),
        chatd_shared::db::batched::Batched::new(pool.clone(), tokio_util::task::TaskTracker::new()),
    ));
    let mut config = RuntimeConfig::new(id);
    config.max_running_chats = 4096;
    let hub = StreamHub::new(Default::default(), 256, &meter);
    let parts = RuntimeParts {
        ops: ChatOps::new(pool.clone(), node.pubsub.clone()),
        pool: pool.clone(),
        pubsub: node.pubsub.clone(),
        hub,
        runner,
        meter: meter.clone(),
        parent: tokio_util::sync::CancellationToken::new(),
        database: db_config,
    };
    let runtime = Runtime::start(config, parts);
    wait_for(
        "replica running",
        Duration::from_secs(30),
        runtime.wait_running(),
    )
    .await;

    // The driver: its own pubsub hears each chat go idle and sends the next message.
    let driver = TestPubSub::start(&db).await;
    let client = db.pool().get().await.unwrap();
    let owner =
        chatd_shared::db::users::insert(&client, UserId::new_random(), "bench", UserRole::Member)
            .await
            .unwrap()
            .id;
    let mut ids = Vec::new();
    for _ in 0..concurrency {
        let chat = chatd_shared::db::transitions::insert(
            &client,
            &NewChat {
                id: ChatId::new_v7(),
                owner_id: owner,
                parent_chat_id: None,
                root_chat_id: None,
                title: "",
                status: ChatStatus::Waiting,
                model_config_id: None,
                system_prompt: None,
                labels: &serde_json::json!({}),
                tools: Default::default(),
                trace_parent: None,
            },
        )
        .await
        .unwrap();
        ids.push(chat.id);
    }
    let mut notices = driver.pubsub.subscribe_all_chats();
    client
        .execute("SELECT pg_stat_statements_reset()", &[])
        .await
        .unwrap();
    let before = statements(db.pool()).await;
    let begin = Instant::now();
    let hello = [Part::text("hello")];
    let ops = ChatOps::new(db.pool().clone(), driver.pubsub.clone());
    let access = Access {
        user_id: owner,
        admin: false,
    };
    let request = SendRequest {
        content: &hello,
        behavior: Default::default(),
        model: None,
        idempotency_key: None,
        client_tools: None,
    };
    for id in &ids {
        let sent = ops.send(access, *id, &request).await.unwrap();
        assert!(matches!(sent, SendOutcome::Sent(_)), "{sent:?}");
    }
    let mut remaining: std::collections::HashMap<ChatId, usize> =
        ids.iter().map(|id| (*id, turns_per_chat)).collect();
    let mut done = 0usize;
    let total = concurrency * turns_per_chat;
    while done < total {
        let delivery = wait_for("a turn to end", Duration::from_secs(120), notices.recv()).await;
        let Some(Delivery::Notice(notice)) = delivery else {
            panic!("the benchmark's pubsub lost notices ({delivery:?}); rerun with fewer chats");
        };
        let ChatEvent::Status { status, .. } = notice.event else {
            continue;
        };
        if status == ChatStatus::Error {
            panic!("a turn failed");
        }
        if status != ChatStatus::Waiting {
            continue;
        }
        done += 1;
        let left = remaining.get_mut(&notice.chat_id).unwrap();
        *left -= 1;
        if *left > 0 {
            let sent = ops.send(access, notice.chat_id, &request).await.unwrap();
            assert!(matches!(sent, SendOutcome::Sent(_)), "{sent:?}");
        }
    }
    let elapsed = begin.elapsed().as_secs_f64();
    let used = statements(db.pool()).await - before;
    println!(
        "{label:>10} {concurrency:>5} chats: {total:>6} turns in {elapsed:>6.2} s = {:>7.0} turns/s, {:.2} statements/turn",
        total as f64 / elapsed,
        used as f64 / total as f64
    );
    let top = client
        .query(
            "SELECT s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 60) FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'
             ORDER BY s.calls DESC LIMIT 8",
            &[],
        )
        .await
        .unwrap();
    for row in top {
        println!(
            "    {:>6.2}/turn  {}",
            row.get::<_, i64>(0) as f64 / total as f64,
            row.get::<_, String>(1)
        );
    }
    runtime.shutdown().await;
    driver.stop().await;
    node.stop().await;
}

#[tokio::main]
async fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    let cases = [(1, 500), (100, 30), (1000, 5)];
    if filter.is_empty() || "inprocess".contains(&filter) {
        for (concurrency, turns) in cases {
            run(
                "in-process",
                ProviderKind::Mock,
                "mock://?tokens=20",
                concurrency,
                turns,
            )
            .await;
        }
    }
    if filter.is_empty() || "http".contains(&filter) {
        let mock = MockLlm::start_with(chatd_mockllm::ServerConfig {
            record_limit: 0,
            behaviour: Behaviour {
                tokens: 20,
                ..Behaviour::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        for (concurrency, turns) in cases {
            run(
                "http",
                ProviderKind::Openai,
                &mock.openai_base_url(),
                concurrency,
                turns,
            )
            .await;
        }
    }
}
