//! The cluster a chaos run breaks, and how each fault is done to it.
//!
//! [`OwnCluster`]: the bench's processes (a private PostgreSQL, replicas of
//! `chatd serve` with the in-process mock model), each replica behind two
//! proxies of ours: peers reach its relay through one (advertised as
//! `CHATD_RELAY_ADVERTISE_URL`), and it reaches PostgreSQL through the other
//! (its `CHATD_DATABASE_URL`). Every fault kind works on it.
//!
//! [`ExternalCluster`]: `--target`s run by someone else, with command
//! templates to stop and start a replica; `kill` and `rolling` only.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use chatd_shared::{ids::ReplicaId, pg_server::LocalPostgres};
use tokio::{net::TcpListener, process::Command, time::Instant};

use super::{faults::FaultKind, proxy::Proxy};
use crate::bench::{
    self,
    cluster::{Cluster, ReplicaSettings, ReplicaSpec, Signal, consecutive_free_ports},
};

/// How long a replica may take to exit after SIGKILL.
const KILL_EXIT: Duration = Duration::from_secs(10);
/// How long a replica may take to come back up or go down (external).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings of the replicas a chaos run starts.
#[derive(Debug, Clone)]
pub struct ChaosReplicas {
    /// How many.
    pub count: usize,
    /// `CHATD_LEASE_TTL`.
    pub lease_ttl: Duration,
    /// `CHATD_HEARTBEAT_INTERVAL`.
    pub heartbeat_interval: Duration,
    /// `CHATD_DRAIN_TIMEOUT`.
    pub drain_timeout: Duration,
    /// `CHATD_MAX_RUNNING_CHATS`.
    pub max_running_chats: usize,
}

/// One replica's place in the cluster: its ports, its proxies, and the id
/// of the process in it now (a restarted replica is a new one, with a new
/// id, as a Deployment's pods are).
struct Slot {
    spec: ReplicaSpec,
    relay_proxy: Proxy,
    database_proxy: Proxy,
    replica_id: ReplicaId,
}

/// A cluster the chaos run started and owns.
pub struct OwnCluster {
    cluster: Cluster,
    slots: Vec<Slot>,
    postgres: LocalPostgres,
    database_url: String,
    token: String,
    drain_timeout: Duration,
}

impl OwnCluster {
    /// Starts PostgreSQL (commits synchronous so an immediate stop loses
    /// nothing acknowledged; fsync stays off), migrates, creates a token,
    /// and starts the replicas behind their proxies.
    pub async fn start(chatd: &Path, replicas: &ChaosReplicas) -> anyhow::Result<Self> {
        let mut cluster = Cluster::create()?;
        match Self::start_in(&mut cluster, chatd, replicas).await {
            Ok((slots, postgres, database_url, token)) => Ok(Self {
                cluster,
                slots,
                postgres,
                database_url,
                token,
                drain_timeout: replicas.drain_timeout,
            }),
            Err(error) => {
                let _ = cluster.stop().await;
                Err(error)
            }
        }
    }

