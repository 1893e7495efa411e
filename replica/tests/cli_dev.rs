//! `chatd dev` as a newcomer runs it: the real binary starts its own
//! PostgreSQL and replicas, prints a token and URLs that work, streams a
//! reply across replicas, refuses a second instance on the same directory,
//! keeps its data between runs (unless `--fresh`), and leaves nothing
//! running after Ctrl-C.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use chatd_shared::{
    client::{Client, Transport},
    parts::Part,
    status::MessageRole,
    stream::StreamEvent,
    testing::wait_for,
};
use common::app::{idle_at, idle_chat, open_stream, read_until, say, send_text};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

/// Starting includes `initdb` on a fresh directory and every migration.
const START: Duration = Duration::from_secs(120);

/// A directory of this test's own, removed when it ends. The `postgres`
/// user must reach it, so it is searchable by others.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("chatd-dev-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `chatd dev` printed: the replicas' URLs and the token.
struct Banner {
    replicas: Vec<String>,
    token: String,
    database: String,
}

/// A running `chatd dev`; killed (and so cleaned up by its own cleanup
/// process) should the test fail before it stops it.
struct Dev {
    child: Child,
    banner: Banner,
    /// Everything it wrote to stderr, shown when something goes wrong.
    stderr: Arc<Mutex<String>>,
}

/// `chatd dev` with `args`, the mock LLM (no provider keys) and quiet logs.
fn chatd_dev(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
    command
        .arg("dev")
        .arg("--dir")
        .arg(dir)
        .arg("--port")
        .arg("0")
        .args(args)
        .env("CHATD_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for variable in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "CHATD_DEV_DIR",
        "CHATD_DEV_PORT",
    ] {
        command.env_remove(variable);
    }
    for (variable, _) in std::env::vars_os() {
        if variable.to_string_lossy().starts_with("CHATD_PROVIDER_") {
            command.env_remove(variable);
        }
    }
    command
}

impl Dev {
    async fn start(dir: &Path, args: &[&str]) -> Self {
        let mut child = chatd_dev(dir, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning chatd dev");
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(collect(child.stderr.take().unwrap(), stderr.clone()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let done = line.contains("Ctrl-C stops everything");
                printed.push(line);
                if done {
                    return;
                }
            }
            panic!(
                "chatd dev exited before it was ready; stdout: {printed:#?}\nstderr: {}",
                stderr.lock().unwrap()
            );
        };
        wait_for("chatd dev to print its banner", START, read).await;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let banner = parse_banner(&printed);
        Self {
            child,
            banner,
            stderr,
        }
    }

    fn client(&self, index: usize) -> Client {
        Client::new(&self.banner.replicas[index], &self.banner.token).unwrap()
    }

    /// Ctrl-C, then waits for a clean exit.
    async fn interrupt(mut self) {
        let pid = Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
        let status = wait_for("chatd dev to stop after SIGINT", START, self.child.wait())
            .await
            .unwrap();
        assert!(
            status.success(),
            "chatd dev exited with {status} after SIGINT; stderr: {}",
            self.stderr.lock().unwrap()
        );
    }
}

async fn collect(from: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut text = into.lock().unwrap();
        text.push_str(&line);
        text.push('\n');
    }
}

