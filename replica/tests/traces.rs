//! Traces over OTLP (ARCHITECTURE.md §11), end to end: two `chatd serve` processes
//! export to a test receiver as the standard `OTEL_*` variables say, one
//! over HTTP/protobuf and one over gRPC. A turn requested on replica A (with
//! a `traceparent`) runs on replica B; its spans arrive with their names
//! and attributes, and B's run span links to A's request span through the
//! database (never through a notification).

mod common;

use std::{collections::BTreeSet, process::Stdio};

use chatd_shared::{
    api::CreateChat,
    client::{Client, Transport},
    ids::ReplicaId,
    pg_server::free_port,
    status::UserRole,
    testing::{TestDb, eventually, user_with_token},
};
use common::{
    WAIT,
    app::{idle_at, open_stream, read_until, say},
    otlp::{Received, Receiver},
};
use serde_json::json;

/// A `chatd serve` child process; killed if the test fails first.
struct Process {
    child: tokio::process::Child,
    url: String,
    id: ReplicaId,
    /// Its log lines (JSON), written by the process.
    log: std::path::PathBuf,
}

impl Process {
    /// Starts a replica on `db` exporting traces as `otel` says; waits until
    /// it is ready.
    async fn start(db: &TestDb, max_running: usize, otel: &[(&str, String)]) -> Self {
        let id = ReplicaId::new_random();
        let log = std::env::temp_dir().join(format!("chatd-traces-{id}.log"));
        let stderr = std::fs::File::create(&log).expect("a log file");
        let (http, relay) = (free_port().expect("a port"), free_port().expect("a port"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("serve")
            .env_clear()
            .env("CHATD_DATABASE_URL", db.url())
            .env("CHATD_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("CHATD_RELAY_ADDR", format!("127.0.0.1:{relay}"))
            .env("CHATD_RELAY_SECRET", "traces-test-relay-secret")
            .env("CHATD_REPLICA_ID", id.to_string())
            .env("CHATD_MAX_RUNNING_CHATS", max_running.to_string())
            .env("CHATD_PROVIDER_KIND", "mock")
            .env("CHATD_PROVIDER_BASE_URL", "mock://?tokens=5")
            // Lines from the runtime only: the replica's span is below the
            // level, and its id must be on every line all the same.
            .env("CHATD_LOG", "warn,chatd_replica::runtime=info")
            .env("CHATD_LOG_FORMAT", "json")
            // Export within a tenth of a second rather than the default 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .envs(otel.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("chatd serve starts");
        let url = format!("http://127.0.0.1:{http}");
        let http_client = reqwest::Client::new();
        eventually("the replica to be ready", WAIT, || {
            let request = http_client.get(format!("{url}/readyz"));
            async move { (request.send().await.ok()?.status() == 200).then_some(()) }
        })
        .await;
        Self {
            child,
            url,
            id,
            log,
        }
    }

    /// SIGTERM, then waits for a clean exit (spans are flushed at exit).
    async fn stop(mut self) {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the replica stops")
            .expect("its status");
        assert!(status.success(), "the replica exited with {status}");
        let log = std::fs::read_to_string(&self.log).expect("the log");
        let _ = std::fs::remove_file(&self.log);
        every_line_names_the_replica(&log, self.id);
    }
}

/// Every log line of chatd's own code carries `replica_id` (in a span of
/// the line), but the one that says how traces are exported, written before
/// the replica exists.
fn every_line_names_the_replica(log: &str, id: ReplicaId) {
    let mut lines = 0;
    for line in log.lines() {
        let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let target = line["target"].as_str().unwrap_or_default();
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        if !target.starts_with("chatd") || message == "exporting traces over OTLP" {
            continue;
        }
        lines += 1;
        let named = line["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|span| span["replica_id"] == id.to_string().as_str());
        assert!(named, "a log line without replica_id: {line}");
    }
    assert!(lines > 0, "no log lines to look at:\n{log}");
}

/// The one span named `name` that `matches`, waiting for it to arrive;
/// on a timeout, says what did arrive.
async fn span(receiver: &Receiver, name: &str, matches: impl Fn(&Received) -> bool) -> Received {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let arrival = receiver.arrival();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            if let Some(span) = receiver
                .spans()
                .into_iter()
                .find(|span| span.name() == name && matches(span))
            {
                return span;
            }
            arrival.await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        let received: Vec<(String, &str)> = receiver
            .spans()
            .iter()
            .map(|span| (span.name().to_owned(), span.transport))
            .collect();
        panic!("no {name} span within {WAIT:?}; received {received:?}")
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_requested_on_one_replica_and_run_on_another_is_one_linked_trace() {
    let receiver = Receiver::start().await;
    let db = TestDb::new().await;
    let (_, token) = user_with_token(&db, "admin", UserRole::Admin).await;
    // A serves the API and runs nothing; B runs every chat.
    let a = Process::start(
        &db,
        0,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", receiver.http),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_SERVICE_NAME", "chatd-a".into()),
        ],
    )
    .await;
    let b = Process::start(
        &db,
        8,
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("http://{}", receiver.grpc),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ],
    )
    .await;
    let client = Client::new(&a.url, &token).expect("a client");
    let chat = client
        .create_chat(&CreateChat::default(), None)
        .await
        .expect("create")
        .body;
    // Watched on A, so A follows B's run over the relay.
    let mut stream = open_stream(&client, chat.id, Transport::WebSocket).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let sent = reqwest::Client::new()
        .post(format!("{}/api/v1/chats/{}/messages", a.url, chat.id))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"text": say(json!({"steps": [
            {"tool_calls": [{"name": "current_time"}]},
            {"text": "the time, told"}
        ]}))}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        sent.status(),
        201,
        "{}",
        sent.text().await.unwrap_or_default()
    );
    read_until(&mut stream, |event| idle_at(event, 1)).await;
    drop(stream);

