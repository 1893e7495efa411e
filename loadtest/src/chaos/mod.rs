//! `chatd-loadtest chaos` (ARCHITECTURE.md §18): load and faults together, with the
//! invariants checked as clients go and against the database at the end.
//!
//! 1. A cluster: our own ([`cluster::OwnCluster`]: the bench's processes,
//!    each replica behind a relay proxy and a PostgreSQL proxy, a short
//!    lease) or `--target`s with stop/start command templates.
//! 2. Load: [`crate::run_with`] with every chat taking turns until the end,
//!    through the failover client; each chat's client checks what it sees
//!    ([`checker`]).
//! 3. Faults, one every `--every`, the kinds of `--faults` in turn
//!    ([`faults`]), while a probe watches for chats left running under an
//!    expired lease ([`audit`]).
//! 4. After `--duration`: no new turns; the turns in flight finish; every
//!    chat must go idle; the database is checked ([`audit`]).
//! 5. The summary: turns, violations, failover time per kind of fault.

pub mod audit;
pub mod checker;
pub mod cluster;
pub mod faults;
pub mod moves;
pub mod proxy;
pub mod summary;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use chatd_shared::ids::{ChatId, ReplicaId};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    sync::{oneshot, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Hooks, RunConfig,
    bench::{chatd_binary, interrupted},
    cli::ChaosArgs,
    stats::Recorder,
};
use checker::{ChatProbe, CheckingWatch, Checks};
use cluster::{ChaosReplicas, ExternalCluster, OwnCluster};
use faults::{FaultKind, FaultLog, FaultRef};
use summary::{ChaosParameters, ChaosStreams, ChaosSummary, ChaosTurns, Skipped, ViolationList};

/// The least time between the end of a fault and the start of the next.
const SETTLE: Duration = Duration::from_secs(2);
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The cluster being broken.
enum Target {
    Own(Box<OwnCluster>),
    External(ExternalCluster),
}

impl Target {
    fn urls(&self) -> Vec<String> {
        match self {
            Self::Own(own) => own.urls(),
            Self::External(external) => external.urls.clone(),
        }
    }

    fn unsupported(&self, kind: FaultKind) -> Option<String> {
        match self {
            Self::Own(_) => None,
            Self::External(external) => external.unsupported(kind),
        }
    }
}

