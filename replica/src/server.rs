//! One replica, assembled: telemetry, pool, pubsub, stream hub, model
//! catalog, turn loop, runtime and the HTTP API (DESIGN §4, §9). `chatd
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

use anyhow::Context;
use chatd_shared::{
    backoff::Backoff,
    db::{DbConfig, Pool, connect_dedicated, connect_pool},
    error_chain::Chain,
    pubsub::{PubSub, PubSubConfig},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use axum::serve::ListenerExt;

use crate::{
    api::{self, ApiConfig, AppState, Readiness},
    bootstrap::{self, ProviderBootstrap},
    hub::{BufferLimits, HubSink, HubSource, StreamHub},
    llm,
    models::{ModelCatalog, ProviderFactory},
    peer_directory::ReplicaDirectory,
    runtime::{Phase, Runtime, RuntimeConfig},
    telemetry::Telemetry,
    tools::ToolRegistry,
    turn::{TurnConfig, TurnMetrics, TurnRunner},
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

/// The relay listener and its secret (DESIGN §7, §10).
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

/// A running replica.
pub struct Replica {
    http_addr: SocketAddr,
    relay_addr: Option<SocketAddr>,
    relay_url: Option<String>,
    runtime: Arc<Mutex<Option<Runtime>>>,
    draining: CancellationToken,
    stop_background: CancellationToken,
    stop_streams: CancellationToken,
    stop_relay: CancellationToken,
    stop_http: CancellationToken,
    tracker: TaskTracker,
    pubsub: PubSub,
    pool: Pool,
    telemetry: Telemetry,
    hub: Arc<StreamHub>,
}

impl Replica {
    /// Starts a replica; returns once the API listens.
    pub async fn start(config: ReplicaConfig) -> anyhow::Result<Self> {
        let telemetry = Telemetry::new().map_err(anyhow::Error::msg)?;
        let meter = telemetry.meter();
        let pool = connect_pool(&config.database).context("CHATD_DATABASE_URL")?;
        let tracker = TaskTracker::new();
        let stop_background = CancellationToken::new();
        let replica_id = config.runtime.replica_id;
        let pubsub = PubSub::start(
            replica_id,
            &config.database.url,
            pool.clone(),
            config.pubsub.clone(),
            &meter,
            &tracker,
            stop_background.clone(),
        );
        let hub = StreamHub::new(BufferLimits::default(), config.api.subscriber_queue, &meter);
        let http = llm::http_client().context("building the HTTP client for providers")?;
        let factory: ProviderFactory = Arc::new(move |row| llm::build(row, &http));
        let catalog = ModelCatalog::new(pool.clone(), factory);
        tracker.spawn(
            catalog
                .clone()
                .watch(pubsub.clone(), stop_background.clone()),
        );
        let tools = ToolRegistry::builtin(config.test_tools);
        let runner = Arc::new(TurnRunner::new(
            catalog,
            tools,
            config.turn.clone(),
            TurnMetrics::new(&meter),
        ));

        let runtime: Arc<Mutex<Option<Runtime>>> = Arc::new(Mutex::new(None));
        let draining = CancellationToken::new();
        let readiness: api::ReadinessProbe = {
            let runtime = runtime.clone();
            let pubsub = pubsub.clone();
            let draining = draining.clone();
            Arc::new(move || Readiness {
                database: runtime
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(Runtime::is_ready),
                listener: pubsub.is_connected(),
                draining: draining.is_cancelled(),
            })
        };
        let stop_streams = CancellationToken::new();
        let stop_relay = CancellationToken::new();
        let (relay_follow, relay_addr, relay_url) = match &config.relay {
            Some(relay) => {
                relay.check()?;
                let (follow, addr, url) = start_relay(
                    relay,
                    &pool,
                    &hub,
                    &meter,
                    &tracker,
                    &stop_relay,
                    &stop_background,
                    replica_id,
                )
                .await?;
                (Some(follow), Some(addr), Some(url))
            }
            None => (None, None, None),
        };
        let mut config = config;
        config.runtime.relay_url = relay_url.clone();
        let state = AppState::new(
            pool.clone(),
            pubsub.clone(),
            hub.clone(),
            readiness,
            config.api.clone(),
            stop_streams.clone(),
            tracker.clone(),
            telemetry.clone(),
            relay_follow,
        );
        tracker.spawn(
            state
                .tokens
                .clone()
                .watch(pubsub.clone(), stop_background.clone()),
        );
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("listening on {} (CHATD_HTTP_ADDR)", config.http_addr))?;
        let http_addr = listener.local_addr().context("the API's address")?;
        let stop_http = CancellationToken::new();
        let app = api::router(state);
        tracker.spawn({
            let stop_http = stop_http.clone();
            async move {
                let served = axum::serve(listener.tap_io(no_delay), app)
                    .with_graceful_shutdown(async move { stop_http.cancelled().await })
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "the HTTP server failed");
                }
            }
        });
        tracing::info!(%replica_id, %http_addr, "replica listening");

        // Migrate, bootstrap, then register and run: all retried while the
        // database is unreachable, none blocking the API from answering.
        tracker.spawn(boot(
            config,
            pool.clone(),
            pubsub.clone(),
            hub.clone(),
            runner,
            meter,
            runtime.clone(),
            draining.clone(),
        ));
        Ok(Self {
            http_addr,
            relay_addr,
            relay_url,
            runtime,
            draining,
            stop_background,
            stop_streams,
            stop_relay,
            stop_http,
            tracker,
            pubsub,
            pool,
            telemetry,
            hub,
        })
    }

    /// Where the relay listens, if this replica has one.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay_addr
    }

    /// The relay URL this replica advertises to peers, if it has a relay.
    pub fn relay_url(&self) -> Option<&str> {
        self.relay_url.as_deref()
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
        &self.pool
    }

    /// The replica's pubsub.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// The replica's stream hub.
    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.hub
    }

    /// The replica's metrics.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// True once the replica is registered and acquiring.
    pub fn is_running(&self) -> bool {
        self.runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|runtime| runtime.phase() == Phase::Running)
    }

    /// The chats running here.
    pub fn running(&self) -> Vec<(chatd_shared::ids::ChatId, chatd_shared::ids::Generation)> {
        self.runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Runtime::running)
            .unwrap_or_default()
    }

    /// Graceful shutdown (DESIGN §4): not ready; runs get the drain timeout,
    /// the rest are handed back; streams get `reconnect`; then the API,
    /// pubsub and everything else stop.
    pub async fn shutdown(self) {
        self.draining.cancel();
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown().await;
        }
        self.stop_streams.cancel();
        self.stop_relay.cancel();
        self.stop_http.cancel();
        self.stop_background.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 10 s of shutdown");
        }
        self.pool.close();
    }

    /// Stops everything at once without cleanup, as a killed process would
    /// (its lease lapses; its connections drop). For fault tests.
    pub fn kill(self) {
        self.draining.cancel();
        if let Some(runtime) = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            runtime.abort();
        }
        self.stop_streams.cancel();
        self.stop_relay.cancel();
        self.stop_http.cancel();
        self.stop_background.cancel();
        self.pool.close();
    }
}

