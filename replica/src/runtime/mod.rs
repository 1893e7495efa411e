//! The replica runtime (ARCHITECTURE.md §4): registration and lease, the acquirer,
//! recovery of dead replicas' chats, the runs themselves, and graceful
//! shutdown. Replicas share work through PostgreSQL alone.

mod acquire;
mod deaths;
mod interrupts;
mod lease;
mod metrics;
mod registry;
mod run;

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use chatd_shared::{
    backoff::Backoff,
    db::{
        DbConfig, DbError, Pool, PoolBuildError,
        chats::{self, Chat},
        lifecycle::{Fence, OwnerWebhooks, TurnEnd},
        replicas,
    },
    error_chain::Chain,
    ids::{ChatId, Generation, ReplicaId},
    pubsub::PubSub,
    sync::lock,
};
use futures::FutureExt;
use opentelemetry::metrics::Meter;
use tokio::{sync::watch, task::AbortHandle, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    operations::ChatOps,
    streams::{RunStream, StreamHub},
    webhooks::{Sender, WebhookConfig},
};

use self::{
    lease::LeaseClock,
    registry::{Registry, RunEntry},
};
pub use self::{
    metrics::RuntimeMetrics,
    registry::{RunControl, StopReason},
    run::{ChatRunner, RunContext, RunError},
};

/// How a replica runs (ARCHITECTURE.md §10 defaults).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This replica's id (the `worker_id` of its chats).
    pub replica_id: ReplicaId,
    /// Host name recorded in the replica row.
    pub hostname: String,
    /// Where peers reach this replica's relay.
    pub relay_url: Option<String>,
    /// Build version recorded in the replica row.
    pub version: String,
    /// Chats run at once at most.
    pub max_running_chats: usize,
    /// Chats claimed per statement at most.
    pub acquire_batch: usize,
    /// Fallback poll for pending work (wake notifications are the fast path).
    pub poll_interval: Duration,
    /// How often the lease is renewed.
    pub heartbeat_interval: Duration,
    /// How long a renewal keeps the lease.
    pub lease_ttl: Duration,
    /// How long runs may finish after shutdown began before they are handed back.
    pub drain_timeout: Duration,
    /// Chats of dead replicas requeued per heartbeat at most.
    pub recovery_batch: i64,
    /// Expired replica rows are deleted after this.
    pub replica_row_retention: Duration,
    /// How often `chatd_pending_chats` is counted.
    pub pending_gauge_interval: Duration,
    /// How long this replica's own listener session must have been up
    /// before it reads a peer's free advisory lock as that peer's death:
    /// after a PostgreSQL restart every lock is free until its holder
    /// reconnects (reconnects back off up to 5 s), and until then only
    /// leases judge. A new process's first session judges at once when the
    /// server has been up this long.
    pub lock_judge_after: Duration,
    /// The webhook sender every replica runs (ARCHITECTURE.md §17).
    pub webhooks: WebhookConfig,
}

impl RuntimeConfig {
    /// The defaults of ARCHITECTURE.md §10 for a replica with this id.
    pub fn new(replica_id: ReplicaId) -> Self {
        Self {
            replica_id,
            hostname: hostname(),
            relay_url: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            max_running_chats: 512,
            acquire_batch: 32,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            recovery_batch: 1000,
            replica_row_retention: Duration::from_secs(3600),
            pending_gauge_interval: Duration::from_secs(15),
            lock_judge_after: Duration::from_secs(10),
            webhooks: WebhookConfig::default(),
        }
    }
}