    async fn start_in(
        cluster: &mut Cluster,
        chatd: &Path,
        replicas: &ChaosReplicas,
    ) -> anyhow::Result<(Vec<Slot>, LocalPostgres, String, String)> {
        eprintln!("chaos: starting PostgreSQL in {}", cluster.root().display());
        let (database_url, _) = cluster.start_postgres(false, replicas.count, &[]).await?;
        let postgres = cluster
            .postgres()
            .cloned()
            .context("PostgreSQL did not start")?;
        let admin = super::audit::connect(&database_url).await?;
        for statement in [
            "ALTER SYSTEM SET synchronous_commit = on",
            "SELECT pg_reload_conf()",
        ] {
            admin
                .batch_execute(statement)
                .await
                .context("making commits synchronous")?;
        }
        bench::run_chatd(chatd, Some(&database_url), &["migrate"]).await?;
        let token = bench::admin_token(chatd, &database_url).await?;

        let settings = ReplicaSettings {
            max_running_chats: replicas.max_running_chats,
            relay_secret: uuid::Uuid::new_v4().simple().to_string(),
        };
        let count = replicas.count;
        // The proxies' ports are taken first, so the replicas' ports
        // chosen next cannot be among them.
        let mut listeners = Vec::new();
        for _ in 0..2 * count {
            listeners.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        let ports = consecutive_free_ports(2 * count)?;
        let postgres_addr = ([127, 0, 0, 1], postgres.port()).into();
        let mut slots = Vec::new();
        let mut listeners = listeners.into_iter();
        for index in 0..count {
            let (api_port, relay_port) = (ports + index as u16, ports + (count + index) as u16);
            let (Some(relay_listener), Some(database_listener)) =
                (listeners.next(), listeners.next())
            else {
                bail!("a proxy listener is missing");
            };
            let relay_proxy = Proxy::serve(relay_listener, ([127, 0, 0, 1], relay_port).into())?;
            let database_proxy = Proxy::serve(database_listener, postgres_addr)?;
            let proxied_url = format!("postgres://postgres@{}/chatd", database_proxy.addr());
            let mut spec = ReplicaSpec::new(chatd, &proxied_url, (api_port, relay_port), &settings);
            spec.env.extend([
                (
                    "CHATD_RELAY_ADVERTISE_URL".into(),
                    format!("ws://{}", relay_proxy.addr()),
                ),
                ("CHATD_LEASE_TTL".into(), millis(replicas.lease_ttl)),
                (
                    "CHATD_HEARTBEAT_INTERVAL".into(),
                    millis(replicas.heartbeat_interval),
                ),
                ("CHATD_DRAIN_TIMEOUT".into(), millis(replicas.drain_timeout)),
            ]);
            slots.push(Slot {
                spec,
                relay_proxy,
                database_proxy,
                replica_id: ReplicaId::new_random(),
            });
        }
        eprintln!("chaos: starting {count} replicas of {}", chatd.display());
        for slot in &mut slots {
            slot.replica_id = ReplicaId::new_random();
            cluster.spawn_replica(slot.launch_spec()).await?;
        }
        for index in 0..count {
            cluster.wait_ready(index).await?;
        }
        Ok((slots, postgres, database_url, token))
    }

    /// The replicas' API URLs.
    pub fn urls(&self) -> Vec<String> {
        self.slots.iter().map(|slot| slot.spec.url()).collect()
    }

    /// chatd's database, directly (not through a replica's proxy).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// An admin token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The id of the process in slot `index` now.
    pub fn replica_id(&self, index: usize) -> ReplicaId {
        self.slots[index].replica_id
    }

    /// The slot whose replica has `id` now.
    pub fn slot_of(&self, id: ReplicaId) -> Option<usize> {
        self.slots.iter().position(|slot| slot.replica_id == id)
    }

    /// Stops everything and removes the directory, first copying the
    /// replicas' and PostgreSQL's logs into `keep_logs` when given.
    pub async fn stop(self, keep_logs: Option<&Path>) -> anyhow::Result<()> {
        let stopped = self.cluster.stop_keeping_logs(keep_logs).await;
        stopped.context("stopping the cluster")
    }

    /// SIGKILL replica `index`, wait `pause`, start a new process in its
    /// place and wait until it is ready.
    pub async fn kill(&mut self, index: usize, pause: Duration) -> anyhow::Result<()> {
        self.cluster.signal_replica(index, Signal::SIGKILL)?;
        self.cluster.wait_exit(index, KILL_EXIT).await?;
        tokio::time::sleep(pause).await;
        self.replace(index).await
    }

    /// SIGTERM replica `index`, wait for its drain and exit, start a new
    /// process in its place and wait until it is ready.
    pub async fn terminate(&mut self, index: usize) -> anyhow::Result<()> {
        self.cluster.signal_replica(index, Signal::SIGTERM)?;
        let exit = self.drain_timeout + Duration::from_secs(15);
        self.cluster.wait_exit(index, exit).await?;
        self.replace(index).await
    }

    async fn replace(&mut self, index: usize) -> anyhow::Result<()> {
        let slot = &mut self.slots[index];
        slot.replica_id = ReplicaId::new_random();
        let spec = slot.launch_spec();
        self.cluster.respawn_replica(index, spec).await?;
        self.cluster.wait_ready(index).await
    }

    /// Stops PostgreSQL at once (sessions cut, no checkpoint), waits `down`,
    /// starts it again.
    pub async fn restart_postgres(&self, down: Duration) -> anyhow::Result<()> {
        let postgres = self.postgres.clone();
        tokio::task::spawn_blocking(move || stop_immediately(&postgres))
            .await
            .context("stopping PostgreSQL")??;
        tokio::time::sleep(down).await;
        let postgres = self.postgres.clone();
        tokio::task::spawn_blocking(move || postgres.start())
            .await
            .context("starting PostgreSQL")?
            .context("starting PostgreSQL again")
    }

    /// Cuts every relay connection and refuses new ones for `cut_for`.
    pub async fn cut_relays(&self, cut_for: Duration) {
        for slot in &self.slots {
            slot.relay_proxy.cut();
        }
        tokio::time::sleep(cut_for).await;
        for slot in &self.slots {
            slot.relay_proxy.restore();
        }
    }

    /// Black-holes replica `index`'s path to PostgreSQL for `hold_for`.
    pub async fn partition(&self, index: usize, hold_for: Duration) {
        let proxy = &self.slots[index].database_proxy;
        proxy.hold();
        tokio::time::sleep(hold_for).await;
        proxy.release();
    }
}

impl Slot {
    /// The spec of the next process in this slot.
    fn launch_spec(&self) -> ReplicaSpec {
        let mut spec = self.spec.clone();
        spec.env
            .push(("CHATD_REPLICA_ID".into(), self.replica_id.to_string()));
        spec
    }
}

/// `pg_ctl stop -m immediate`: what a crashed server looks like to clients.
fn stop_immediately(postgres: &LocalPostgres) -> anyhow::Result<()> {
    let output = postgres
        .user()
        .command(postgres.binaries().path("pg_ctl"))
        .arg("-D")
        .arg(postgres.data_dir())
        .args(["-w", "-t", "60", "-m", "immediate", "stop"])
        .current_dir(postgres.root())
        .output()
        .context("running pg_ctl stop")?;
    if !output.status.success() {
        bail!(
            "pg_ctl stop -m immediate failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A duration as chatd's flags read it.
fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Replicas someone else runs, stopped and started with command templates.
/// In a template, `{index}` is the replica's position among the targets
/// (from 1), `{url}` its URL and `{signal}` `KILL` or `TERM`.
pub struct ExternalCluster {
    /// The targets.
    pub urls: Vec<String>,
    /// Stops a replica (`--kill-command`).
    pub kill_command: Option<String>,
    /// Starts it again (`--start-command`).
    pub start_command: Option<String>,
}

impl ExternalCluster {
    /// Why `kind` cannot be done to this cluster, if it cannot.
    pub fn unsupported(&self, kind: FaultKind) -> Option<String> {
        match kind {
            FaultKind::Kill | FaultKind::Rolling
                if self.kill_command.is_some() && self.start_command.is_some() =>
            {
                None
            }
            FaultKind::Kill | FaultKind::Rolling => {
                Some("needs --kill-command and --start-command".to_owned())
            }
            _ => Some(
                "needs the cluster chaos starts itself (no --target): its proxies and PostgreSQL"
                    .to_owned(),
            ),
        }
    }

    /// Stops replica `index` with `signal` and starts it again after
    /// `pause`; waits until it stopped answering, then until it is ready.
    pub async fn replace(&self, index: usize, signal: &str, pause: Duration) -> anyhow::Result<()> {
        let (Some(kill), Some(start)) = (&self.kill_command, &self.start_command) else {
            bail!("--kill-command and --start-command are needed");
        };
        self.run(kill, index, signal).await?;
        self.wait_ready(index, false).await?;
        tokio::time::sleep(pause).await;
        self.run(start, index, signal).await?;
        self.wait_ready(index, true).await
    }

    async fn run(&self, template: &str, index: usize, signal: &str) -> anyhow::Result<()> {
        let command = template
            .replace("{index}", &(index + 1).to_string())
            .replace("{url}", &self.urls[index])
            .replace("{signal}", signal);
        let status = Command::new("sh")
            .args(["-c", &command])
            .stdin(Stdio::null())
            .status()
            .await
            .with_context(|| format!("running {command:?}"))?;
        if !status.success() {
            bail!("{command:?} failed ({status})");
        }
        Ok(())
    }

    /// Polls `/readyz` until it answers 200 (`ready`) or stops doing so.
    async fn wait_ready(&self, index: usize, ready: bool) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building an HTTP client")?;
        let url = format!("{}/readyz", self.urls[index]);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let answered = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success());
            if answered == ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was still {} after {READY_TIMEOUT:?}",
                    self.urls[index],
                    if ready { "not ready" } else { "ready" }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
