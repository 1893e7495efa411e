//! `chatd dev`: the embedded default (ARCHITECTURE.md §10). One command gives a whole
//! cluster on this machine: a private PostgreSQL whose data lives under
//! `--dir` between runs, an LLM (the mock, or a real provider when a key is
//! in the environment), and `--replicas` replicas wired through the relay.
//! Ctrl-C (or SIGTERM) stops the replicas gracefully, then PostgreSQL.
//!
//! Nothing outlives it: a lock file keeps a second `chatd dev` off the same
//! directory, and a cleanup process stops PostgreSQL should this one die
//! without cleaning up (SIGKILL included).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::ChildStdin,
};

use anyhow::{Context, bail};
use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::{
    api::ApiConfig,
    bootstrap::ProviderBootstrap,
    runtime::RuntimeConfig,
    server::{RelayConfig, Replica, ReplicaConfig},
    turn::TurnConfig,
};
use chatd_shared::{
    db::{DbConfig, connect_pool},
    ids::ReplicaId,
    pg_server::{self, LocalPostgres, PgBinaries, ServerSettings, ServerUser},
    pubsub::PubSubConfig,
    status::ProviderKind,
};
use nix::fcntl::{Flock, FlockArg};

use crate::{
    cli::{DevArgs, ProviderArgs},
    serve,
};

/// The database `chatd dev` keeps its data in.
const DATABASE: &str = "chatd";

/// Runs the cluster until a signal asks it to stop.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("resolving --dir {}", args.dir.display()))?;
    let _lock = DevLock::acquire(&dir)?;
    let provider = choose_provider(args.provider)?;
    if args.fresh {
        let data = dir.join("pg");
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {} (--fresh)", data.display()))?;
        }
    }
    let postgres = {
        let dir = dir.clone();
        let replicas = usize::from(args.replicas);
        tokio::task::spawn_blocking(move || DevPostgres::start(&dir, replicas))
            .await
            .context("starting PostgreSQL")??
    };
    let database_url = postgres.server.url(DATABASE);
    postgres
        .server
        .ensure_database(DATABASE)
        .await
        .context("creating the chatd database")?;

    let (bootstrap, mock) = match provider {
        Some(bootstrap) => (bootstrap, None),
        None => {
            let mock = MockLlm::start(Behaviour {
                tokens: 40,
                token_delay: std::time::Duration::from_millis(25),
                ttft: std::time::Duration::from_millis(150),
                ..Behaviour::default()
            })
            .await
            .context("starting the mock LLM")?;
            let bootstrap = ProviderBootstrap {
                name: "mock-llm".into(),
                kind: ProviderKind::Openai,
                base_url: mock.openai_base_url(),
                api_key_env: None,
                model: "mock".into(),
                context_limit: 128_000,
                make_default: true,
            };
            (bootstrap, Some(mock))
        }
    };

    let secret = chatd_shared::auth_token::generate();
    let mut replicas = Vec::new();
    for index in 0..args.replicas {
        let port = match args.port {
            0 => 0,
            first => first.checked_add(index).context("--port is too high")?,
        };
        let config = replica_config(&database_url, port, &bootstrap, &secret);
        match Replica::start(config).await {
            Ok(replica) => replicas.push(replica),
            Err(err) => {
                stop_all(replicas).await;
                let hint = if args.port == 0 {
                    ""
                } else {
                    " (is another chatd using the port? pass --port 0 for any free ports)"
                };
                return Err(err).with_context(|| format!("starting replica {}{hint}", index + 1));
            }
        }
    }
    for (index, replica) in replicas.iter().enumerate() {
        if let Err(err) = wait_running(replica).await {
            stop_all(replicas).await;
            return Err(err).with_context(|| format!("replica {} did not start", index + 1));
        }
    }

    let token = {
        let mut database = DbConfig::new(database_url.clone());
        database.pool_size = 1;
        let pool = connect_pool(&database)?;
        let client = pool.get().await.context("connecting to the database")?;
        let (_, token) = crate::token::issue(&client, "dev", true, "chatd dev")
            .await
            .context("creating the dev user")?;
        token
    };
    print_banner(
        &dir,
        &postgres,
        &replicas,
        &bootstrap,
        mock.is_some(),
        &token,
    );

    serve::wait_for_signal().await?;
    eprintln!("chatd dev: stopping the replicas");
    stop_all(replicas).await;
    if let Some(mock) = mock {
        let _ = mock.shutdown().await;
    }
    eprintln!("chatd dev: stopping PostgreSQL");
    tokio::task::spawn_blocking(move || postgres.stop())
        .await
        .context("stopping PostgreSQL")??;
    eprintln!("chatd dev: stopped");
    Ok(())
}