/// Runs the chaos command; `Ok(false)` when a turn failed or an invariant
/// was broken.
pub async fn chaos(args: ChaosArgs) -> anyhow::Result<bool> {
    let mut target = if args.targets.is_empty() {
        let chatd = chatd_binary(args.chatd_bin.as_deref())?;
        let replicas = ChaosReplicas {
            count: args.replicas as usize,
            lease_ttl: args.lease_ttl,
            heartbeat_interval: args.heartbeat_interval,
            drain_timeout: args.drain_timeout,
            max_running_chats: (args.chats as usize).max(512),
        };
        Target::Own(Box::new(OwnCluster::start(&chatd, &replicas).await?))
    } else {
        Target::External(ExternalCluster {
            urls: args.targets.clone(),
            kill_command: args.kill_command.clone(),
            start_command: args.start_command.clone(),
        })
    };
    let outcome = tokio::select! {
        outcome = scenario(&mut target, &args) => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    let stopped = match target {
        Target::Own(own) => {
            eprintln!("chaos: stopping the replicas and PostgreSQL");
            own.stop(args.keep_logs.as_deref()).await
        }
        Target::External(_) => Ok(()),
    };
    let summary = match (outcome, stopped) {
        (Ok(summary), Ok(())) => summary,
        (Ok(_), Err(error)) | (Err(error), Ok(())) => return Err(error),
        (Err(error), Err(stop_error)) => return Err(error.context(format!("{stop_error:#}"))),
    };
    print!("{}", summary.render());
    if let Some(path) = &args.out {
        summary
            .write_json(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary.succeeded())
}

/// Everything between a running cluster and the summary.
async fn scenario(target: &mut Target, args: &ChaosArgs) -> anyhow::Result<ChaosSummary> {
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let (token, database_url) = match &*target {
        Target::Own(own) => (own.token().to_owned(), Some(own.database_url().to_owned())),
        Target::External(_) => (
            args.token
                .clone()
                .context("--target needs --token (or CHATD_LOADTEST_TOKEN)")?,
            args.pg_url.clone(),
        ),
    };
    let mut kinds = Vec::new();
    let mut skipped = Vec::new();
    for &kind in &args.faults {
        match target.unsupported(kind) {
            Some(reason) => {
                eprintln!("chaos: skipping {kind}: {reason}");
                skipped.push(Skipped { kind, reason });
            }
            None if !kinds.contains(&kind) => kinds.push(kind),
            None => {}
        }
    }
    if database_url.is_none() {
        eprintln!("chaos: no --pg-url: the checks against the database are skipped");
    }

    let config = load_config(target.urls(), token, args);
    let grace = 2 * args.lease_ttl + 2 * args.heartbeat_interval + SETTLE;
    let log = Arc::new(FaultLog::new(Instant::now(), grace));
    let checks = Arc::new(Checks::new(log.clone()));
    let recorder = Arc::new(Recorder::new());
    let (stop_load, stop_signal) = watch::channel(false);
    let (started_tx, started) = oneshot::channel();
    let hooks = Hooks {
        recorder: Some(recorder.clone()),
        stop: Some(stop_signal),
        watch: Some(Arc::new(CheckingWatch(checks.clone()))),
        turns_started: Some(started_tx),
    };
    let started_at = chrono::Utc::now();
    // A set of one, so that the load is aborted should we return early.
    let mut load = JoinSet::new();
    load.spawn(crate::run_with(config, hooks));
    tokio::select! {
        _ = started => {}
        ended = load.join_next() => {
            if let Some(ended) = ended {
                ended.context("the load panicked")??;
            }
            anyhow::bail!("the load ended before its turns began");
        }
    }
    let phase_start = Instant::now();
    if !args.quiet {
        eprintln!("chaos: {} chats taking turns; faults begin", args.chats);
    }
    let stop_probe = CancellationToken::new();
    let mut probe = JoinSet::new();
    if let Some(url) = database_url.clone() {
        let (checks, stop) = (checks.clone(), stop_probe.clone());
        let grace = args.lease_ttl + 2 * args.heartbeat_interval + SETTLE;
        probe.spawn(async move {
            audit::probe_leases(url, grace, &checks.violations, stop).await;
        });
    }

    let mut injector = Injector {
        target,
        log: &log,
        checks: &checks,
        args,
        rng: StdRng::seed_from_u64(seed),
        database_url: database_url.clone(),
    };
    injector
        .schedule(&kinds, phase_start, &recorder)
        .await
        .context("injecting faults")?;
    // The load goes on until the last fault's window closes, so every chat
    // it disrupted can show whether it recovered (a rolling restart that
    // began just before the end finishes after it).
    if let Some(closed) = log.windows_closed_at()
        && closed > Instant::now()
    {
        if !args.quiet {
            eprintln!("chaos: load goes on until the last fault's window closes");
        }
        tokio::time::sleep_until(closed).await;
    }

    stop_load.send_replace(true);
    if !args.quiet {
        eprintln!("chaos: load stopped; waiting for the turns in flight");
    }
    let summary = match load.join_next().await {
        Some(joined) => joined.context("the load panicked")??,
        None => anyhow::bail!("the load's task is gone"),
    };
    let phase = phase_start.elapsed();
    stop_probe.cancel();
    probe.join_all().await;
    let records = checks.records();
    if let Some(url) = &database_url {
        let db = audit::connect(url).await?;
        let chats: Vec<ChatId> = records.keys().copied().collect();
        audit::wait_quiet(&db, &chats, &checks.violations).await;
        audit::audit(&db, &records, &checks.violations).await?;
    }

    let counters = recorder.counters();
    Ok(ChaosSummary {
        version: 1,
        started_at,
        parameters: ChaosParameters {
            targets: injector.target.urls(),
            own_cluster: matches!(injector.target, Target::Own(_)),
            chats: args.chats as usize,
            duration_ms: millis(args.duration),
            every_ms: millis(args.every),
            faults: args.faults.clone(),
            skipped,
            lease_ttl_ms: millis(args.lease_ttl),
            heartbeat_interval_ms: millis(args.heartbeat_interval),
            message: args.message.clone(),
            transport: args.transport.as_str().to_owned(),
            seed,
        },
        turns: ChaosTurns {
            completed: counters.turns_completed,
            failed: counters.turns_failed,
            per_second: counters.turns_completed as f64 / phase.as_secs_f64().max(1e-9),
        },
        latency_us: summary.latency_us,
        failover: log.figures(),
        faults: log.entries(),
        streams: ChaosStreams {
            reconnects: counters.reconnects,
            requests_retried: summary.streams.requests_retried,
            repeats_dropped: summary.streams.repeats_dropped,
            drafts_overtaken: checks.drafts_overtaken(),
            unattributed_disruptions: log.unattributed_count(),
            parts_not_delivered: counters.parts_not_delivered,
        },
        violations: ViolationList {
            count: checks.violations.count(),
            examples: checks.violations.examples(),
        },
        failures: summary.failures,
    })
}

/// The load: every chat takes turns until told to stop.
fn load_config(targets: Vec<String>, token: String, args: &ChaosArgs) -> RunConfig {
    let chats = args.chats as usize;
    let mut config = RunConfig::new(targets, token, chats, u32::MAX);
    config.message = args.message.clone();
    config.transport = args.transport;
    config.timeout = args.timeout;
    config.attempt_timeout = Some(args.attempt_timeout);
    config.stall_timeout = Some(args.stall_timeout);
    config.staleness_sample = args.staleness_sample;
    config.progress = false;
    config
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Injects the faults of a run.
struct Injector<'a> {
    target: &'a mut Target,
    log: &'a FaultLog,
    checks: &'a Checks,
    args: &'a ChaosArgs,
    rng: StdRng,
    /// chatd's database, directly (relay cuts read which replica runs
    /// what; a connection per cut, as PostgreSQL may have restarted).
    database_url: Option<String>,
}

impl<'a> Injector<'a> {
    /// One fault every `--every` from `phase_start`, the kinds in turn,
    /// until `--duration` is over.
    async fn schedule(
        &mut self,
        kinds: &[FaultKind],
        phase_start: Instant,
        recorder: &Recorder,
    ) -> anyhow::Result<()> {
        let end = phase_start + self.args.duration;
        let mut next = phase_start + self.args.every;
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let mut kinds = kinds.iter().copied().cycle();
        loop {
            let wait_until = next.min(end);
            tokio::select! {
                () = tokio::time::sleep_until(wait_until) => {}
                _ = progress.tick() => {
                    self.progress(phase_start, recorder);
                    continue;
                }
            }
            if Instant::now() >= end {
                return Ok(());
            }
            let Some(kind) = kinds.next() else {
                // No fault kinds: load only, until the end.
                next = end;
                continue;
            };
            self.inject(kind).await?;
            next = (next + self.args.every).max(Instant::now() + SETTLE);
        }
    }

    fn progress(&self, phase_start: Instant, recorder: &Recorder) {
        if self.args.quiet {
            return;
        }
        let counters = recorder.counters();
        eprintln!(
            "chaos: {:>4} s · {} turns completed, {} failed · {} faults · {} violations",
            phase_start.elapsed().as_secs(),
            counters.turns_completed,
            counters.turns_failed,
            self.log.entries().len(),
            self.checks.violations.count()
        );
    }

    /// Does one fault of `kind`, logging it from its start to the moment
    /// the cluster is whole again.
    async fn inject(&mut self, kind: FaultKind) -> anyhow::Result<()> {
        if kind == FaultKind::Rolling {
            return self.rolling().await;
        }
        let replicas = self.target.urls().len();
        let index = self.rng.random_range(0..replicas);
        let args = self.args;
        let note = |what: &str| {
            if !args.quiet {
                eprintln!("chaos: {kind}: {what}");
            }
        };
        let own_cluster = matches!(*self.target, Target::Own(_));
        match (kind, own_cluster) {
            (FaultKind::Kill, _) => {
                let what = format!("replica {}", index + 1);
                let fault = self.begin(kind, what, Reach::Replica(index)).await;
                note(&format!("SIGKILL replica {}", index + 1));
                if own_cluster {
                    let moves = self.moves_of(index, fault).await;
                    let kill = self.own()?.kill(index, args.kill_pause);
                    let (killed, ()) = tokio::join!(kill, moves);
                    killed?;
                } else {
                    let external = self.external()?;
                    external.replace(index, "KILL", args.kill_pause).await?;
                }
                self.log.end(fault);
            }
            (FaultKind::PgRestart, true) => {
                let fault = self
                    .begin(kind, format!("down {:?}", args.pg_down), Reach::Everyone)
                    .await;
                note("PostgreSQL stopped immediately");
                self.own()?.restart_postgres(args.pg_down).await?;
                self.log.end(fault);
            }
            (FaultKind::RelayCut, true) => {
                let what = format!("refused {:?}", args.relay_cut_for);
                let fault = self.begin(kind, what, Reach::Relays).await;
                note("every relay connection cut");
                self.own()?.cut_relays(args.relay_cut_for).await;
                self.log.end(fault);
            }
            (FaultKind::Partition, true) => {
                let what = format!(
                    "replica {} cut from PostgreSQL for {:?}",
                    index + 1,
                    args.partition_for
                );
                let fault = self.begin(kind, what, Reach::Replica(index)).await;
                note(&format!("replica {} cut from PostgreSQL", index + 1));
                let moves = self.moves_of(index, fault).await;
                let partition = self.own()?.partition(index, args.partition_for);
                tokio::join!(partition, moves);
                self.log.end(fault);
            }
            (kind, _) => {
                anyhow::bail!("{kind} cannot be injected into --target replicas")
            }
        }
        Ok(())
    }

    /// Times the moves of the chats replica `index` of our own cluster runs
    /// now (see [`moves`]), once awaited; nothing without the database.
    async fn moves_of(&self, index: usize, fault: FaultRef) -> impl Future<Output = ()> + use<'a> {
        let url = self.database_url.clone();
        let victim = match &*self.target {
            Target::Own(own) => Some(own.replica_id(index)),
            Target::External(_) => None,
        };
        let runs = match (&url, victim) {
            (Some(url), Some(victim)) => moves::runs_of(url, victim).await,
            _ => Vec::new(),
        };
        let since = Instant::now();
        // Past the fault's window a chat's move is not this fault's to time.
        let deadline = since + self.log.grace();
        let log = self.log;
        async move {
            if let Some(url) = url {
                moves::time_moves(&url, runs, since, deadline, log, fault).await;
            }
        }
    }

    fn own(&mut self) -> anyhow::Result<&mut OwnCluster> {
        match &mut *self.target {
            Target::Own(own) => Ok(own),
            Target::External(_) => anyhow::bail!("this fault needs the cluster chaos starts"),
        }
    }

    fn external(&self) -> anyhow::Result<&ExternalCluster> {
        match &*self.target {
            Target::External(external) => Ok(external),
            Target::Own(_) => anyhow::bail!("not a --target cluster"),
        }
    }

    /// Logs the start of a fault of `kind` that reaches `reach`, and marks
    /// the chats it cuts off (see [`reached`]); `what` is for the log.
    async fn begin(&mut self, kind: FaultKind, what: String, reach: Reach) -> FaultRef {
        let running = match &*self.target {
            Target::Own(own) => running_chats(self.database_url.as_deref(), own).await,
            Target::External(_) => HashMap::new(),
        };
        let cut_off = reached(self.checks, &running, reach);
        let fault = self
            .log
            .begin(kind, format!("{what}; {} chats cut off", cut_off.len()));
        for probe in cut_off {
            probe.mark(fault);
        }
        fault
    }

    /// Replaces every replica in turn, as a Deployment rollout does: each
    /// replacement is a fault of its own.
    async fn rolling(&mut self) -> anyhow::Result<()> {
        for index in 0..self.target.urls().len() {
            let what = format!("replica {} replaced", index + 1);
            let fault = self
                .begin(FaultKind::Rolling, what, Reach::Replica(index))
                .await;
            if !self.args.quiet {
                eprintln!(
                    "chaos: rolling: SIGTERM replica {} and start a new one",
                    index + 1
                );
            }
            match &mut *self.target {
                Target::Own(own) => own.terminate(index).await?,
                Target::External(external) => {
                    external.replace(index, "TERM", Duration::ZERO).await?;
                }
            }
            self.log.end(fault);
        }
        Ok(())
    }
}

/// What a fault reaches.
#[derive(Debug, Clone, Copy)]
enum Reach {
    /// One replica: the chats it runs and the clients it streams to.
    Replica(usize),
    /// PostgreSQL: every running chat.
    Everyone,
    /// The relay links: chats running on one replica and streamed from
    /// another.
    Relays,
}

/// The chats running now and the slot of the replica running each (`None`
/// when not one of ours, or unknown).
async fn running_chats(
    database_url: Option<&str>,
    own: &OwnCluster,
) -> HashMap<ChatId, Option<usize>> {
    let Some(url) = database_url else {
        return HashMap::new();
    };
    let Ok(db) = audit::connect(url).await else {
        eprintln!("chaos: cannot read which replica runs what");
        return HashMap::new();
    };
    let Ok(rows) = db
        .query(
            "SELECT id, worker_id FROM chats WHERE status = 'running'",
            &[],
        )
        .await
    else {
        return HashMap::new();
    };
    rows.iter()
        .map(|row| {
            let worker: Option<uuid::Uuid> = row.get(1);
            (
                ChatId(row.get(0)),
                worker.and_then(|id| own.slot_of(ReplicaId(id))),
            )
        })
        .collect()
}

/// The probes of the chats a fault cuts off, some of which could not
/// notice it themselves (a stream on a replica cut from PostgreSQL stays
/// open; a relay cut shows nothing but silence): those running on the
/// replica it hits, or streamed from it; for PostgreSQL every running
/// chat; for the relay, those streamed from another replica than the one
/// running them.
fn reached(
    checks: &Checks,
    running: &HashMap<ChatId, Option<usize>>,
    reach: Reach,
) -> Vec<Arc<ChatProbe>> {
    checks
        .probes()
        .into_iter()
        .filter(|(chat_id, probe)| {
            let stream = probe.stream_replica.load(Ordering::Relaxed);
            let worker = running.get(chat_id).copied();
            match reach {
                Reach::Replica(index) => stream == index || worker == Some(Some(index)),
                Reach::Everyone => worker.is_some(),
                Reach::Relays => worker.flatten().is_some_and(|worker| worker != stream),
            }
        })
        .map(|(_, probe)| probe)
        .collect()
}