/// The `  replica N  URL` lines and the `export CHATD_TOKEN=…` line.
fn parse_banner(printed: &[String]) -> Banner {
    let replicas: Vec<String> = printed
        .iter()
        .filter_map(|line| line.strip_prefix("  replica "))
        .map(|rest| rest.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    let token = printed
        .iter()
        .find_map(|line| line.strip_prefix("export CHATD_TOKEN="))
        .unwrap_or_else(|| panic!("no token in {printed:#?}"))
        .to_owned();
    let database = printed
        .iter()
        .find_map(|line| line.strip_prefix("  database   "))
        .unwrap_or_else(|| panic!("no database in {printed:#?}"))
        .to_owned();
    assert!(
        printed.iter().any(|line| line.contains("curl -N")),
        "no stream example in {printed:#?}"
    );
    Banner {
        replicas,
        token,
        database,
    }
}

/// Processes whose command line names `dir` (PostgreSQL, its cleanup shell,
/// `chatd dev` itself).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Waits until no process names `dir`: PostgreSQL's cleanup shell may
/// take a moment to notice that `chatd dev` is gone.
async fn nothing_left_running(dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_using(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left running: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the assistant messages among `events`, and of their parts.
fn assistant_text(events: &[StreamEvent]) -> (String, String) {
    let mut message = String::new();
    let mut parts = String::new();
    for event in events {
        match event {
            StreamEvent::Message { message: m, .. } if m.role == MessageRole::Assistant => {
                for part in &m.content {
                    if let Part::Text { text } = part {
                        message.push_str(text);
                    }
                }
            }
            StreamEvent::Part {
                part: Part::TextDelta { text },
                ..
            } => parts.push_str(text),
            _ => {}
        }
    }
    (message, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatd_dev_runs_a_cluster_streams_across_replicas_and_leaves_nothing_behind() {
    let scratch = Scratch::new();
    let dir = scratch.0.join("dev");
    let dev = Dev::start(&dir, &["--replicas", "2"]).await;
    assert_eq!(dev.banner.replicas.len(), 2, "two replicas printed");

    // Created on replica 1, streamed from replica 2: every token arrives,
    // then the reply.
    let on_first = dev.client(0);
    let on_second = dev.client(1);
    let id = idle_chat(&on_first).await;
    let mut stream = open_stream(&on_second, id, Transport::WebSocket).await;
    send_text(
        &on_first,
        id,
        say(json!({"tokens": 30, "token_delay_ms": 10})),
    )
    .await;
    let events = read_until(&mut stream, |e| idle_at(e, 1)).await;
    let (reply, streamed) = assistant_text(&events);
    assert!(!reply.is_empty(), "no assistant message in {events:#?}");
    assert_eq!(streamed, reply, "the parts spell the reply");
    drop(stream);

    // The database it prints is there to be read, statistics included.
    let (db, connection) = tokio_postgres::connect(&dev.banner.database, tokio_postgres::NoTls)
        .await
        .expect("connecting to the printed database");
    tokio::spawn(connection);
    let calls: i64 = db
        .query_one("SELECT count(*) FROM pg_stat_statements", &[])
        .await
        .expect("pg_stat_statements is readable")
        .get(0);
    assert!(calls > 0);
    drop(db);

    // A second chatd dev on the same directory says so and stops.
    let second = wait_for(
        "a second chatd dev to give up",
        common::WAIT,
        chatd_dev(&dir, &["--replicas", "1"]).output(),
    )
    .await
    .expect("running a second chatd dev");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second chatd dev ran: {said}");
    assert!(said.contains("another chatd dev is running"), "{said}");

    let urls = dev.banner.replicas.clone();
    dev.interrupt().await;
    nothing_left_running(&dir).await;
    for url in urls {
        assert!(
            reqwest::get(format!("{url}/healthz")).await.is_err(),
            "{url} still answers"
        );
    }

    // The data is still there for the next run; --fresh starts over.
    let again = Dev::start(&dir, &["--replicas", "1"]).await;
    let chats = again
        .client(0)
        .list_chats(&Default::default())
        .await
        .unwrap();
    assert!(
        chats.chats.iter().any(|chat| chat.id == id),
        "the chat survives a restart"
    );
    again.interrupt().await;
    let fresh = Dev::start(&dir, &["--replicas", "1", "--fresh"]).await;
    let chats = fresh
        .client(0)
        .list_chats(&Default::default())
        .await
        .unwrap();
    assert!(chats.chats.is_empty(), "--fresh starts with no chats");
    fresh.interrupt().await;
    nothing_left_running(&dir).await;
}