/// The provider of this run: `CHATD_PROVIDER_*` if given, else OpenAI or
/// Anthropic when their key is in the environment; `None`: the mock LLM.
fn choose_provider(args: ProviderArgs) -> anyhow::Result<Option<ProviderBootstrap>> {
    if let Some(mut wanted) = serve::bootstrap(args.clone())? {
        wanted.make_default = true;
        return Ok(Some(wanted));
    }
    let from_env = |variable: &str| std::env::var_os(variable).is_some_and(|v| !v.is_empty());
    let (kind, key, model, context_limit) = if from_env("OPENAI_API_KEY") {
        (
            ProviderKind::Openai,
            "OPENAI_API_KEY",
            "gpt-4o-mini",
            128_000,
        )
    } else if from_env("ANTHROPIC_API_KEY") {
        (
            ProviderKind::Anthropic,
            "ANTHROPIC_API_KEY",
            "claude-sonnet-4-5",
            200_000,
        )
    } else {
        return Ok(None);
    };
    Ok(Some(ProviderBootstrap {
        name: kind.to_string(),
        kind,
        base_url: ProviderBootstrap::default_base_url(kind).to_owned(),
        api_key_env: Some(key.to_owned()),
        model: args.model.unwrap_or_else(|| model.to_owned()),
        context_limit,
        make_default: true,
    }))
}

/// Replica `port`'s settings: the relay on a free loopback port with the
/// run's secret; everything else as `chatd serve` defaults it.
fn replica_config(
    database_url: &str,
    port: u16,
    bootstrap: &ProviderBootstrap,
    secret: &str,
) -> ReplicaConfig {
    let mut database = DbConfig::new(database_url.to_owned());
    database.pool_size = 8;
    ReplicaConfig {
        database,
        http_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        migrate: true,
        bootstrap: Some(bootstrap.clone()),
        runtime: RuntimeConfig::new(ReplicaId::new_random()),
        turn: TurnConfig::default(),
        api: ApiConfig::default(),
        test_tools: false,
        pubsub: PubSubConfig::default(),
        relay: Some(RelayConfig::loopback(Some(secret.to_owned()))),
    }
}

