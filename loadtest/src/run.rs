//! One run (`chatd-loadtest run`): check every target before any load, set
//! up the chats, take the turns, and measure the window in between.
//!
//! With the barrier (the default) every chat is created and streamed
//! first; the CPU and database statistics are read, then every first turn
//! starts together, and the statistics are read again when the last user
//! is done. Without it, the window is the whole run.

use std::{sync::Arc, time::Duration};

use chatd_shared::{
    api::{CreateChat, SendMessage},
    client::{ChatsQuery, Client, ClientError, FailoverClient, RetryPolicy},
    error_chain::Chain,
};
use chrono::Utc;
use tokio::{
    sync::{Semaphore, oneshot, watch},
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};

use crate::{
    config::RunConfig,
    cpu::{CpuProbe, MachineTime, peak_rss_bytes},
    database::{DatabaseError, DatabaseProbe, STATS_SETTLE, Snapshot},
    progress::Progress,
    stats::Recorder,
    summary::{CpuUse, MachineUse, Parameters, Streams, Summary, Turns},
    user::{Crowd, Watch, run_user},
};

/// How long the check of each target before the load may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Why a run could not start (or, for a bug, finish).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// A target is unreachable, or refused the token.
    #[error("{target}: {reason}")]
    Target {
        /// The target's URL.
        target: String,
        /// What is wrong, in one sentence.
        reason: String,
    },
    /// `--pg-url` cannot be read.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(String),
    /// A virtual user panicked: a bug in the harness.
    #[error("a virtual user panicked: {0}")]
    Panicked(String),
}

/// Runs the load described by `config` and summarises it. Errors are for
/// runs that could not start; failures during the load are in the summary
/// (see [`Summary::succeeded`]).
pub async fn run(config: RunConfig) -> Result<Summary, RunError> {
    run_with(config, Hooks::default()).await
}

/// What a caller of [`run_with`] adds to a plain run (the chaos command).
#[derive(Default)]
pub struct Hooks {
    /// Where everything is recorded (read it while the run goes on);
    /// default: a recorder of the run's own.
    pub recorder: Option<Arc<Recorder>>,
    /// Turns true when no new turn may start; the run ends once the turns
    /// in flight did.
    pub stop: Option<watch::Receiver<bool>>,
    /// Follows every chat.
    pub watch: Option<Arc<dyn Watch>>,
    /// Told when the turn phase begins (with the barrier).
    pub turns_started: Option<oneshot::Sender<()>>,
}

/// [`run`], with `hooks`.
pub async fn run_with(config: RunConfig, hooks: Hooks) -> Result<Summary, RunError> {
    config.validate().map_err(RunError::Config)?;
    let client = failover_client(&config)?;
    preflight(client.replicas(), &config.targets).await?;
    let database = match &config.pg_url {
        Some(url) => Some(DatabaseProbe::connect(url).await?),
        None => None,
    };
    if let Some(reason) = database.as_ref().and_then(|db| db.statements_unavailable()) {
        eprintln!("chatd-loadtest: statements will not be counted: {reason}");
    }
    let summary = drive(&config, client, database.as_ref(), hooks).await;
    if let Some(database) = database {
        database.close().await;
    }
    summary
}

