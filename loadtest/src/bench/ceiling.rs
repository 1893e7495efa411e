//! The database-only ceiling of a bench (ARCHITECTURE.md §15): how many
//! turns per second the bench's PostgreSQL can store when nothing but the
//! database does work, measured right before the load, so a bench's
//! throughput is judged as a ratio to what this machine allows and not as
//! an absolute number that moves with the machine and what else runs on it.
//!
//! The ceiling runs chatd's own statements (`chatd_shared::db`, the same
//! functions a replica calls) for the turn the bench's load makes: a keyed
//! send to an idle chat, a claim, the prompt read and the fenced end of the
//! turn with the reply, its usage accounted on a model. It runs in a
//! database of its own on the same server, made by `chatd migrate`, and is
//! dropped afterwards: the load starts on an untouched database.
//!
//! [`Plan::connections`] workers go round the chats in turn, so each chat's
//! turns are as far apart as in the load. Turns are counted when their end
//! commits; PostgreSQL's CPU over the same window gives its cost
//! per turn with no replica, relay or client in the way.

use std::{
    path::Path,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use super::run_chatd;
use crate::{cpu::CpuProbe, summary::Ceiling};
use anyhow::Context;
use chatd_shared::{
    db::{
        DbConfig,
        chats::{ChatTools, NewChat},
        connect_dedicated,
        lifecycle::{self, Fence, StepMessage, TurnEnd},
        model_configs::{self, NewModelConfig},
        pool::{Pool, connect_pool},
        prompt_context,
        providers::{self, NewProvider},
        replicas::{self, Registration},
        transitions::{self, Outgoing},
        users,
    },
    ids::{ChatId, ModelConfigId, ReplicaId, UserId},
    parts::{Part, Usage},
    status::{ChatStatus, MessageRole, ProviderKind, UserRole},
};

/// The database the ceiling runs in, beside the bench's.
const DATABASE: &str = "chatd_ceiling";

/// How a ceiling is measured.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Chats the turns go round (the load's chat count).
    pub chats: usize,
    /// Concurrent sessions.
    pub connections: usize,
    /// How long the turns run before the window opens (plans cached,
    /// tables warm).
    pub warm_up: Duration,
    /// The measured window.
    pub window: Duration,
}

impl Default for Plan {
    /// The bench's 5,000 chats, 16 sessions (enough to keep two cores busy
    /// through the round trips between statements), 2 s of warm-up, an 8 s
    /// window.
    fn default() -> Self {
        Self {
            chats: 5000,
            connections: 16,
            warm_up: Duration::from_secs(2),
            window: Duration::from_secs(8),
        }
    }
}

/// Measures the ceiling on the server of `postgres` (a probe of its
/// processes' CPU), whose databases are reached by `url_of`.
pub async fn measure(
    chatd: &Path,
    plan: Plan,
    url_of: impl Fn(&str) -> String,
    postgres: Option<CpuProbe>,
) -> anyhow::Result<Ceiling> {
    let (admin, _admin_connection) = connect_dedicated(&url_of("postgres"))
        .await
        .context("connecting to the bench's PostgreSQL")?;
    // Two statements: neither may run in a transaction block.
    for statement in [
        format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DATABASE}"),
    ] {
        admin
            .batch_execute(&statement)
            .await
            .context("creating the ceiling's database")?;
    }
    let url = url_of(DATABASE);
    let measured = async {
        run_chatd(chatd, Some(&url), &["migrate"]).await?;
        measure_on(&url, plan, postgres).await
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .context("dropping the ceiling's database")?;
    measured
}

/// Measures the ceiling in the migrated database at `url`, which it
/// writes to (a user, a model, a replica row, chats and their turns).
pub async fn measure_on(
    url: &str,
    plan: Plan,
    postgres: Option<CpuProbe>,
) -> anyhow::Result<Ceiling> {
    let mut config = DbConfig::new(url);
    config.pool_size = plan.connections;
    let pool = connect_pool(&config).context("a pool on the ceiling's database")?;
    let setup = Setup::create(&pool, plan).await?;
    run(&pool, &setup, plan, postgres).await
}

