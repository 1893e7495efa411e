//! The processes of a bench: a private PostgreSQL in a temporary directory
//! and replicas as child processes of `chatd serve`, and the way they are
//! all stopped again.
//!
//! [`Cluster::stop`] stops everything in order (SIGTERM to the replicas and
//! a wait for their drain, a fast PostgreSQL shutdown, the directory
//! removed). Should this process die without calling it, a reaper started
//! first does the same: it holds the only read end of a pipe from us and
//! acts on EOF, which the kernel delivers however we exit. Replicas and the
//! reaper run in process groups of their own, so a Ctrl-C reaches only us
//! and we decide the order.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use chatd_shared::{
    db::connect_dedicated,
    error_chain::Chain,
    pg_server::{LocalPostgres, PgBinaries, ServerSettings, ServerUser},
};
pub use nix::sys::signal::Signal;
use rand::Rng;
use tokio::{
    io::AsyncWriteExt,
    process::{Child, ChildStdin, Command},
};

use crate::cpu::{CpuProbe, CpuSource};

/// The database the bench creates for chatd.
const DATABASE: &str = "chatd";
/// How long a replica may take to answer `/readyz` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a replica may take to stop after SIGTERM (its drain timeout is
/// 10 s) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines shown when a child process fails.
const LOG_TAIL_LINES: usize = 15;

/// Stops the replicas and PostgreSQL and removes the directory when its
/// stdin reaches EOF, unless it read `done` first. Arguments: the directory.
const REAPER_SCRIPT: &str = r#"pids=
while read -r line; do
  case "$line" in
    done) exit 0 ;;
    *) pids="$pids $line" ;;
  esac
done
[ -n "$pids" ] && kill -TERM $pids 2>/dev/null
pidfile="$1/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  pg=$(head -n 1 "$pidfile")
  kill -INT "$pg" 2>/dev/null
  i=0
  while kill -0 "$pg" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fi
rm -rf "$1""#;

/// Everything a bench started, to be stopped by [`Cluster::stop`].
pub struct Cluster {
    root: PathBuf,
    reaper: Child,
    /// Tells the reaper which processes to stop, and that it is not needed.
    reaper_pipe: ChildStdin,
    postgres: Option<LocalPostgres>,
    replicas: Vec<ReplicaProcess>,
}

/// One `chatd serve`.
pub struct ReplicaProcess {
    /// `replica 1`, …
    pub name: String,
    /// Its API base URL.
    pub url: String,
    /// How it was started, to start it again.
    spec: ReplicaSpec,
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// Environment of a replica beyond the database URL and its address.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// `CHATD_MAX_RUNNING_CHATS`.
    pub max_running_chats: usize,
    /// `CHATD_RELAY_SECRET` of every replica.
    pub relay_secret: String,
}

/// Everything a replica process is started with.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// The `chatd` binary.
    pub chatd: PathBuf,
    /// `CHATD_DATABASE_URL`.
    pub database_url: String,
    /// The API port on 127.0.0.1.
    pub api_port: u16,
    /// The relay port on 127.0.0.1.
    pub relay_port: u16,
    /// `CHATD_*` variables beyond the address, database and the mock model.
    pub env: Vec<(String, String)>,
}

impl ReplicaSpec {
    /// A replica with `settings` on these ports.
    pub fn new(
        chatd: &Path,
        database_url: &str,
        (api_port, relay_port): (u16, u16),
        settings: &ReplicaSettings,
    ) -> Self {
        Self {
            chatd: chatd.to_owned(),
            database_url: database_url.to_owned(),
            api_port,
            relay_port,
            env: vec![
                (
                    "CHATD_MAX_RUNNING_CHATS".into(),
                    settings.max_running_chats.to_string(),
                ),
                ("CHATD_RELAY_SECRET".into(), settings.relay_secret.clone()),
            ],
        }
    }

