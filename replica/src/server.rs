//! One replica, assembled: telemetry, pool, pubsub, stream hub, model
//! catalog, turn loop, runtime and the HTTP API (ARCHITECTURE.md §4, §9). `chatd
//! serve` runs one; tests and `chatd dev` run several in one process.
//!
//! The HTTP listener comes up first (liveness answers, readiness says no);
//! migrations, provider bootstrap and registration follow in the background,
//! retrying while the database is unreachable.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::Instrument;

use anyhow::Context;
use axum::serve::ListenerExt;
use chatd_shared::{
    backoff::Backoff,
    db::{DbConfig, Pool, batched::Batched, connect_dedicated, connect_pool},
    error_chain::Chain,
    ids::{ChatId, Generation, ReplicaId},
    pubsub::{PubSub, PubSubConfig},
    sync::lock,
};
use opentelemetry::metrics::Meter;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::{self, ApiConfig, ApiParts, AppState, Readiness},
    bootstrap::{self, ProviderBootstrap},
    files::{Files, PgFileStore},
    llm,
    models::{ModelCatalog, ProviderFactory},
    operations::{ChatOps, WriteQueues},
    runtime::{ChatRunner, Phase, Runtime, RuntimeConfig, RuntimeParts},
    settings::SettingsCache,
    streams::{
        BufferLimits, RelayFollow, StreamHub, Streams,
        relay::{HubSink, HubSource, ReplicaDirectory},
    },
    telemetry::Telemetry,
    titles::{TitleConfig, Titles},
    tools::{ToolRegistry, mcp::McpTools},
    turn::{TurnConfig, TurnMetrics, TurnRunner},
    webhooks::{TargetPolicy, Webhooks},
};

/// Everything a replica needs to start.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The database and the pool.
    pub database: DbConfig,
    /// Where the API listens (port 0: any free port).
    pub http_addr: SocketAddr,
    /// Apply migrations before registering.
    pub migrate: bool,
    /// Provider and default model to make sure of.
    pub bootstrap: Option<ProviderBootstrap>,
    /// Lease, acquire, drain.
    pub runtime: RuntimeConfig,
    /// Steps, timeouts, retries.
    pub turn: TurnConfig,
    /// API limits.
    pub api: ApiConfig,
    /// Offer the test tools (`test_sleep`, `test_fail`, `test_panic`).
    pub test_tools: bool,
    /// LISTEN/NOTIFY settings.
    pub pubsub: PubSubConfig,
    /// The relay (token-level parts between replicas); `None`: no relay,
    /// clients of chats running elsewhere get durable events only.
    pub relay: Option<RelayConfig>,
}

/// The relay listener and its secret (ARCHITECTURE.md §7, §10).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where the relay listens (never exposed publicly).
    pub addr: SocketAddr,
    /// The URL peers dial (`ws://host:port`); default: `ws://` + the bound address.
    pub advertise_url: Option<String>,
    /// Allow a relay without a secret on a non-loopback address.
    pub insecure: bool,
    /// The relay server: the secret every replica of the cluster shares
    /// (also presented to peers), queue bounds, keep-alive.
    pub server: chatd_relay::RelayServerConfig,
}

impl RelayConfig {
    /// A relay on a free loopback port: every replica on one machine
    /// (`chatd dev`, tests), with `secret` if given.
    pub fn loopback(secret: Option<String>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_url: None,
            insecure: false,
            server: chatd_relay::RelayServerConfig {
                secret,
                ..Default::default()
            },
        }
    }

    /// Refuses a relay anyone on the network could use: without a secret it
    /// must listen on loopback only (one host), unless explicitly insecure.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.server.secret.is_none() && !self.insecure && !self.addr.ip().is_loopback() {
            anyhow::bail!(
                "CHATD_RELAY_SECRET is required when the relay listens beyond loopback (CHATD_RELAY_ADDR={}); set it on every replica, or pass --insecure-relay",
                self.addr
            );
        }
        Ok(())
    }
}

/// The replica's stop signals, one tree. Cancelling the root stops
/// everything at once (a kill); [`Replica::shutdown`] cancels the branches
/// one at a time, in the order written there.
struct Stops {
    root: CancellationToken,
    /// Readiness turns false and the boot sequence gives up; the runtime
    /// (a branch of its own, see [`Runtime::shutdown`]) drains.
    draining: CancellationToken,
    /// Client streams send `reconnect` and end.
    streams: CancellationToken,
    /// The relay listener stops serving peers.
    relay: CancellationToken,
    /// The API listener stops.
    http: CancellationToken,
    /// Everything else: pubsub, caches, the relay's peer connections.
    background: CancellationToken,
}