/// What the workers share: a user, a priced model, a replica row to claim
/// under, and a chat per worker.
struct Setup {
    owner: UserId,
    model: ModelConfigId,
    worker: ReplicaId,
    chats: Vec<ChatId>,
}

impl Setup {
    async fn create(pool: &Pool, plan: Plan) -> anyhow::Result<Self> {
        let db = pool.get().await.context("a ceiling session")?;
        let owner = users::upsert_by_username(&db, "ceiling", UserRole::Member)
            .await
            .context("the ceiling's user")?
            .id;
        let provider = providers::insert(
            &db,
            &NewProvider {
                name: "ceiling",
                kind: ProviderKind::Mock,
                base_url: "mock://",
                api_key: None,
                api_key_env: None,
                enabled: true,
            },
        )
        .await
        .context("the ceiling's provider")?;
        let model = model_configs::insert(
            &db,
            &NewModelConfig {
                provider_id: provider.id,
                model: "ceiling",
                display_name: "Ceiling",
                enabled: true,
                is_default: true,
                context_limit: 200_000,
                compaction_threshold_pct: 80,
                max_output_tokens: 4096,
                prices: [Some(3_000_000), Some(15_000_000), None, None],
                options: serde_json::json!({}),
            },
        )
        .await
        .context("the ceiling's model")?
        .id;
        let worker = ReplicaId::new_random();
        replicas::register(
            &db,
            &Registration {
                id: worker,
                hostname: "ceiling",
                relay_url: None,
                version: env!("CARGO_PKG_VERSION"),
                lease_ttl: Duration::from_secs(3600),
                max_running_chats: plan.chats,
            },
        )
        .await
        .context("the ceiling's replica row")?;
        let labels = serde_json::json!({});
        let mut chats = Vec::with_capacity(plan.chats);
        for _ in 0..plan.chats {
            let chat = NewChat {
                id: ChatId::new_v7(),
                owner_id: owner,
                parent_chat_id: None,
                root_chat_id: None,
                title: "ceiling",
                status: ChatStatus::Waiting,
                model_config_id: Some(model),
                system_prompt: None,
                labels: &labels,
                trace_parent: None,
                tools: ChatTools {
                    mcp_servers: &[],
                    client_tools: &[],
                },
            };
            chats.push(
                transitions::insert(&db, &chat)
                    .await
                    .context("a ceiling chat")?
                    .id,
            );
        }
        Ok(Self {
            owner,
            model,
            worker,
            chats,
        })
    }
}

/// Counts of what the workers did, for turns and statements per turn.
#[derive(Default)]
struct Counts {
    turns: AtomicU64,
    statements: AtomicU64,
}

impl Counts {
    fn read(&self) -> (u64, u64) {
        (
            self.turns.load(Ordering::Relaxed),
            self.statements.load(Ordering::Relaxed),
        )
    }
}