/// Waits (up to a minute) until `replica` has migrated, bootstrapped and runs.
async fn wait_running(replica: &Replica) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !replica.is_running() {
        if tokio::time::Instant::now() >= deadline {
            bail!("it was not running after 60 s (see the log above)");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Stops every replica gracefully, all at once.
async fn stop_all(replicas: Vec<Replica>) {
    futures::future::join_all(replicas.into_iter().map(Replica::shutdown)).await;
}

fn print_banner(
    dir: &Path,
    postgres: &DevPostgres,
    replicas: &[Replica],
    bootstrap: &ProviderBootstrap,
    mock: bool,
    token: &str,
) {
    let first = replicas[0].url();
    let other = replicas.get(1).unwrap_or(&replicas[0]).url();
    let model = if mock {
        "mock (the built-in mock LLM; set OPENAI_API_KEY or ANTHROPIC_API_KEY for a real one)"
            .to_owned()
    } else {
        format!("{} from {}", bootstrap.model, bootstrap.name)
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\nchatd dev: {} replicas, data in {}\n\n",
        replicas.len(),
        dir.display()
    ));
    for (index, replica) in replicas.iter().enumerate() {
        out.push_str(&format!("  replica {}  {}\n", index + 1, replica.url()));
    }
    out.push_str(&format!(
        "  database   {}\n  model      {model}\n\n",
        postgres.server.url(DATABASE)
    ));
    // The token travels in the fragment, which browsers never send.
    let others: Vec<String> = replicas[1..].iter().map(Replica::url).collect();
    out.push_str(&format!(
        "  web page   {first}/#token={token}&replicas={}\n\n",
        others.join(",")
    ));
    out.push_str(&format!(
        "export CHATD_TOKEN={token}\n\n\
         # create a chat on replica 1 (its reply starts at once):\n\
         curl -s {first}/api/v1/chats -H \"Authorization: Bearer $CHATD_TOKEN\" -H 'Content-Type: application/json' -d '{{\"text\": \"Hello!\"}}'\n\n\
         # stream it from replica 2 (put the chat's id in):\n\
         curl -N {other}/api/v1/chats/CHAT_ID/stream -H \"Authorization: Bearer $CHATD_TOKEN\" -H 'Accept: text/event-stream'\n\n\
         Ctrl-C stops everything.\n"
    ));
    print!("{out}");
    let _ = std::io::stdout().flush();
}

/// The private PostgreSQL of `chatd dev`, under `DIR/pg`.
struct DevPostgres {
    server: LocalPostgres,
    /// Its EOF (our exit, however it happens) stops the server.
    _cleanup: ChildStdin,
}

impl DevPostgres {
    fn start(dir: &Path, replicas: usize) -> anyhow::Result<Self> {
        let binaries = PgBinaries::locate()?;
        let user = ServerUser::detect()?;
        let root = dir.join("pg");
        let cleanup = pg_server::stop_when_gone(&binaries, user, &root, false)?;
        reachable(user, &root)?;
        let settings = ServerSettings {
            port: pg_server::free_port()?,
            durability_off: false,
            // Each replica: its pool (8) and four sessions of its own.
            max_connections: (20 + 12 * replicas) as u32,
            password_roles: Vec::new(),
            extra: Vec::new(),
        };
        let server = LocalPostgres::init(binaries, user, &root, &settings)?;
        if server.is_running() {
            // A chatd dev that was killed before its cleanup ran.
            eprintln!("chatd dev: stopping the PostgreSQL an earlier run left behind");
            server.stop()?;
        }
        server.start()?;
        Ok(Self {
            server,
            _cleanup: cleanup,
        })
    }

    fn stop(self) -> anyhow::Result<()> {
        self.server.stop()?;
        Ok(())
    }
}

/// PostgreSQL runs as the `postgres` user when we are root; it must be able
/// to reach its directory.
fn reachable(user: ServerUser, root: &Path) -> anyhow::Result<()> {
    let status = user
        .command("test")
        .arg("-w")
        .arg(root)
        .status()
        .context("checking the data directory")?;
    if !status.success() {
        bail!(
            "PostgreSQL runs as the postgres user, which cannot reach {}: pick a --dir it can reach (every directory above it must be searchable by others, e.g. /tmp/chatd-dev)",
            root.display()
        );
    }
    Ok(())
}

/// Keeps a second `chatd dev` off a directory in use.
struct DevLock {
    _file: Flock<File>,
}

impl DevLock {
    fn acquire(dir: &Path) -> anyhow::Result<Self> {
        create_dir_searchable(dir)?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "another chatd dev is running on {} (pid {}): stop it first, or pass another --dir",
                    dir.display(),
                    holder.trim()
                );
            }
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("locking {}", path.display()));
            }
        };
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

/// Creates `dir` (and parents) readable and searchable by others: the
/// `postgres` user must get through it to the data directory.
fn create_dir_searchable(dir: &Path) -> anyhow::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current
        && !path.exists()
    {
        missing.push(path.to_owned());
        current = path.parent();
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for path in missing {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the permissions of {}", path.display()))?;
    }
    Ok(())
}