impl Stops {
    fn new() -> Self {
        let root = CancellationToken::new();
        Self {
            draining: root.child_token(),
            streams: root.child_token(),
            relay: root.child_token(),
            http: root.child_token(),
            background: root.child_token(),
            root,
        }
    }
}

/// What every part of a replica shares, made before anything listens.
struct Core {
    telemetry: Telemetry,
    pool: Pool,
    pubsub: PubSub,
    hub: Arc<StreamHub>,
    runner: Arc<TurnRunner>,
    settings: Arc<SettingsCache>,
    /// Writes made together (turn ends, sends), one set per replica.
    queues: WriteQueues,
    files: Files,
    mcp: Arc<McpTools>,
}

impl Core {
    fn connect(
        config: &ReplicaConfig,
        stops: &Stops,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Self> {
        let telemetry = Telemetry::new().context("starting the metrics exporter")?;
        let meter = telemetry.meter();
        let pool = connect_pool(&config.database).context("CHATD_DATABASE_URL")?;
        pool.register_metrics(&meter);
        let pubsub = PubSub::start(
            config.runtime.replica_id,
            &config.database.url,
            pool.clone(),
            config.pubsub.clone(),
            &meter,
            tracker,
            stops.background.clone(),
        );
        let hub = StreamHub::new(BufferLimits::default(), config.api.subscriber_queue, &meter);
        let http = llm::http_client().context("building the HTTP client for providers")?;
        let factory: ProviderFactory = Arc::new(move |row| llm::build(row, &http));
        let catalog = ModelCatalog::new(pool.clone(), factory);
        tracker.spawn(
            catalog
                .clone()
                .watch(pubsub.clone(), stops.background.clone())
                .in_current_span(),
        );
        let settings = SettingsCache::new(pool.clone());
        tracker.spawn(
            settings
                .clone()
                .watch(pubsub.clone(), stops.background.clone()),
        );
        let queues = WriteQueues::new(&pool, tracker);
        let ops = ChatOps::new(pool.clone(), pubsub.clone())
            .with_settings(settings.clone())
            .with_queues(queues.clone());
        let titles = Titles::new(
            ops,
            catalog.clone(),
            TitleConfig::default(),
            tracker.clone(),
            stops.background.clone(),
            &meter,
        );
        let files = Files::new(PgFileStore::new(pool.clone()), config.api.max_file_size);
        let mcp = McpTools::new(pool.clone(), config.turn.mcp, &meter);
        tracker.spawn(mcp.clone().watch(pubsub.clone(), stops.background.clone()));
        let runner = Arc::new(
            TurnRunner::new(
                catalog,
                ToolRegistry::builtin(config.test_tools),
                config.turn.clone(),
                TurnMetrics::new(&meter),
                Batched::new(pool.clone(), tracker.clone()),
            )
            .with_titles(titles)
            .with_file_store(files.store().clone())
            .with_mcp(mcp.clone()),
        );
        Ok(Self {
            telemetry,
            pool,
            pubsub,
            hub,
            runner,
            settings,
            queues,
            files,
            mcp,
        })
    }

    fn ops(&self) -> ChatOps {
        ChatOps::new(self.pool.clone(), self.pubsub.clone())
            .with_settings(self.settings.clone())
            .with_queues(self.queues.clone())
    }
}

/// The runtime once it started (the boot sequence fills it in).
type RuntimeSlot = Arc<Mutex<Option<Runtime>>>;

/// A running replica.
pub struct Replica {
    /// Every task of the replica runs in it, so every log line names the
    /// replica (`replica_id`); several replicas share one process in tests
    /// and `chatd dev`.
    span: tracing::Span,
    http_addr: SocketAddr,
    relay: Option<RelayBound>,
    runtime: RuntimeSlot,
    stops: Stops,
    tracker: TaskTracker,
    core: Core,
}

impl Replica {
    /// Starts a replica; returns once the API listens (liveness answers,
    /// readiness says no until the runtime registered).
    pub async fn start(config: ReplicaConfig) -> anyhow::Result<Self> {
        let span = tracing::info_span!(
            "replica",
            replica_id = %config.runtime.replica_id
        );
        Self::start_in(config, span.clone()).instrument(span).await
    }