/// Runs the workers through the warm-up and the window.
async fn run(
    pool: &Pool,
    setup: &Setup,
    plan: Plan,
    postgres: Option<CpuProbe>,
) -> anyhow::Result<Ceiling> {
    let counts = Counts::default();
    let next = AtomicUsize::new(0);
    let end = Instant::now() + plan.warm_up + plan.window;
    let workers = (0..plan.connections).map(|_| async {
        while Instant::now() < end {
            // The next chats in turn, so a chat's turns are as far apart
            // as in the load (every chat takes one before any takes two).
            let first = next.fetch_add(CLAIM_BATCH, Ordering::Relaxed);
            let chats: Vec<ChatId> = (first..first + CLAIM_BATCH)
                .map(|i| setup.chats[i % setup.chats.len()])
                .collect();
            batch(pool, setup, &chats, &counts).await?;
        }
        anyhow::Ok(())
    });
    let measure = async {
        tokio::time::sleep(plan.warm_up).await;
        let started = Instant::now();
        let before = (counts.read(), cpu(&postgres));
        tokio::time::sleep_until(end.into()).await;
        let elapsed = started.elapsed();
        let after = (counts.read(), cpu(&postgres));
        let turns = after.0.0 - before.0.0;
        let statements = after.0.1 - before.0.1;
        let cpu_used = after.1.zip(before.1).map(|(a, b)| a.saturating_sub(b));
        (elapsed, turns, statements, cpu_used)
    };
    let (done, (elapsed, turns, statements, cpu_used)) =
        tokio::join!(futures::future::try_join_all(workers), measure);
    done?;
    anyhow::ensure!(turns > 0, "no turn was stored in the ceiling's window");
    Ok(Ceiling {
        turns_per_sec: turns as f64 / elapsed.as_secs_f64(),
        postgres_cpu_us_per_turn: cpu_used.map(|used| used.as_micros() as f64 / turns as f64),
        statements_per_turn: statements as f64 / turns as f64,
        connections: plan.connections,
        window_secs: elapsed.as_secs_f64(),
    })
}

fn cpu(probe: &Option<CpuProbe>) -> Option<Duration> {
    probe.as_ref().and_then(|probe| probe.cpu_time().ok())
}

/// Chats a worker sends to before it claims, and claims at most at once:
/// a replica's acquirer claims many chats in one statement too.
const CLAIM_BATCH: usize = 8;

/// Turns of `chats`, as a replica and its clients store them: a keyed send
/// makes each pending, one claim takes up to as many (the oldest pending
/// chats: under load, partly other workers'), and for each claimed chat the
/// prompt is read and the reply ends the turn. The texts are the bench's
/// default message and a 20-word reply like the mock model's. A chat still
/// busy from another worker's claim is not sent to this time.
async fn batch(
    pool: &Pool,
    setup: &Setup,
    chats: &[ChatId],
    counts: &Counts,
) -> anyhow::Result<()> {
    let db = pool.get().await.context("a ceiling session")?;
    let content = [Part::text(r#"@mock {"tokens": 20}"#)];
    let mut statements = 0;
    for chat in chats {
        let key = uuid::Uuid::new_v4().to_string();
        let message = Outgoing {
            content: &content,
            created_by: Some(setup.owner),
            idempotency_key: Some(&key),
            trace_parent: None,
        };
        transitions::send_to_idle(&db, *chat, &message, Some(setup.owner)).await?;
        statements += 1;
    }
    let claimed = lifecycle::claim_pending(&db, setup.worker, chats.len() as i64).await?;
    statements += 1;
    let mut turns = 0;
    for claimed in claimed {
        let chat = claimed.chat;
        let context = prompt_context::load(&db, chat.id, chat.owner_id).await?;
        let fence = Fence {
            chat_id: chat.id,
            worker_id: setup.worker,
            generation: chat.generation,
        };
        let reply = StepMessage {
            role: MessageRole::Assistant,
            content: vec![Part::text(REPLY)],
            model_config_id: Some(setup.model),
            step: 1,
            usage: Usage {
                input_tokens: Some(context.history.len() as i64 * 12),
                output_tokens: Some(20),
                ..Usage::default()
            },
            cost_micros: Some(300),
            runtime_ms: Some(1),
        };
        lifecycle::finish_turn(
            &db,
            &fence,
            &[reply],
            &TurnEnd::Done,
            // As a run ends a turn whose prompt read found no webhooks.
            lifecycle::OwnerWebhooks::NoneSeen,
        )
        .await?
        .context("a ceiling turn lost its chat")?;
        statements += 2;
        turns += 1;
    }
    counts.turns.fetch_add(turns, Ordering::Relaxed);
    counts.statements.fetch_add(statements, Ordering::Relaxed);
    Ok(())
}

/// Twenty words, like the mock model's default reply.
const REPLY: &str = "one two three four five six seven eight nine ten \
                     eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