    /// The API base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn command(&self) -> Command {
        let mut command = chatd_command(&self.chatd, Some(&self.database_url));
        command
            .args(["serve", "--no-migrate"])
            .env("CHATD_HTTP_ADDR", format!("127.0.0.1:{}", self.api_port))
            .env("CHATD_PROVIDER_KIND", "mock")
            .env("CHATD_PROVIDER_BASE_URL", "mock://?tokens=20")
            .env("CHATD_RELAY_ADDR", format!("127.0.0.1:{}", self.relay_port))
            .envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }
}

impl Cluster {
    /// A temporary directory and the reaper that removes it; nothing runs yet.
    pub fn create() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = std::env::temp_dir().join(format!("chatd-bench-{}-{nanos}", std::process::id()));
        let mut reaper = Command::new("sh")
            .args(["-c", REAPER_SCRIPT, "chatd-bench-reaper"])
            .arg(&root)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cleanup process (sh)")?;
        let reaper_pipe = reaper
            .stdin
            .take()
            .context("the cleanup process has no stdin")?;
        Ok(Self {
            root,
            reaper,
            reaper_pipe,
            postgres: None,
            replicas: Vec::new(),
        })
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts PostgreSQL (`pg_stat_statements` preloaded; fsync off unless
    /// `durable`), creates chatd's database with the extension, and returns
    /// its URL and the server's version.
    pub async fn start_postgres(
        &mut self,
        durable: bool,
        replicas: usize,
        extra: &[(String, String)],
    ) -> anyhow::Result<(String, String)> {
        let extra = extra.to_vec();
        let binaries = PgBinaries::locate()?;
        let user = ServerUser::detect()?;
        let root = self.root.clone();
        let max_connections = 50 + 40 * replicas as u32;
        let server = tokio::task::spawn_blocking(move || {
            let mut last_error = None;
            // The free port can be taken between the probe and the bind:
            // retry. Below the ephemeral range, as chaos restarts it there.
            for _ in 0..3 {
                let settings = ServerSettings {
                    port: consecutive_free_ports(1)?,
                    durability_off: !durable,
                    max_connections,
                    password_roles: Vec::new(),
                    extra: extra.clone(),
                };
                let server = LocalPostgres::init(binaries.clone(), user, &root, &settings)?;
                match server.start() {
                    Ok(()) => return Ok(server),
                    Err(error) => last_error = Some(error),
                }
            }
            Err(anyhow::Error::from(
                last_error.expect("three attempts were made"),
            ))
        })
        .await
        .context("starting PostgreSQL")??;
        self.postgres = Some(server.clone());

        server
            .ensure_database(DATABASE)
            .await
            .context("creating the database")?;
        let (admin, _) = connect_dedicated(&server.url("postgres"))
            .await
            .context("connecting to the private PostgreSQL")?;
        let version: String = admin
            .query_one("SHOW server_version", &[])
            .await
            .context("reading the server version")?
            .get(0);
        Ok((server.url(DATABASE), version))
    }

    /// Starts `count` replicas of `chatd serve` on consecutive free ports
    /// and waits until each is ready.
    pub async fn start_replicas(
        &mut self,
        chatd: &Path,
        count: usize,
        database_url: &str,
        settings: &ReplicaSettings,
    ) -> anyhow::Result<()> {
        // API ports, then relay ports.
        let ports = consecutive_free_ports(2 * count)?;
        for index in 0..count {
            let api_port = ports + index as u16;
            let relay_port = ports + (count + index) as u16;
            let spec = ReplicaSpec::new(chatd, database_url, (api_port, relay_port), settings);
            self.spawn_replica(spec).await?;
        }
        for index in 0..count {
            self.wait_ready(index).await?;
        }
        Ok(())
    }

    /// Starts one more replica as `spec` says (not waiting for it to be
    /// ready); returns its index.
    pub async fn spawn_replica(&mut self, spec: ReplicaSpec) -> anyhow::Result<usize> {
        let index = self.replicas.len();
        let process = self.launch(index, spec).await?;
        self.replicas.push(process);
        Ok(index)
    }

    /// Starts replica `index` again, as `spec` says, once its previous
    /// process has exited (not waiting for it to be ready).
    pub async fn respawn_replica(&mut self, index: usize, spec: ReplicaSpec) -> anyhow::Result<()> {
        let process = self.launch(index, spec).await?;
        self.replicas[index] = process;
        Ok(())
    }

    async fn launch(&mut self, index: usize, spec: ReplicaSpec) -> anyhow::Result<ReplicaProcess> {
        let logs = self.root.join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let log = logs.join(format!("replica-{}.log", index + 1));
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let child = spec
            .command()
            .stdout(output.try_clone().context("sharing the replica's log")?)
            .stderr(output)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", spec.chatd.display()))?;
        let pid = child.id().context("the replica exited at once")?;
        self.tell_reaper(&pid.to_string()).await;
        Ok(ReplicaProcess {
            name: format!("replica {}", index + 1),
            url: spec.url(),
            spec,
            child,
            pid,
            log,
        })
    }

    /// Waits until replica `index` answers `/readyz` with 200.
    pub async fn wait_ready(&mut self, index: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building an HTTP client")?;
        self.replicas[index].wait_ready(&http).await
    }

    /// Sends `signal` to replica `index`'s process.
    pub fn signal_replica(&self, index: usize, signal: Signal) -> anyhow::Result<()> {
        send_signal(self.replicas[index].pid, signal)
    }

    /// Waits up to `timeout` for replica `index`'s process to exit.
    pub async fn wait_exit(&mut self, index: usize, timeout: Duration) -> anyhow::Result<()> {
        let replica = &mut self.replicas[index];
        match tokio::time::timeout(timeout, replica.child.wait()).await {
            Ok(exited) => exited.map(drop).context("waiting for the replica to exit"),
            Err(_) => bail!("{} did not exit within {timeout:?}", replica.name),
        }
    }

    /// The private PostgreSQL, once started.
    pub fn postgres(&self) -> Option<&LocalPostgres> {
        self.postgres.as_ref()
    }

    /// The replicas started.
    pub fn replicas(&self) -> &[ReplicaProcess] {
        &self.replicas
    }

    /// CPU probes of every replica and of PostgreSQL (all its processes).
    pub fn cpu_probes(&self) -> Vec<CpuProbe> {
        let mut probes: Vec<CpuProbe> = self
            .replicas
            .iter()
            .map(|replica| CpuProbe {
                name: replica.name.clone(),
                source: CpuSource::Process(replica.pid),
            })
            .collect();
        probes.extend(self.postgres_probe());
        probes
    }

    /// PostgreSQL's CPU (the postmaster and its backends), once started.
    pub fn postgres_probe(&self) -> Option<CpuProbe> {
        Some(CpuProbe {
            name: "postgresql".to_owned(),
            source: CpuSource::Tree(self.postmaster_pid()?),
        })
    }

    /// The URL of a database on the bench's PostgreSQL, once started.
    pub fn url_of(&self) -> Option<impl Fn(&str) -> String + use<>> {
        let postgres = self.postgres.clone()?;
        Some(move |database: &str| postgres.url(database))
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let postgres = self.postgres.as_ref()?;
        let text = fs::read_to_string(postgres.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    async fn tell_reaper(&mut self, line: &str) {
        // Should the reaper be gone, there is nothing better to do than go on:
        // `stop` still cleans up.
        let _ = self
            .reaper_pipe
            .write_all(format!("{line}\n").as_bytes())
            .await;
    }

    /// Stops everything started, in order, and removes the directory.
    /// Errors are reported after every step was tried.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_keeping_logs(None).await
    }

    /// [`Cluster::stop`], first copying the logs (`replica-N.log`,
    /// `postgresql.log`) into `keep_logs` when given, once every process
    /// has stopped.
    pub async fn stop_keeping_logs(mut self, keep_logs: Option<&Path>) -> anyhow::Result<()> {
        let postgres_log = self.postgres.as_ref().map(LocalPostgres::log_file);
        let mut problems = Vec::new();
        for replica in &mut self.replicas {
            // One that already exited (killed by a fault) needs nothing.
            if matches!(replica.child.try_wait(), Ok(Some(_))) {
                continue;
            }
            if let Err(error) = send_signal(replica.pid, Signal::SIGTERM) {
                problems.push(format!("{}: {error:#}", replica.name));
            }
        }
        for replica in &mut self.replicas {
            match tokio::time::timeout(STOP_TIMEOUT, replica.child.wait()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => problems.push(format!("{}: {error}", replica.name)),
                Err(_) => {
                    problems.push(format!(
                        "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it",
                        replica.name
                    ));
                    let _ = replica.child.kill().await;
                }
            }
        }
        if let Some(postgres) = self.postgres.take() {
            let stopped = tokio::task::spawn_blocking(move || postgres.stop()).await;
            match stopped {
                Ok(Ok(())) => {}
                Ok(Err(error)) => problems.push(format!("stopping PostgreSQL: {}", Chain(&error))),
                Err(error) => problems.push(format!("stopping PostgreSQL: {error}")),
            }
        }
        if let Some(dir) = keep_logs
            && let Err(error) = self.copy_logs(dir, postgres_log)
        {
            problems.push(format!("keeping the logs in {}: {error:#}", dir.display()));
        }
        self.tell_reaper("done").await;
        let _ = self.reaper_pipe.shutdown().await;
        let _ = self.reaper.wait().await;
        if self.root.exists()
            && let Err(error) = fs::remove_dir_all(&self.root)
        {
            problems.push(format!("removing {}: {error}", self.root.display()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("stopping the bench: {}", problems.join("; "))
        }
    }
}

impl Cluster {
    fn copy_logs(&self, dir: &Path, postgres_log: Option<PathBuf>) -> anyhow::Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let replicas = self.replicas.iter().map(|replica| replica.log.clone());
        for log in replicas.chain(postgres_log) {
            if let Some(name) = log.file_name() {
                fs::copy(&log, dir.join(name))
                    .with_context(|| format!("copying {}", log.display()))?;
            }
        }
        Ok(())
    }
}

impl ReplicaProcess {
    /// How it was started.
    pub fn spec(&self) -> &ReplicaSpec {
        &self.spec
    }

    /// Polls `/readyz` until it answers 200.
    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let url = format!("{}/readyz", self.url);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited while starting ({status}); its log ends with:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            if let Ok(answer) = http.get(&url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {READY_TIMEOUT:?}; its log ends with:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A `chatd` command on `database_url` (when given) that logs warnings
/// only, with no `CHATD_*` or `OTEL_*` setting of this shell: the scenario
/// is the standard one.
pub fn chatd_command(chatd: &Path, database_url: Option<&str>) -> Command {
    let mut command = Command::new(chatd);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CHATD_") || name.starts_with("OTEL_") {
            command.env_remove(name.as_ref());
        }
    }
    if let Some(url) = database_url {
        command.env("CHATD_DATABASE_URL", url);
    }
    command
        .env("CHATD_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Sends `signal` to process `pid`; one that already exited is no problem.
pub fn send_signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).context("a process id out of range")?;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("sending {signal} to process {pid}")),
    }
}

/// The first of `count` consecutive ports on 127.0.0.1 nobody listens on,
/// below the kernel's ephemeral range: a replica started again on its port
/// (chaos) must not find it taken by one of the many outgoing connections
/// made meanwhile, which get their local ports from that range.
pub fn consecutive_free_ports(count: usize) -> anyhow::Result<u16> {
    let (ephemeral_low, _) = ephemeral_ports().unwrap_or((32768, 60999));
    let count = u16::try_from(count).context("too many ports")?;
    let top = ephemeral_low
        .checked_sub(count)
        .filter(|top| *top > LOWEST_PORT)
        .context("the ephemeral port range leaves no room below it")?;
    let mut rng = rand::rng();
    for _ in 0..100 {
        let first = rng.random_range(LOWEST_PORT..top);
        if (first..first + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(first);
        }
    }
    bail!("found no {count} consecutive free ports on 127.0.0.1 below {ephemeral_low}")
}

/// The lowest port handed to replicas (well above the well-known ones).
const LOWEST_PORT: u16 = 10_000;

/// The kernel's range of local ports for outgoing connections.
fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_whitespace().map(|n| n.parse().ok());
    Some((bounds.next()??, bounds.next()??))
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