/// A client of every target, on one connection pool: each attempt and the
/// whole of each call are bounded by the run's timeout.
pub(crate) fn failover_client(config: &RunConfig) -> Result<FailoverClient, RunError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .user_agent(concat!("chatd-loadtest/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| RunError::Http(Chain(&error).to_string()))?;
    let policy = RetryPolicy {
        attempt_timeout: config.attempt_timeout.unwrap_or(config.timeout),
        deadline: config.timeout,
        ..RetryPolicy::default()
    };
    FailoverClient::new(http, &config.targets, &config.token, policy).map_err(|error| {
        RunError::Target {
            target: config.targets.join(","),
            reason: Chain(&error).to_string(),
        }
    })
}

/// Lists one chat on every target: an unreachable target or a refused
/// token stops the run before any load.
async fn preflight(clients: &[Client], targets: &[String]) -> Result<(), RunError> {
    let one = ChatsQuery {
        limit: Some(1),
        ..ChatsQuery::default()
    };
    let one = &one;
    let checks = clients
        .iter()
        .zip(targets)
        .map(|(client, target)| async move {
            let answer = tokio::time::timeout(PREFLIGHT_TIMEOUT, client.list_chats(one)).await;
            let reason = match answer {
                Ok(Ok(_)) => return Ok(()),
                Err(_) => format!("no answer within {PREFLIGHT_TIMEOUT:?}"),
                Ok(Err(error)) => refusal(&error),
            };
            Err(RunError::Target {
                target: target.clone(),
                reason,
            })
        });
    futures::future::try_join_all(checks).await.map(drop)
}

/// One sentence on why a target refused the preflight request.
fn refusal(error: &ClientError) -> String {
    match error.status().map(|status| status.as_u16()) {
        Some(401) => format!("the token was refused ({})", Chain(error)),
        Some(403) => format!("the token is not allowed to use the API ({})", Chain(error)),
        Some(_) => format!("answered with an error ({})", Chain(error)),
        None if matches!(error, ClientError::Http(_)) => {
            format!("unreachable ({})", Chain(error))
        }
        None => Chain(error).to_string(),
    }
}

/// The statistics at one moment: CPU per probe, and the database.
struct Reading {
    cpu: Vec<Option<Duration>>,
    machine: Option<MachineTime>,
    database: Option<Result<Snapshot, String>>,
}

impl Reading {
    /// The statistics as a window starts (the database's once settled).
    async fn before(probes: &[CpuProbe], database: Option<&DatabaseProbe>, progress: bool) -> Self {
        let database = match database {
            Some(database) => {
                settling_note(progress);
                Some(database.snapshot_before().await)
            }
            None => None,
        };
        let cpu = probes.iter().map(|probe| probe.cpu_time().ok()).collect();
        let machine = MachineTime::now().ok();
        Self {
            cpu,
            machine,
            database,
        }
    }

    /// The statistics as a window ends (the database's transactions once
    /// settled).
    async fn after(probes: &[CpuProbe], database: Option<&DatabaseProbe>, progress: bool) -> Self {
        let cpu = probes.iter().map(|probe| probe.cpu_time().ok()).collect();
        let machine = MachineTime::now().ok();
        let database = match database {
            Some(database) => {
                settling_note(progress);
                Some(database.snapshot_after().await)
            }
            None => None,
        };
        Self {
            cpu,
            machine,
            database,
        }
    }
}

/// Says why the run pauses.
fn settling_note(progress: bool) {
    if progress {
        eprintln!(
            "waiting {} s for PostgreSQL's transaction counts to settle",
            STATS_SETTLE.as_secs()
        );
    }
}

async fn drive(
    config: &RunConfig,
    client: FailoverClient,
    database: Option<&DatabaseProbe>,
    hooks: Hooks,
) -> Result<Summary, RunError> {
    let started_at = Utc::now();
    let recorder = hooks.recorder.unwrap_or_default();
    let (start, start_signal) = watch::channel(false);
    let crowd = Arc::new(Crowd {
        client,
        targets: config.targets.clone(),
        transport: config.transport.client(),
        open_timeout: config.timeout,
        stall_timeout: config.stall_timeout,
        turns: config.turns,
        stop: hooks.stop,
        turn_timeout: config.timeout,
        create: CreateChat {
            labels: Some(serde_json::json!({ "chatd_loadtest": started_at.to_rfc3339() })),
            ..CreateChat::default()
        },
        message: SendMessage {
            text: Some(config.message.clone()),
            ..SendMessage::default()
        },
        recorder: recorder.clone(),
        in_flight: Semaphore::new(config.concurrency),
        set_up: Semaphore::new(0),
        start: config.barrier.then_some(start_signal),
        watch: hooks.watch,
    });
    let mut probes = vec![CpuProbe::current("chatd-loadtest")];
    probes.extend(config.cpu_probes.iter().cloned());
    let mut progress = Progress::new(config.progress);
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;

    let mut before = None;
    if !config.barrier {
        before = Some(Reading::before(&probes, database, config.progress).await);
        progress.restart();
        ticker.reset();
    }
    let run_start = Instant::now();
    let mut users = JoinSet::new();
    for index in 0..config.chats {
        let start_at = run_start + config.ramp.mul_f64(index as f64 / config.chats as f64);
        let sampled = config.is_sampled(index);
        users.spawn(run_user(crowd.clone(), index, start_at, sampled));
    }
    let mut window_start = run_start;
    if config.barrier {
        let chats =
            u32::try_from(config.chats).map_err(|_| RunError::Config("too many chats".into()))?;
        let set_up = crowd.set_up.acquire_many(chats);
        tokio::pin!(set_up);
        loop {
            tokio::select! {
                all = &mut set_up => {
                    // The semaphore is never closed.
                    if let Ok(permits) = all {
                        permits.forget();
                    }
                    break;
                }
                joined = users.join_next(), if !users.is_empty() => check_join(joined)?,
                _ = ticker.tick() => progress.setup(&recorder.counters(), config.chats),
            }
        }
        progress.finish();
        before = Some(Reading::before(&probes, database, config.progress).await);
        window_start = Instant::now();
        start.send_replace(true);
        if let Some(started) = hooks.turns_started {
            let _ = started.send(());
        }
        progress.restart();
        ticker.reset();
    }
    loop {
        tokio::select! {
            joined = users.join_next() => match joined {
                None => break,
                joined => check_join(joined)?,
            },
            _ = ticker.tick() => progress.turns(
                &recorder.counters(),
                config.planned_turns(),
                recorder.median_turn(),
            ),
        }
    }
    let window = window_start.elapsed();
    progress.finish();
    let after = Reading::after(&probes, database, config.progress).await;
    let before = before.unwrap_or_else(|| Reading {
        cpu: Vec::new(),
        machine: None,
        database: None,
    });
    let mut summary = summarise(
        config, &recorder, &probes, database, &before, &after, window, started_at,
    );
    let counts = crowd.client.stats().counts();
    summary.streams.requests_retried = counts.retries;
    summary.streams.repeats_dropped = counts.duplicates_dropped;
    Ok(summary)
}

/// A finished user; a panic is a bug worth stopping for.
fn check_join(joined: Option<Result<(), tokio::task::JoinError>>) -> Result<(), RunError> {
    match joined {
        Some(Err(error)) if error.is_panic() => Err(RunError::Panicked(error.to_string())),
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    config: &RunConfig,
    recorder: &Recorder,
    probes: &[CpuProbe],
    database: Option<&DatabaseProbe>,
    before: &Reading,
    after: &Reading,
    window: Duration,
    started_at: chrono::DateTime<Utc>,
) -> Summary {
    let counters = recorder.counters();
    let planned = config.planned_turns();
    let phase = recorder.turn_phase().unwrap_or_default().as_secs_f64();
    let completed = counters.turns_completed;
    let turns = Turns {
        planned,
        completed,
        failed: counters.turns_failed,
        not_run: planned.saturating_sub(completed + counters.turns_failed),
        phase_seconds: phase,
        per_second: if phase > 0.0 {
            completed as f64 / phase
        } else {
            0.0
        },
    };
    let window_seconds = window.as_secs_f64();
    let cpu = probes
        .iter()
        .enumerate()
        .filter_map(|(index, probe)| {
            let used = (*after.cpu.get(index)?)?.saturating_sub((*before.cpu.get(index)?)?);
            let seconds = used.as_secs_f64();
            Some(CpuUse {
                name: probe.name.clone(),
                seconds,
                cores: if window_seconds > 0.0 {
                    seconds / window_seconds
                } else {
                    0.0
                },
                us_per_turn: (completed > 0).then(|| seconds * 1e6 / completed as f64),
            })
        })
        .collect();
    let window_name = if config.barrier {
        "turn phase"
    } else {
        "whole run, creates and stream opens included"
    };
    let database = match (database, &before.database, &after.database) {
        (Some(probe), Some(Ok(before)), Some(Ok(after))) => {
            Some(probe.cost(before, after, completed, window_name))
        }
        (Some(_), before, after) => {
            let error = [before, after]
                .into_iter()
                .flatten()
                .find_map(|reading| reading.as_ref().err())
                .map_or("not read", String::as_str);
            eprintln!("chatd-loadtest: the database statistics could not be read: {error}");
            None
        }
        (None, ..) => None,
    };
    Summary {
        version: 1,
        started_at,
        parameters: Parameters::of(config),
        turns,
        latency_us: recorder.latencies(),
        streams: Streams {
            reconnects: counters.reconnects,
            // Filled in by the caller, which holds the client.
            requests_retried: 0,
            repeats_dropped: 0,
            parts_not_delivered: counters.parts_not_delivered,
        },
        failures: recorder.failures(),
        cpu,
        machine: machine_use(before.machine, after.machine),
        measured_seconds: window_seconds,
        harness_peak_rss_bytes: peak_rss_bytes(),
        database,
        budgets: None,
        ceiling: None,
    }
}

/// The machine's busy and total CPU time between two readings, as cores.
fn machine_use(before: Option<MachineTime>, after: Option<MachineTime>) -> Option<MachineUse> {
    let (before, after) = (before?, after?);
    let total = after.total.saturating_sub(before.total).as_secs_f64();
    let busy = after.busy.saturating_sub(before.busy).as_secs_f64();
    let cores = after.cpus as f64;
    (total > 0.0).then(|| MachineUse {
        cores,
        busy_cores: busy / total * cores,
    })
}
