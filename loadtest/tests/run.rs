//! `chatd-loadtest run` against replicas in the test process, driven as an
//! operator would: the binary, its exit status, its output and its summary.

mod common;

use std::time::Duration;

use chatd_loadtest::{RunConfig, config::StreamTransport, stats::Stage};
use chatd_shared::pg_server::free_port;
use common::{Cluster, OutFile, loadtest, printed};
use serde_json::Value;

/// Percentiles of a figure are present and ordered.
fn assert_ordered(figure: &Value, name: &str) {
    let value = |key: &str| {
        figure[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}.{key} is a number: {figure}"))
    };
    let (p50, p90, p99, max) = (value("p50"), value("p90"), value("p99"), value("max"));
    assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{name}: {figure}");
    assert!(max < 60_000_000, "{name} under the timeout: {figure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_completes_across_two_replicas_and_the_summary_says_so() {
    let cluster = Cluster::start(2, |_| {}).await;
    let targets = cluster.urls().join(",");
    let out = OutFile::new();
    let output = loadtest(&[
        "run",
        "--target",
        &targets,
        "--token",
        &cluster.token,
        "--chats",
        "50",
        "--turns",
        "3",
        "--pg-url",
        cluster.db.url(),
        "--out",
        out.path(),
    ])
    .await;
    assert!(output.status.success(), "{}", printed(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("turns: 150 of 150 completed"), "{stdout}");
    assert!(stdout.contains("failures: none"), "{stdout}");

    let summary = out.json();
    assert_eq!(summary["version"], 1);
    let parameters = &summary["parameters"];
    assert_eq!(parameters["chats"], 50);
    assert_eq!(parameters["turns"], 3);
    assert_eq!(parameters["barrier"], true);
    assert_eq!(parameters["transport"], "ws");
    assert_eq!(parameters["staleness_chats"], 5);
    assert_eq!(parameters["targets"].as_array().unwrap().len(), 2);
    let turns = &summary["turns"];
    assert_eq!(turns["planned"], 150);
    assert_eq!(turns["completed"], 150);
    assert_eq!(turns["failed"], 0);
    assert_eq!(turns["not_run"], 0);
    assert!(turns["per_second"].as_f64().unwrap() > 0.0, "{turns}");
    assert!(turns["phase_seconds"].as_f64().unwrap() > 0.0, "{turns}");

    let latency = &summary["latency_us"];
    assert_eq!(latency["create"]["count"], 50);
    assert_eq!(latency["turn"]["count"], 150);
    // A stream that had to resync from the database sees `waiting` without
    // the `running` before it, so this may fall short of every turn.
    let running = latency["time_to_running"]["count"].as_u64().unwrap();
    assert!(running > 0 && running <= 150, "{latency}");
    for name in ["create", "time_to_running", "turn"] {
        assert_ordered(&latency[name], name);
    }
    // Parts reach a chat's stream when the chat ran on that replica (or,
    // once there is a relay, on any): some turns at least.
    let first_part = latency["time_to_first_part"]["count"].as_u64().unwrap();
    assert!(first_part > 0 && first_part <= 150, "{latency}");
    assert_ordered(&latency["time_to_first_part"], "time_to_first_part");
    assert!(latency["relay_staleness"]["count"].as_u64().unwrap() > 0);
    assert_ordered(&latency["relay_staleness"], "relay_staleness");
    // The turn includes getting to running.
    assert!(latency["turn"]["p50"].as_u64() >= latency["time_to_running"]["p50"].as_u64());

    assert_eq!(summary["failures"], serde_json::json!({}));
    assert_eq!(summary["cpu"][0]["name"], "chatd-loadtest");
    assert!(summary["cpu"][0]["seconds"].as_f64().unwrap() > 0.0);
    assert!(summary["harness_peak_rss_bytes"].as_u64().unwrap() > 0);

    let database = &summary["database"];
    assert_eq!(database["database"], cluster.db.name());
    assert_eq!(database["window"], "turn phase");
    let statements = &database["statements"];
    let per_turn = statements["per_turn"].as_f64().unwrap();
    assert!(per_turn > 1.0 && per_turn < 100.0, "{statements}");
    assert!(
        statements["notify_per_turn"].as_f64().unwrap() > 0.0,
        "{statements}"
    );
    assert!(!statements["top_by_calls"].as_array().unwrap().is_empty());
    let own = statements["top_by_calls"]
        .as_array()
        .unwrap()
        .iter()
        .chain(statements["top_by_time"].as_array().unwrap())
        .filter(|s| s["query"].as_str().unwrap().contains("pg_stat"))
        .count();
    assert_eq!(
        own, 0,
        "the harness's own queries are left out: {statements}"
    );
    assert!(database["transactions_per_turn"].as_f64().unwrap() > 0.0);
    assert_eq!(cluster.chat_count().await, 50);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_turns_fail_the_run_and_name_the_turn_stage() {
    let cluster = Cluster::start(2, |config| {
        // Give up on the failing model after two quick attempts.
        config.turn.retry.max_attempts = 2;
        config.turn.retry.base = Duration::from_millis(10);
    })
    .await;
    let targets = cluster.urls().join(",");
    let out = OutFile::new();
    let output = loadtest(&[
        "run",
        "--target",
        &targets,
        "--token",
        &cluster.token,
        "--chats",
        "10",
        "--turns",
        "2",
        "--message",
        r#"@mock {"error": {"status": 500}}"#,
        "--out",
        out.path(),
        "--quiet",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("20 of 20 turns did not complete (10 failed, 10 not run)"),
        "{stderr}"
    );
    assert!(stderr.contains("turn: 10 failed"), "{stderr}");
    assert!(
        stderr.contains("500"),
        "the first messages say why: {stderr}"
    );

    let summary = out.json();
    assert_eq!(summary["turns"]["completed"], 0);
    assert_eq!(summary["turns"]["failed"], 10);
    assert_eq!(summary["turns"]["not_run"], 10);
    let turn = &summary["failures"]["turn"];
    assert_eq!(turn["count"], 10);
    assert_eq!(turn["examples"].as_array().unwrap().len(), 5);
    assert_eq!(summary["failures"].as_object().unwrap().len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_in_one_line_before_any_load() {
    let cluster = Cluster::start(1, |_| {}).await;
    let output = loadtest(&[
        "run",
        "--target",
        &cluster.urls()[0],
        "--token",
        "chatd_notarealtoken000000000000000000",
        "--quiet",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "chatd-loadtest: {}: the token was refused",
            cluster.urls()[0]
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", printed(&output));
    assert_eq!(cluster.chat_count().await, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_named_in_one_line_before_any_load() {
    let cluster = Cluster::start(1, |_| {}).await;
    let nobody = format!("http://127.0.0.1:{}", free_port().unwrap());
    let targets = format!("{},{nobody}", cluster.urls()[0]);
    let output = loadtest(&[
        "run",
        "--target",
        &targets,
        "--token",
        &cluster.token,
        "--quiet",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("chatd-loadtest: {nobody}: unreachable")),
        "{stderr}"
    );
    assert_eq!(cluster.chat_count().await, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_without_the_barrier_complete_every_turn() {
    let cluster = Cluster::start(2, |_| {}).await;
    let mut config = RunConfig::new(cluster.urls(), cluster.token.clone(), 12, 2);
    config.transport = StreamTransport::Sse;
    config.barrier = false;
    config.ramp = Duration::from_millis(200);
    config.concurrency = 4;
    config.staleness_sample = 0.5;
    config.progress = false;
    let summary = chatd_loadtest::run(config).await.expect("the run starts");
    assert!(summary.succeeded(), "{summary:#?}");
    assert_eq!(summary.turns.completed, 24);
    assert_eq!(summary.latency_us.turn.count, 24);
    assert_eq!(summary.parameters.staleness_chats, 6);
    assert!(summary.latency_us.relay_staleness.count > 0);
    assert_eq!(summary.database, None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_pg_stat_statements_is_reported_and_the_run_goes_on() {
    let cluster = Cluster::start(1, |_| {}).await;
    let client = cluster.db.pool().get().await.unwrap();
    client
        .batch_execute("DROP EXTENSION pg_stat_statements")
        .await
        .unwrap();
    let mut config = RunConfig::new(cluster.urls(), cluster.token.clone(), 5, 1);
    config.pg_url = Some(cluster.db.url().to_owned());
    config.progress = false;
    let summary = chatd_loadtest::run(config).await.expect("the run starts");
    assert!(summary.succeeded(), "{summary:#?}");
    let database = summary.database.expect("the database was read");
    assert_eq!(database.statements, None);
    let reason = database.statements_unavailable.unwrap();
    assert!(
        reason.contains("CREATE EXTENSION pg_stat_statements"),
        "{reason}"
    );
    assert!(database.transactions > 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_outlives_the_timeout_is_a_timeout_failure() {
    let cluster = Cluster::start(1, |_| {}).await;
    let mut config = RunConfig::new(cluster.urls(), cluster.token.clone(), 2, 1);
    config.message = r#"@mock {"ttft_ms": 5000}"#.into();
    config.timeout = Duration::from_millis(500);
    config.progress = false;
    let summary = chatd_loadtest::run(config).await.expect("the run starts");
    assert!(!summary.succeeded());
    let timeouts = &summary.failures[&Stage::Timeout];
    assert_eq!(timeouts.count, 2);
    assert!(
        timeouts.examples[0].contains("no `waiting` within 500ms"),
        "{timeouts:?}"
    );
    cluster.shutdown().await;
}
