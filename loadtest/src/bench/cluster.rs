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
    pg_server::{LocalPostgres, PgBinaries, ServerSettings, ServerUser, free_port},
};
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
    ) -> anyhow::Result<(String, String)> {
        let binaries = PgBinaries::locate()?;
        let user = ServerUser::detect()?;
        let root = self.root.clone();
        let max_connections = 50 + 40 * replicas as u32;
        let server = tokio::task::spawn_blocking(move || {
            let mut last_error = None;
            // The free port can be taken between the probe and the bind: retry.
            for _ in 0..3 {
                let settings = ServerSettings {
                    port: free_port()?,
                    durability_off: !durable,
                    max_connections,
                    password_roles: Vec::new(),
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
        let logs = self.root.join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        // API ports, then relay ports.
        let ports = consecutive_free_ports(2 * count)?;
        for index in 0..count {
            let api_port = ports + index as u16;
            let relay_port = ports + (count + index) as u16;
            let log = logs.join(format!("replica-{}.log", index + 1));
            let output =
                fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let mut command = chatd_command(chatd, Some(database_url));
            command
                .args(["serve", "--no-migrate"])
                .env("CHATD_HTTP_ADDR", format!("127.0.0.1:{api_port}"))
                .env("CHATD_PROVIDER_KIND", "mock")
                .env("CHATD_PROVIDER_BASE_URL", "mock://?tokens=20")
                .env(
                    "CHATD_MAX_RUNNING_CHATS",
                    settings.max_running_chats.to_string(),
                )
                .env("CHATD_RELAY_ADDR", format!("127.0.0.1:{relay_port}"))
                .env("CHATD_RELAY_SECRET", &settings.relay_secret);
            let child = command
                .stdout(output.try_clone().context("sharing the replica's log")?)
                .stderr(output)
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {}", chatd.display()))?;
            let pid = child.id().context("the replica exited at once")?;
            self.tell_reaper(&pid.to_string()).await;
            self.replicas.push(ReplicaProcess {
                name: format!("replica {}", index + 1),
                url: format!("http://127.0.0.1:{api_port}"),
                child,
                pid,
                log,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building an HTTP client")?;
        for replica in &mut self.replicas {
            replica.wait_ready(&http).await?;
        }
        Ok(())
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
        if let Some(pid) = self.postmaster_pid() {
            probes.push(CpuProbe {
                name: "postgresql".to_owned(),
                source: CpuSource::Tree(pid),
            });
        }
        probes
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
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for replica in &self.replicas {
            if let Err(error) = terminate(replica.pid).await {
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

impl ReplicaProcess {
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

/// Sends SIGTERM (std can only send SIGKILL, and no signal crate is a
/// dependency of the harness).
async fn terminate(pid: u32) -> anyhow::Result<()> {
    // Its status is not checked: a replica that already exited is no problem.
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running kill")?;
    Ok(())
}

/// The first of `count` consecutive ports nobody listens on.
fn consecutive_free_ports(count: usize) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let first = free_port()?;
        let Some(last) = first.checked_add(count as u16 - 1) else {
            continue;
        };
        if (first..=last).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(first);
        }
    }
    bail!("found no {count} consecutive free ports on 127.0.0.1")
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