#[allow(clippy::too_many_arguments)]
async fn boot(
    config: ReplicaConfig,
    pool: Pool,
    pubsub: PubSub,
    hub: Arc<StreamHub>,
    runner: Arc<TurnRunner>,
    meter: opentelemetry::metrics::Meter,
    slot: Arc<Mutex<Option<Runtime>>>,
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
            match bootstrap::ensure(&pool, &pubsub, wanted).await {
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
    let runtime = Runtime::start(config.runtime, pool, pubsub, hub, runner, &meter);
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(runtime);
    // A shutdown that began while we were starting found no runtime to stop.
    if draining.is_cancelled() {
        let runtime = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
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

/// Binds the relay listener, serves this replica's runs to peers, and makes
/// the peer manager that follows runs on them. Returns the follower, the
/// address bound and the URL to advertise.
#[allow(clippy::too_many_arguments)]
async fn start_relay(
    relay: &RelayConfig,
    pool: &Pool,
    hub: &Arc<StreamHub>,
    meter: &opentelemetry::metrics::Meter,
    tracker: &TaskTracker,
    stop_relay: &CancellationToken,
    stop_background: &CancellationToken,
    replica_id: chatd_shared::ids::ReplicaId,
) -> anyhow::Result<(api::feed::RelayFollow, SocketAddr, String)> {
    let listener = TcpListener::bind(relay.addr)
        .await
        .with_context(|| format!("listening on {} (CHATD_RELAY_ADDR)", relay.addr))?;
    let bound = listener.local_addr().context("the relay's address")?;
    let url = relay
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("ws://{bound}"));
    let metrics = chatd_relay::RelayMetrics::new(meter);
    let app = chatd_relay::router(
        Arc::new(HubSource(hub.clone())),
        relay.server.clone(),
        metrics.clone(),
        stop_relay.clone(),
        tracker.clone(),
    );
    tracker.spawn({
        let stop = stop_relay.clone();
        async move {
            let served = axum::serve(listener.tap_io(no_delay), app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the relay server failed");
            }
        }
    });
    let peers = chatd_relay::PeerManager::new(
        chatd_relay::PeerConfig {
            secret: relay.server.secret.clone(),
            ..Default::default()
        },
        Arc::new(ReplicaDirectory::new(pool.clone())),
        Arc::new(HubSink(hub.clone())),
        metrics,
        tracker.clone(),
        stop_background.clone(),
    );
    tracing::info!(relay = %bound, advertised = %url, "relay listening");
    Ok((api::feed::RelayFollow { peers, replica_id }, bound, url))
}