    /// [`Self::start`] inside the replica's span: what it spawns runs in it.
    async fn start_in(config: ReplicaConfig, span: tracing::Span) -> anyhow::Result<Self> {
        let mut config = config;
        let stops = Stops::new();
        let tracker = TaskTracker::new();
        let core = Core::connect(&config, &stops, &tracker)?;
        let replica_id = config.runtime.replica_id;
        let relay = match &config.relay {
            Some(relay) => Some(start_relay(relay, replica_id, &core, &stops, &tracker).await?),
            None => None,
        };
        config.runtime.relay_url = relay.as_ref().map(|relay| relay.url.clone());
        let streams = Arc::new(Streams::new(
            core.pool.clone(),
            core.pubsub.clone(),
            core.hub.clone(),
            relay.as_ref().map(|relay| relay.follow.clone()),
            tracker.clone(),
        ));
        let runtime = RuntimeSlot::default();
        let state = AppState::new(
            ApiParts {
                replica_id,
                pool: core.pool.clone(),
                pubsub: core.pubsub.clone(),
                ops: core.ops(),
                mcp: core.mcp.clone(),
                streams,
                readiness: readiness(&runtime, &core.pubsub, &stops.draining),
                shutdown: stops.streams.clone(),
                tracker: tracker.clone(),
                telemetry: core.telemetry.clone(),
                files: core.files.clone(),
                webhooks: Webhooks::new(
                    core.pool.clone(),
                    TargetPolicy {
                        allow_private: config.runtime.webhooks.allow_private,
                    },
                ),
            },
            config.api.clone(),
        );
        tracker.spawn(
            state
                .tokens
                .clone()
                .watch(core.pubsub.clone(), stops.background.clone())
                .in_current_span(),
        );
        let http_addr = serve(
            "API",
            config.http_addr,
            "CHATD_HTTP_ADDR",
            api::router(state),
            &stops.http,
            &tracker,
        )
        .await?;
        tracing::info!(%replica_id, %http_addr, "replica listening");

        // Migrate, bootstrap, then register and run: all retried while the
        // database is unreachable, none blocking the API from answering.
        let parts = RuntimeParts {
            ops: core.ops(),
            pool: core.pool.clone(),
            pubsub: core.pubsub.clone(),
            hub: core.hub.clone(),
            runner: core.runner.clone() as Arc<dyn ChatRunner>,
            meter: core.telemetry.meter(),
            parent: stops.root.clone(),
            database: config.database.clone(),
        };
        tracker
            .spawn(boot(config, parts, runtime.clone(), stops.draining.clone()).in_current_span());
        Ok(Self {
            span,
            http_addr,
            relay,
            runtime,
            stops,
            tracker,
            core,
        })
    }

    /// Where the relay listens, if this replica has one.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(|relay| relay.addr)
    }

    /// The relay URL this replica advertises to peers, if it has a relay.
    pub fn relay_url(&self) -> Option<&str> {
        self.relay.as_ref().map(|relay| relay.url.as_str())
    }

    /// Where the API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://host:port` of the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The replica's pool.
    pub fn pool(&self) -> &Pool {
        &self.core.pool
    }

    /// The replica's pubsub.
    pub fn pubsub(&self) -> &PubSub {
        &self.core.pubsub
    }

    /// The replica's stream hub.
    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.core.hub
    }

    /// The replica's metrics.
    pub fn telemetry(&self) -> &Telemetry {
        &self.core.telemetry
    }

    /// True once the replica is registered and acquiring.
    pub fn is_running(&self) -> bool {
        lock(&self.runtime)
            .as_ref()
            .is_some_and(|runtime| runtime.phase() == Phase::Running)
    }

    /// The chats running here.
    pub fn running(&self) -> Vec<(ChatId, Generation)> {
        lock(&self.runtime)
            .as_ref()
            .map(Runtime::running)
            .unwrap_or_default()
    }

    /// The replica's span: log lines about this replica belong in it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Graceful shutdown (ARCHITECTURE.md §4), in this order: readiness turns false;
    /// the runtime stops acquiring, gives runs the drain timeout and hands
    /// back the rest; client streams get `reconnect`; the relay stops
    /// serving peers; the API stops; then pubsub, caches and every other
    /// task; last, the pool closes.
    pub async fn shutdown(self) {
        let span = self.span.clone();
        self.shutdown_in().instrument(span).await;
    }

    async fn shutdown_in(self) {
        self.stops.draining.cancel();
        let runtime = lock(&self.runtime).take();
        if let Some(runtime) = runtime {
            runtime.shutdown().await;
        }
        self.stops.streams.cancel();
        self.stops.relay.cancel();
        self.stops.http.cancel();
        self.stops.background.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 10 s of shutdown");
        }
        self.core.pool.close();
    }

    /// Stops everything at once without cleanup, as a killed process would
    /// (its lease lapses; its connections drop). For fault tests.
    #[cfg(any(test, feature = "testing"))]
    pub fn kill(self) {
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.abort();
        }
        self.stops.root.cancel();
        self.core.pool.close();
    }
}