    // Named as OpenTelemetry's HTTP conventions say: method and route.
    let request = span(&receiver, "POST /api/v1/chats/{id}/messages", |span| {
        span.attribute("http.route").as_deref() == Some("/api/v1/chats/{id}/messages")
    })
    .await;
    assert_eq!(hex(&request.span.trace_id), trace_id, "the caller's trace");
    assert_eq!(hex(&request.span.parent_span_id), caller_span);
    assert_eq!(
        request.attribute("http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(request.attribute("replica_id"), Some(a.id.to_string()));
    assert_eq!(
        (request.transport, request.service.as_deref()),
        ("http/protobuf", Some("chatd-a"))
    );

    let run = span(&receiver, "run", |span| {
        span.attribute("chat_id") == Some(chat.id.to_string())
    })
    .await;
    assert_eq!(run.attribute("replica_id"), Some(b.id.to_string()));
    assert_eq!(run.attribute("generation").as_deref(), Some("1"));
    assert_eq!(
        (run.transport, run.service.as_deref()),
        ("grpc", Some("chatd"))
    );
    assert!(run.span.parent_span_id.is_empty(), "a run is a root span");
    let linked: Vec<(String, String)> = run
        .span
        .links
        .iter()
        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
        .collect();
    assert_eq!(
        linked,
        [(trace_id.to_owned(), hex(&request.span.span_id))],
        "the run links to the request that made the chat pending, on the other replica"
    );

    let steps: Vec<Received> = eventually("both steps' spans", WAIT, || {
        let steps: Vec<Received> = receiver
            .spans()
            .into_iter()
            .filter(|span| span.name() == "step" && span.span.parent_span_id == run.span.span_id)
            .collect();
        async move { (steps.len() == 2).then_some(steps) }
    })
    .await;
    for step in &steps {
        assert_eq!(step.attribute("model").as_deref(), Some("mock"), "{step:?}");
        assert_eq!(step.attribute("outcome").as_deref(), Some("finished"));
    }
    let first = steps
        .iter()
        .find(|step| step.attribute("step").as_deref() == Some("0"))
        .expect("step 0");
    assert_eq!(first.attribute("tool_calls").as_deref(), Some("1"));

    let call = span(&receiver, "provider_call", |span| {
        span.span.parent_span_id == first.span.span_id
    })
    .await;
    assert_eq!(call.attribute("provider").as_deref(), Some("mock"));
    assert_eq!(call.attribute("model").as_deref(), Some("mock"));
    assert_eq!(call.attribute("outcome").as_deref(), Some("ok"));
    assert_eq!(call.attribute("attempt").as_deref(), Some("1"));
    for tokens in ["input_tokens", "output_tokens"] {
        let count: i64 = call
            .attribute(tokens)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{tokens} on {call:?}"));
        assert!(count > 0, "{tokens} = {count}");
    }
    let tool = span(&receiver, "tool_call", |span| {
        span.span.parent_span_id == first.span.span_id
    })
    .await;
    assert_eq!(tool.attribute("tool").as_deref(), Some("current_time"));
    assert_eq!(tool.attribute("outcome").as_deref(), Some("ok"));

    // A's relay connection to B ends when A stops; its span is flushed at exit.
    a.stop().await;
    let session = span(&receiver, "relay_peer_session", |span| {
        span.attribute("peer") == Some(b.id.to_string())
    })
    .await;
    assert_eq!(session.transport, "http/protobuf", "A's span");
    b.stop().await;

    // chatd's spans only: not the libraries' (the exporter's own HTTP/2
    // client would trace its exports, without end), not the replica's.
    let names: BTreeSet<String> = receiver
        .spans()
        .iter()
        .map(|span| span.name().to_owned())
        .collect();
    let ours = [
        "run",
        "step",
        "provider_call",
        "tool_call",
        "relay_peer_session",
    ];
    assert!(
        names.iter().all(|name| ours.contains(&name.as_str())
            || ["GET /", "POST /", "PATCH /", "DELETE /"]
                .iter()
                .any(|method| name.starts_with(method))),
        "spans that are not chatd's: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_otlp_protocol_stops_the_start_naming_its_variable() {
    let db = TestDb::new().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("serve")
        .env_clear()
        .env("CHATD_DATABASE_URL", db.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .output()
        .await
        .expect("chatd runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"),
        "the error names the variable: {stderr}"
    );
}
