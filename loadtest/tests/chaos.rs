//! `chatd-loadtest chaos`, short, as CI runs it: three `chatd serve`
//! processes, 100 chats for a minute, one fault of every kind. Every turn
//! completes, no invariant breaks, and each fault kind has a failover time.
//!
//! The replicas are the `chatd` binary of this build (`target/debug/chatd`,
//! which `cargo test --workspace` builds; or `CHATD_BIN`).

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

/// How long the whole command may take: a minute of load, the cluster's
/// start and stop, the drain of the last turns.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The chatd binary next to this build's chatd-loadtest.
fn chatd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHATD_BIN") {
        return path.into();
    }
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_chatd-loadtest"));
    let chatd = loadtest.with_file_name("chatd");
    assert!(
        chatd.is_file(),
        "no chatd binary at {}: build it first (cargo build -p chatd-replica; \
         cargo test --workspace builds it) or set CHATD_BIN",
        chatd.display()
    );
    chatd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_every_fault_fails_no_turn_and_breaks_no_invariant() {
    let out = std::env::temp_dir().join(format!("chatd-chaos-test-{}.json", std::process::id()));
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd-loadtest"))
        .args([
            "chaos",
            "--replicas",
            "3",
            "--chats",
            "100",
            "--duration",
            "60s",
            "--every",
            "8s",
            "--faults",
            "kill,rolling,pg-restart,relay-cut,partition",
            "--seed",
            "13",
            "--quiet",
        ])
        .arg("--chatd-bin")
        .arg(chatd_binary())
        .arg("--out")
        .arg(&out)
        .env_remove("CHATD_LOADTEST_TOKEN")
        .env_remove("CHATD_LOADTEST_PG_URL")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("chaos finishes")
        .expect("chaos runs");
    let printed = format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(&out).unwrap_or_else(|_| panic!("no summary:\n{printed}")),
    )
    .expect("the summary is JSON");
    let _ = std::fs::remove_file(&out);

    assert!(output.status.success(), "{printed}");
    assert_eq!(summary["turns"]["failed"], 0, "{printed}");
    assert!(
        summary["turns"]["completed"].as_u64().unwrap() > 1000,
        "{printed}"
    );
    assert_eq!(summary["violations"]["count"], 0, "{printed}");
    for kind in ["kill", "rolling", "pg-restart", "relay-cut", "partition"] {
        let figures = &summary["failover"][kind];
        assert!(
            figures["faults"].as_u64().unwrap_or(0) >= 1,
            "{kind}: {printed}"
        );
        let affected = figures["chats_affected"].as_u64().unwrap_or(0);
        assert!(affected > 0, "a {kind} disrupted some chat: {printed}");
        assert_eq!(
            figures["chats_recovered"].as_u64(),
            Some(affected),
            "{kind}: every chat it disrupted got its next part: {printed}"
        );
    }
}
