//! MCP servers (ARCHITECTURE.md §17) against a real server nobody here wrote: the
//! reference "everything" server (npm `@modelcontextprotocol/server-everything`,
//! installed into `replica/tests/mcp` by `.ci/setup`), over streamable HTTP.
//! An admin registers it; chats that opt in see its tools as `server__tool`;
//! a failing or dead server gives error results and a metric, never a stuck
//! turn.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chatd_shared::{
    api::{CreateChat, CreateMcpServer, SendMessage, UpdateMcpServer},
    client::{Client, MessagesQuery},
    ids::ChatId,
    parts::Part,
    status::{ChatStatus, MessageRole},
    testing::{eventually, wait_for},
};
use common::{
    WAIT,
    app::{TestApp, say, tool_result_of as result_of},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The folder whose `node_modules` holds the server.
fn server_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/server-everything")
            .exists(),
        "the MCP test server is missing: run .ci/setup (npm ci in {})",
        dir.display()
    );
    dir
}

/// The everything server, listening on `port`; killed when dropped.
struct EverythingServer {
    child: Child,
    port: u16,
}

impl EverythingServer {
    /// Starts one on a free port.
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port).await
    }

    /// Starts one on `port` and waits until it listens.
    async fn start_on(port: u16) -> Self {
        let mut child = Command::new("node")
            .arg("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
            .arg("streamableHttp")
            .current_dir(server_dir())
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("running node (is Node.js installed?)");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        wait_for("the MCP server to listen", WAIT, async {
            while let Some(line) = lines.next_line().await.expect("the server's stderr") {
                if line.contains("listening on port") {
                    return;
                }
            }
            panic!("the MCP server exited before it listened");
        })
        .await;
        // Keep reading what it says, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// SIGKILL, and wait until it is gone.
    async fn kill(&mut self) {
        self.child.kill().await.expect("kill the MCP server");
    }
}

const SECRET: &str = "mcp-secret-never-shown";

/// Registers `server` as `everything` with three of its tools, `get-sum`
/// marked idempotent.
async fn register(admin: &Client, server: &EverythingServer) -> chatd_shared::api::McpServer {
    admin
        .create_mcp_server(&CreateMcpServer {
            name: "everything".into(),
            url: server.url(),
            bearer_token: Some(SECRET.into()),
            allowed_tools: Some(vec![
                "echo".into(),
                "get-sum".into(),
                "trigger-long-running-operation".into(),
            ]),
            idempotent_tools: Some(vec!["get-sum".into()]),
            enabled: None,
        })
        .await
        .expect("register the MCP server")
}

async fn create(client: &Client, script: Value) -> ChatId {
    client
        .create_chat(
            &CreateChat {
                text: Some(say(script)),
                mcp_servers: Some(vec!["everything".into()]),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("create chat")
        .body
        .id
}

async fn send(client: &Client, id: ChatId, script: Value) {
    client
        .send_message(
            id,
            &SendMessage {
                text: Some(say(script)),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("send");
}

/// Waits until the chat's turn `turn` (counted from 1) has ended.
async fn turn_done(client: &Client, id: ChatId, turn: usize) -> Vec<chatd_shared::api::Message> {
    eventually(
        &format!("turn {turn} of {id} to end"),
        WAIT,
        || async move {
            let chat = client.get_chat(id).await.expect("get chat");
            if chat.status != ChatStatus::Waiting {
                return None;
            }
            // One page holds every message of the turns these tests run.
            let page = MessagesQuery {
                limit: Some(200),
                ..Default::default()
            };
            let messages = client
                .list_messages(id, &page)
                .await
                .expect("messages")
                .messages;
            let users = messages
                .iter()
                .filter(|m| m.role == MessageRole::User)
                .count();
            let last = messages.last().map(|m| m.role);
            (users == turn && last == Some(MessageRole::Assistant)).then_some(messages)
        },
    )
    .await
}

fn call(id: &str, tool: &str, args: Value) -> Value {
    json!({"name": format!("everything__{tool}"), "id": id, "args": args})
}

/// The value of metric `name` with label `label` in a Prometheus text.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_servers_tools_are_listed_and_called_from_turns_on_every_replica() {
    let server = EverythingServer::start().await;
    let app = TestApp::start(2, |_| {}).await;
    let admin = app.admin(0);
    let registered = register(&admin, &server).await;
    // The secret is never shown back.
    assert!(registered.has_bearer_token);
    let listed = serde_json::to_string(&admin.list_mcp_servers().await.unwrap()).unwrap();
    assert!(!listed.contains(SECRET), "{listed}");

    // Its tools, as chats see them, asked of the server by the other replica.
    let tools = app
        .admin(1)
        .list_mcp_server_tools(registered.id)
        .await
        .expect("list the server's tools");
    let mut names: Vec<&str> = tools.tools.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "everything__echo",
            "everything__get-sum",
            "everything__trigger-long-running-operation"
        ]
    );
    assert_eq!(tools.error, None);
    let sum = tools.tools.iter().find(|t| t.tool == "get-sum").unwrap();
    assert!(sum.idempotent);
    assert!(sum.parameters["properties"]["a"].is_object(), "{sum:#?}");

    // A turn calls three tools in one step: two succeed, the server refuses
    // bad arguments, and one it has but the admin did not allow is refused.
    let (_, token) = app.user("mcp-user").await;
    let client = app.client(0, &token);
    let id = create(
        &client,
        json!({"steps": [
            {"tool_calls": [
                call("call_sum", "get-sum", json!({"a": 2, "b": 3})),
                call("call_echo", "echo", json!({"message": "hi there"})),
                call("call_bad", "get-sum", json!({"a": "two"})),
                call("call_env", "get-env", json!({}))
            ]},
            {"text": "Done."}
        ]}),
    )
    .await;
    let history = turn_done(&client, id, 1).await;
    let (sum, is_error) = result_of(&history, "call_sum");
    assert!(!is_error, "{sum}");
    assert!(sum.to_string().contains('5'), "{sum}");
    assert_eq!(
        result_of(&history, "call_echo"),
        (json!("Echo: hi there"), false)
    );
    let (bad, is_error) = result_of(&history, "call_bad");
    assert!(is_error, "the server's refusal is an error result: {bad}");
    let (env, is_error) = result_of(&history, "call_env");
    assert!(is_error, "{env}");
    assert!(
        env.to_string().contains("not among this chat's tools"),
        "{env}"
    );

    // Every replica runs the next turns: each has a session of its own.
    for turn in 2..=4 {
        let replica = turn % 2;
        send(
            &app.client(replica, &token),
            id,
            json!({"steps": [
                {"tool_calls": [call("call_again", "echo", json!({"message": format!("turn {turn}")}))]},
                {"text": "Again."}
            ]}),
        )
        .await;
        let history = turn_done(&client, id, turn).await;
        let last_echo = history
            .iter()
            .rev()
            .flat_map(|m| &m.content)
            .find_map(|p| match p {
                Part::ToolResult { result, .. } => Some(result.clone()),
                _ => None,
            });
        assert_eq!(last_echo, Some(json!(format!("Echo: turn {turn}"))));
    }

    // The admin takes `echo` away: every replica hears it (chatd_control)
    // and the next turn is not offered it.
    admin
        .update_mcp_server(
            registered.id,
            &UpdateMcpServer {
                allowed_tools: Some(Some(vec!["get-sum".into()])),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    send(
        &client,
        id,
        json!({"steps": [
            {"tool_calls": [call("call_gone", "echo", json!({"message": "x"}))]},
            {"text": "Gone."}
        ]}),
    )
    .await;
    let history = turn_done(&client, id, 5).await;
    let (gone, is_error) = result_of(&history, "call_gone");
    assert!(is_error, "{gone}");
    assert!(
        gone.to_string().contains("not among this chat's tools"),
        "{gone}"
    );
    let text = app.metrics(0).await + &app.metrics(1).await;
    assert!(
        metric(&text, "chatd_mcp_tool_calls", "outcome=\"ok\"") >= 5.0,
        "{text}"
    );
    assert!(metric(&text, "chatd_mcp_tool_calls", "outcome=\"tool_error\"") >= 1.0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_gives_an_error_result_and_a_metric_never_a_stuck_turn() {
    let mut server = EverythingServer::start().await;
    let app = TestApp::start(1, |config| {
        // A server that failed is tried again soon after.
        config.turn.mcp.retry_after = Duration::from_millis(100);
    })
    .await;
    let admin = app.admin(0);
    let registered = register(&admin, &server).await;
    let (_, token) = app.user("mcp-victim").await;
    let client = app.client(0, &token);
    let id = create(
        &client,
        json!({"steps": [
            {"tool_calls": [call("call_long", "trigger-long-running-operation",
                                 json!({"duration": 60, "steps": 60}))]},
            {"text": "After the call."}
        ]}),
    )
    .await;
    // The call is on record (its assistant message is stored before it
    // runs), and the chat runs it.
    eventually("the long call to start", WAIT, || async {
        let messages = client
            .list_messages(id, &MessagesQuery::default())
            .await
            .unwrap()
            .messages;
        let chat = client.get_chat(id).await.unwrap();
        let recorded = messages.iter().any(|m| m.role == MessageRole::Assistant);
        (recorded && chat.status == ChatStatus::Running).then_some(())
    })
    .await;
    server.kill().await;
    let history = turn_done(&client, id, 1).await;
    let (killed, is_error) = result_of(&history, "call_long");
    assert!(is_error, "{killed}");
    assert!(killed.to_string().contains("unavailable"), "{killed}");
    let text = app.metrics(0).await;
    assert!(
        metric(&text, "chatd_mcp_server_unavailable", "everything") >= 1.0,
        "{text}"
    );

    // While it is down, calls get error results and turns end.
    send(
        &client,
        id,
        json!({"steps": [
            {"tool_calls": [call("call_down", "echo", json!({"message": "anyone?"}))]},
            {"text": "Nobody."}
        ]}),
    )
    .await;
    let history = turn_done(&client, id, 2).await;
    assert!(result_of(&history, "call_down").1);
    // An admin asking for its tools is told why there are none.
    let listed = admin.list_mcp_server_tools(registered.id).await.unwrap();
    assert!(listed.tools.is_empty());
    assert!(
        listed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("unavailable")),
        "{listed:#?}"
    );

    // Back on the same address: the next turn connects again.
    let _server = EverythingServer::start_on(server.port).await;
    send(
        &client,
        id,
        json!({"steps": [
            {"tool_calls": [call("call_back", "echo", json!({"message": "back"}))]},
            {"text": "Back."}
        ]}),
    )
    .await;
    let history = turn_done(&client, id, 3).await;
    assert_eq!(
        result_of(&history, "call_back"),
        (json!("Echo: back"), false)
    );
    app.shutdown().await;
}

/// Percentile `p` (0–100) of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let index = ((values.len() as f64 - 1.0) * p / 100.0).round() as usize;
    values[index]
}

/// Not a check (nothing is asserted about time): what one MCP call adds to
/// a step, against a built-in tool, from the database's timestamps (the
/// assistant message recording the call → its result stored). Run with
/// `cargo test -p chatd-replica --test mcp -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn measure_the_cost_of_an_mcp_call_in_a_step() {
    // Four messages a turn: one page of history holds them all.
    const TURNS: usize = 45;
    let server = EverythingServer::start().await;
    let app = TestApp::start(1, |_| {}).await;
    register(&app.admin(0), &server).await;
    let (_, token) = app.user("mcp-bench").await;
    let client = app.client(0, &token);
    for (label, tool) in [
        ("built-in current_time", "current_time"),
        ("MCP everything__echo", "everything__echo"),
    ] {
        let script = json!({"steps": [
            {"tool_calls": [{"name": tool, "id": "call_t", "args": {"message": "x"}}]},
            {"text": "ok"}
        ]});
        let id = create(&client, script.clone()).await;
        turn_done(&client, id, 1).await;
        for turn in 2..=TURNS {
            send(&client, id, script.clone()).await;
            turn_done(&client, id, turn).await;
        }
        let history = client
            .list_messages(
                id,
                &MessagesQuery {
                    limit: Some(200),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .messages;
        let mut costs: Vec<f64> = history
            .windows(2)
            .filter(|pair| pair[1].role == MessageRole::Tool)
            .map(|pair| (pair[1].created_at - pair[0].created_at).as_seconds_f64() * 1000.0)
            .collect();
        costs.sort_by(f64::total_cmp);
        println!(
            "{label}: {} calls, call recorded → result stored: p50 {:.2} ms, p99 {:.2} ms",
            costs.len(),
            percentile(&costs, 50.0),
            percentile(&costs, 99.0)
        );
    }
    app.shutdown().await;
}