/// `/readyz`: registered and holding the lease, LISTEN connected, not draining.
fn readiness(
    runtime: &RuntimeSlot,
    pubsub: &PubSub,
    draining: &CancellationToken,
) -> api::ReadinessProbe {
    let (runtime, pubsub, draining) = (runtime.clone(), pubsub.clone(), draining.clone());
    Arc::new(move || Readiness {
        database: lock(&runtime).as_ref().is_some_and(Runtime::is_ready),
        listener: pubsub.is_connected(),
        draining: draining.is_cancelled(),
    })
}

/// Binds `addr` (named by `variable` in errors) and serves `app` on the
/// tracker until `stop` fires; returns the address bound.
async fn serve(
    what: &'static str,
    addr: SocketAddr,
    variable: &str,
    app: axum::Router,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} ({variable})"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("the {what}'s address"))?;
    let stop = stop.clone();
    tracker.spawn(
        async move {
            let served = axum::serve(listener.tap_io(no_delay), app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the {what} server failed");
            }
        }
        .in_current_span(),
    );
    Ok(bound)
}

/// Migrates, makes sure of the bootstrap provider, then starts the runtime
/// into `slot`: each step retried with backoff while the database is
/// unreachable, all given up when `draining` fires first.
async fn boot(
    config: ReplicaConfig,
    parts: RuntimeParts,
    slot: RuntimeSlot,
    draining: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    if config.migrate {
        let mut attempt = 1;
        loop {
            let migrated = async {
                let (mut client, _connection) = connect_dedicated(&config.database.url).await?;
                chatd_migrations::migrate(&mut client)
                    .await
                    .map_err(anyhow::Error::from)
            };
            match migrated.await {
                Ok(report) if report.applied.is_empty() => break,
                Ok(report) => {
                    tracing::info!(applied = ?report.applied, "migrated the database");
                    break;
                }
                Err(err) => {
                    tracing::warn!(attempt, error = %Chain(err.as_ref()), "cannot migrate the database; retrying");
                    attempt += 1;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = draining.cancelled() => return,
            }
        }
    }
    if let Some(wanted) = &config.bootstrap {
        backoff.reset();
        loop {
            match bootstrap::ensure(&parts.pool, &parts.pubsub, wanted).await {
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %Chain(&err), "provider bootstrap failed; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = draining.cancelled() => return,
            }
        }
    }
    if draining.is_cancelled() {
        return;
    }
    let runtime = Runtime::start(config.runtime, parts);
    *lock(&slot) = Some(runtime);
    // A shutdown that began while we were starting found no runtime to stop.
    if draining.is_cancelled() {
        let runtime = lock(&slot).take();
        if let Some(runtime) = runtime {
            runtime.shutdown().await;
        }
    }
}

/// Streams send many small frames: Nagle's algorithm would hold each one
/// back waiting for the peer's (delayed) ACK of the one before.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "could not set TCP_NODELAY");
    }
}

/// A relay listening: where, what it advertises, and how this replica
/// follows runs on peers.
struct RelayBound {
    addr: SocketAddr,
    url: String,
    follow: RelayFollow,
}

/// Binds the relay listener, serves this replica's runs to peers, and makes
/// the peer manager that follows runs on them.
async fn start_relay(
    relay: &RelayConfig,
    replica_id: ReplicaId,
    core: &Core,
    stops: &Stops,
    tracker: &TaskTracker,
) -> anyhow::Result<RelayBound> {
    relay.check()?;
    let meter: Meter = core.telemetry.meter();
    let metrics = chatd_relay::RelayMetrics::new(&meter);
    let app = chatd_relay::router(
        Arc::new(HubSource(core.hub.clone())),
        relay.server.clone(),
        metrics.clone(),
        stops.relay.clone(),
        tracker.clone(),
    );
    let addr = serve(
        "relay",
        relay.addr,
        "CHATD_RELAY_ADDR",
        app,
        &stops.relay,
        tracker,
    )
    .await?;
    let url = relay
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("ws://{addr}"));
    let peers = chatd_relay::PeerManager::new(
        chatd_relay::PeerConfig {
            secret: relay.server.secret.clone(),
            ..Default::default()
        },
        Arc::new(ReplicaDirectory::new(core.pool.clone())),
        Arc::new(HubSink(core.hub.clone())),
        metrics,
        tracker.clone(),
        stops.background.clone(),
    );
    tracing::info!(relay = %addr, advertised = %url, "relay listening");
    Ok(RelayBound {
        addr,
        url,
        follow: RelayFollow { peers, replica_id },
    })
}