/// A pool of one connection with `database`'s settings, for the lease.
fn lease_pool(database: &DbConfig) -> Result<Pool, PoolBuildError> {
    chatd_shared::db::connect_pool(&DbConfig {
        pool_size: 1,
        ..database.clone()
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// What a runtime works with besides its configuration.
pub struct RuntimeParts {
    /// Chat transitions (claims, steps, hand-backs, recovery).
    pub ops: ChatOps,
    /// The replica's pool (the replica row, counts).
    pub pool: Pool,
    /// The replica's pubsub (wake-ups, interrupt notices).
    pub pubsub: PubSub,
    /// The replica's stream hub: runs stream their parts into it.
    pub hub: Arc<StreamHub>,
    /// What runs an acquired chat (the turn loop).
    pub runner: Arc<dyn ChatRunner>,
    /// Where the runtime's instruments are registered.
    pub meter: Meter,
    /// The runtime's stop signals are children of this token: cancelling it
    /// stops acquiring and every background task at once.
    pub parent: CancellationToken,
    /// The database the pool reaches. The runtime opens two sessions of its
    /// own there: the death watch's (it waits on a lock with no statement
    /// timeout) and the lease's (a beat must never queue behind the runs and
    /// requests whose chats it protects).
    pub database: DbConfig,
}

/// State shared by the runtime's tasks.
pub(crate) struct Shared {
    config: RuntimeConfig,
    ops: ChatOps,
    pool: Pool,
    pubsub: PubSub,
    runner: Arc<dyn ChatRunner>,
    hub: Arc<StreamHub>,
    registry: Arc<Registry>,
    metrics: RuntimeMetrics,
    tracker: TaskTracker,
    /// Held from a claim statement until its runs are registered.
    claim_lock: tokio::sync::Mutex<()>,
    /// The lease by our own (conservative) clock; invalid while fenced.
    lease: LeaseClock,
    /// The acquirer's task, awaited by shutdown so no claim is in flight
    /// when the drain starts.
    acquirer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The epoch of the last listener session the lease reconciled this
    /// replica's runs under (0: none yet). Work is claimed only under it: a
    /// replica whose session ended may have lost its chats to recovery.
    reconciled: std::sync::atomic::AtomicU64,
    /// Signalled when claiming becomes possible again (a session reconciled).
    claimable: tokio::sync::Notify,
    /// The peer whose death this replica watches for (from the last beat).
    watched: watch::Sender<Option<ReplicaId>>,
    /// The lease's own one-connection pool: the beat and the registration
    /// use it, so a busy main pool (every run wanting a connection right
    /// after a PostgreSQL restart) cannot make the lease lapse.
    lease_pool: Pool,
    /// Where the death watch connects.
    database_url: String,
    /// When the PostgreSQL server started, by our clock (read by the death
    /// watch each time it connects).
    server_started: Mutex<Option<Instant>>,
    /// Where background tasks started later (the webhook sender) register
    /// their instruments.
    meter: Meter,
}

impl Shared {
    fn lease_deadline(&self) -> Instant {
        self.lease.deadline()
    }

    fn lease_valid(&self) -> bool {
        self.lease.is_valid()
    }

    /// True when this replica may claim work: it holds its lease, and its
    /// listener session (which holds its lock) is up and was reconciled with
    /// the database after it began.
    fn may_claim(&self) -> bool {
        self.lease_valid()
            && self.pubsub.session().is_some_and(|session| {
                session.epoch == self.reconciled.load(std::sync::atomic::Ordering::Acquire)
            })
    }

    /// True when a free advisory lock may be read as a dead peer (see
    /// [`Shared::judges_by_lock_from`]).
    fn judges_by_lock(&self) -> bool {
        self.judges_by_lock_from()
            .is_some_and(|from| from <= Instant::now())
    }

    /// From when a free advisory lock may be read as a dead peer; `None`
    /// without a listener session. Right after a PostgreSQL restart every
    /// lock is free until its holder reconnects, so a replica judges once its
    /// own session has been up for `lock_judge_after` (any peer cut with it
    /// has had time to come back). A new process need not wait that long:
    /// its first session is young because it is new, and when the server
    /// too has been up for `lock_judge_after`, no peer is still reconnecting
    /// from a restart (ARCHITECTURE.md §4).
    fn judges_by_lock_from(&self) -> Option<Instant> {
        let session = self.pubsub.session()?;
        let after = self.config.lock_judge_after;
        let by_session = session.since + after;
        let by_server = (session.epoch == 1)
            .then(|| *lock(&self.server_started))
            .flatten()
            .map(|started| started + after);
        Some(by_server.map_or(by_session, |server| server.min(by_session)))
    }

    /// A renewal sent at `sent_at` succeeded.
    fn renewed_at(&self, sent_at: Instant) {
        if self.lease.renewed(sent_at) {
            tracing::info!("lease renewed; acquiring again");
        }
    }

    /// Inserts (or refreshes) the replica row with a fresh lease.
    async fn register(&self) -> Result<(), DbError> {
        let config = &self.config;
        let sent_at = Instant::now();
        let client = self.lease_pool.get().await?;
        replicas::register(
            &client,
            &replicas::Registration {
                id: config.replica_id,
                hostname: &config.hostname,
                relay_url: config.relay_url.as_deref(),
                version: &config.version,
                lease_ttl: config.lease_ttl,
                max_running_chats: config.max_running_chats,
            },
        )
        .await?;
        self.renewed_at(sent_at);
        Ok(())
    }
}

/// Starts the run of an acquired chat on the tracker and registers it.
fn spawn_run(shared: &Arc<Shared>, chat: Chat, queue_wait: Duration) {
    let fence = Fence {
        chat_id: chat.id,
        worker_id: shared.config.replica_id,
        generation: chat.generation,
    };
    let control = Arc::new(RunControl::default());
    shared.registry.insert(
        chat.id,
        RunEntry {
            generation: chat.generation,
            control: control.clone(),
            registered_at: Instant::now(),
            task: None,
        },
    );
    let task = shared
        .tracker
        .spawn(drive(shared.clone(), chat, queue_wait, control));
    shared
        .registry
        .set_task(fence.chat_id, fence.generation, task.abort_handle());
}

/// Runs one chat and cleans up after it, whatever happens to it.
async fn drive(shared: Arc<Shared>, chat: Chat, queue_wait: Duration, control: Arc<RunControl>) {
    let fence = Fence {
        chat_id: chat.id,
        worker_id: shared.config.replica_id,
        generation: chat.generation,
    };
    // A root span (the run outlives any request), linked to the request
    // that made the chat pending, whichever replica served it.
    let span = tracing::info_span!(
        parent: None,
        "run",
        chat_id = %chat.id,
        generation = chat.generation.0,
        replica_id = %shared.config.replica_id,
        queue_wait_ms = queue_wait.as_millis() as u64,
    );
    crate::traces::link(&span, chat.trace_parent.as_deref());
    // Local subscribers hear `running` from the hub before any part (the
    // claim announced it to everyone else).
    let stream = RunStream::begin(&shared.hub, chat.id, chat.generation);
    let context = RunContext::new(
        chat,
        fence,
        queue_wait,
        shared.ops.clone(),
        control.clone(),
        stream,
    );
    let outcome = std::panic::AssertUnwindSafe(shared.runner.run(context))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let panicked = outcome.is_err();
    let cleanup = async {
        if panicked {
            // A panic is a bug, and likely repeats on the same input: end the
            // turn in error rather than bouncing the chat between replicas.
            shared.metrics.run_panics.add(1, &[]);
            tracing::error!(chat_id = %fence.chat_id, generation = fence.generation.0, "run panicked; ending the turn in error");
            if control.stop_reason().is_none() {
                let failed = TurnEnd::Failed("internal error: the run crashed".to_owned());
                if let Err(err) = shared
                    .ops
                    .finish(&fence, &[], &failed, OwnerWebhooks::Unknown)
                    .await
                {
                    tracing::warn!(chat_id = %fence.chat_id, error = %Chain(&err), "could not release after a panic; reconciliation will hand it back");
                }
            }
        }
    };
    cleanup.instrument(span).await;
    shared.registry.remove(fence.chat_id, fence.generation);
}

/// Readiness as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Registering (retrying while the database is unreachable).
    Starting,
    /// Registered, acquiring and running chats.
    Running,
    /// Shutting down: no new work.
    Draining,
    /// Stopped.
    Stopped,
}

/// A running replica runtime. Stop it with [`Runtime::shutdown`] (graceful).
pub struct Runtime {
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    phase_tx: Arc<watch::Sender<Phase>>,
    /// Stops the acquirer (first step of a shutdown).
    stop_acquiring: CancellationToken,
    /// Stops the lease, the gauge and the startup loop (last step).
    stop_background: CancellationToken,
    background: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Runtime {
    /// Starts the runtime: registers the replica (retrying with backoff while
    /// the database is unreachable, one log line per attempt), then runs the
    /// lease and the acquirer. Returns at once; see [`Runtime::wait_running`].
    pub fn start(config: RuntimeConfig, parts: RuntimeParts) -> Self {
        let registry = Arc::new(Registry::default());
        let lease_pool = lease_pool(&parts.database).unwrap_or_else(|err| {
            // The main pool parsed the same URL, so this is not expected; the
            // lease then shares the main pool as it did before it had its own.
            tracing::error!(error = %Chain(&err), "cannot build the lease's pool; the lease shares the main pool");
            parts.pool.clone()
        });
        let shared = Arc::new(Shared {
            metrics: RuntimeMetrics::new(&parts.meter, registry.clone(), config.max_running_chats),
            lease: LeaseClock::new(config.lease_ttl),
            config,
            ops: parts.ops,
            pool: parts.pool,
            pubsub: parts.pubsub,
            runner: parts.runner,
            hub: parts.hub,
            registry,
            tracker: TaskTracker::new(),
            claim_lock: tokio::sync::Mutex::new(()),
            acquirer: Mutex::new(None),
            reconciled: std::sync::atomic::AtomicU64::new(0),
            claimable: tokio::sync::Notify::new(),
            watched: watch::Sender::new(None),
            lease_pool,
            database_url: parts.database.url,
            server_started: Mutex::new(None),
            meter: parts.meter,
        });
        let (phase_tx, phase) = watch::channel(Phase::Starting);
        let runtime = Self {
            shared,
            phase,
            phase_tx: Arc::new(phase_tx),
            stop_acquiring: parts.parent.child_token(),
            stop_background: parts.parent.child_token(),
            background: Arc::new(Mutex::new(Vec::new())),
        };
        let startup = runtime.shared.tracker.spawn(
            startup(
                runtime.shared.clone(),
                runtime.phase_tx.clone(),
                runtime.stop_acquiring.clone(),
                runtime.stop_background.clone(),
                runtime.background.clone(),
            )
            .in_current_span(),
        );
        runtime.track(startup.abort_handle());
        runtime
    }

    fn track(&self, task: AbortHandle) {
        lock(&self.background).push(task);
    }

    /// This replica's id.
    pub fn replica_id(&self) -> ReplicaId {
        self.shared.config.replica_id
    }

    /// Where the runtime is in its life.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// True while registered, holding the lease, and not draining.
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Running && self.shared.lease_valid()
    }

    /// Resolves once the replica is registered and acquiring.
    pub async fn wait_running(&self) {
        let mut phase = self.phase.clone();
        let _ = phase.wait_for(|p| *p != Phase::Starting).await;
    }

    /// The chats running here, with their generations.
    pub fn running(&self) -> Vec<(ChatId, Generation)> {
        self.shared
            .registry
            .snapshot()
            .into_iter()
            .map(|(id, g, _, _)| (id, g))
            .collect()
    }

    /// The peer whose death this replica watches for (the next replica by
    /// id among those holding a lock), as of the last heartbeat.
    pub fn watched_peer(&self) -> Option<ReplicaId> {
        *self.shared.watched.borrow()
    }

    /// The runtime's instruments.
    pub fn metrics(&self) -> &RuntimeMetrics {
        &self.shared.metrics
    }

    /// Graceful shutdown (ARCHITECTURE.md §4): stop acquiring and mark the row
    /// draining; give runs `drain_timeout` to finish; hand back the rest
    /// (`pending`, generation + 1, wake); delete the replica row.
    pub async fn shutdown(self) {
        let shared = self.shared.clone();
        let _ = self.phase_tx.send(Phase::Draining);
        // The acquirer finishes a claim in flight and hands back what it
        // returns; wait for it, so the drain below sees every run.
        self.stop_acquiring.cancel();
        let acquirer = lock(&shared.acquirer).take();
        if let Some(acquirer) = acquirer {
            let _ = acquirer.await;
        }
        let marked = async {
            let client = shared.pool.get().await?;
            replicas::mark_draining(&client, shared.config.replica_id).await
        };
        if let Err(err) = marked.await {
            tracing::warn!(error = %Chain(&err), "could not mark the replica draining");
        }
        let deadline = Instant::now() + shared.config.drain_timeout;
        loop {
            let changed = shared.registry.changed.notified();
            if shared.registry.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        let remaining: Vec<(ChatId, Generation)> = shared
            .registry
            .snapshot()
            .into_iter()
            .map(|(id, generation, _, control)| {
                control.stop(StopReason::HandBack);
                (id, generation)
            })
            .collect();
        match shared
            .ops
            .hand_back(shared.config.replica_id, &remaining)
            .await
        {
            Ok(back) if back.is_empty() => {}
            Ok(back) => {
                shared.metrics.hand_back(back.len(), "shutdown");
                tracing::info!(count = back.len(), "handed back unfinished chats");
            }
            Err(err) => {
                tracing::error!(error = %Chain(&err), "handing back chats failed; recovery will requeue them when the lease expires")
            }
        }
        // Runs were told to stop; give them a moment, then cut them off.
        let stopped = shared.tracker.clone();
        stopped.close();
        let settle = Instant::now() + Duration::from_secs(5);
        while !shared.registry.is_empty() && Instant::now() < settle {
            let changed = shared.registry.changed.notified();
            if shared.registry.is_empty() {
                break;
            }
            let _ = tokio::time::timeout_at(settle, changed).await;
        }
        shared.registry.abort_all();
        self.stop_background.cancel();
        shared.tracker.wait().await;
        let deleted = async {
            let client = shared.pool.get().await?;
            replicas::delete(&client, shared.config.replica_id).await
        };
        if let Err(err) = deleted.await {
            tracing::warn!(error = %Chain(&err), "could not delete the replica row; it expires with its lease");
        }
        let _ = self.phase_tx.send(Phase::Stopped);
    }

    /// Stops every task at once without writing anything: the replica row
    /// stays and its lease lapses, exactly as if the process had been killed.
    /// For fault tests.
    #[cfg(any(test, feature = "testing"))]
    pub fn abort(self) {
        self.stop_acquiring.cancel();
        self.stop_background.cancel();
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
        self.shared.registry.abort_all();
        let _ = self.phase_tx.send(Phase::Stopped);
    }
}

/// Registers (retrying), then starts the lease, the acquirer and the gauge.
async fn startup(
    shared: Arc<Shared>,
    phase: Arc<watch::Sender<Phase>>,
    stop_acquiring: CancellationToken,
    stop_background: CancellationToken,
    background: Arc<Mutex<Vec<AbortHandle>>>,
) {
    // The row says "alive" only while the lock says so too: a row without
    // its lock held is a dead replica to its peers.
    let mut session = shared.pubsub.watch_session();
    tokio::select! {
        _ = session.wait_for(Option::is_some) => {}
        _ = stop_acquiring.cancelled() => return,
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut attempt = 1;
    loop {
        match shared.register().await {
            Ok(()) => break,
            Err(err) => {
                tracing::warn!(attempt, error = %Chain(&err), "cannot register the replica (database unreachable?); retrying");
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop_acquiring.cancelled() => return,
                }
            }
        }
    }
    tracing::info!(replica_id = %shared.config.replica_id, "replica registered");
    let mut tasks = vec![
        shared
            .tracker
            .spawn(lease::run(shared.clone(), stop_background.clone()).in_current_span())
            .abort_handle(),
        shared
            .tracker
            .spawn(pending_gauge(shared.clone(), stop_background.clone()).in_current_span())
            .abort_handle(),
        shared
            .tracker
            .spawn(interrupts::run(shared.clone(), stop_background.clone()).in_current_span())
            .abort_handle(),
        shared
            .tracker
            .spawn(
                deaths::run(
                    shared.clone(),
                    shared.database_url.clone(),
                    stop_background.clone(),
                )
                .in_current_span(),
            )
            .abort_handle(),
    ];
    if !stop_acquiring.is_cancelled() {
        let acquirer = shared
            .tracker
            .spawn(acquire::run(shared.clone(), stop_acquiring.clone()).in_current_span());
        tasks.push(acquirer.abort_handle());
        *lock(&shared.acquirer) = Some(acquirer);
        let _ = phase.send_if_modified(|p| {
            let starting = *p == Phase::Starting;
            if starting {
                *p = Phase::Running;
            }
            starting
        });
    }
    match Sender::new(
        shared.pool.clone(),
        shared.config.webhooks.clone(),
        shared.ops.webhook_hint().clone(),
        &shared.meter,
    ) {
        Ok(sender) => tasks.push(
            shared
                .tracker
                .spawn(sender.run(stop_background.clone()))
                .abort_handle(),
        ),
        Err(err) => {
            tracing::error!(error = %Chain(&err), "cannot build the webhook sender's HTTP client; this replica delivers no webhooks")
        }
    }
    lock(&background).extend(tasks);
}

/// Counts pending chats every `pending_gauge_interval` for `chatd_pending_chats`.
async fn pending_gauge(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.pending_gauge_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let count = async {
            let client = shared.pool.get().await?;
            chats::count_pending(&client).await
        }
        .await;
        match count {
            Ok(count) => shared.metrics.pending.store(count, Ordering::Relaxed),
            Err(err) => tracing::debug!(error = %Chain(&err), "counting pending chats failed"),
        }
    }
}
