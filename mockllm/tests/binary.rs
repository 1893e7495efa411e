//! The `chatd-mockllm` binary: flags, the listening line, signals.

#![cfg(unix)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_chatd-mockllm");

/// Runs the binary with `args` and returns its exit code and stderr.
async fn run_failing(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env_clear()
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_flag_values_are_one_line_errors() {
    for (args, mentions) in [
        (
            &["--addr", "127.0.0.1:0", "--tokens", "many"][..],
            "--tokens",
        ),
        (
            &["--addr", "127.0.0.1:0", "--cut-rate", "2"][..],
            "--cut-rate",
        ),
        (&["--addr", "nowhere"][..], "--addr"),
        (&[][..], "--addr"),
    ] {
        let (code, stderr) = run_failing(args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn rates_that_add_up_past_one_are_rejected_in_one_line() {
    let (code, stderr) = run_failing(&[
        "--addr",
        "127.0.0.1:0",
        "--error-rate-429",
        "0.6",
        "--error-rate-500",
        "0.6",
    ])
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn prints_its_urls_serves_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(BINARY)
        .args(["--addr", "127.0.0.1:0", "--tokens", "3"])
        .env_clear()
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("stdout is readable")
        .expect("a listening line");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("a URL in the listening line")
        .to_owned();
    assert!(line.contains(&format!("{url}/v1")), "{line}");

    let response = reqwest::get(format!("{url}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    // A deadline, not a synchronisation: the exit is awaited.
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
}
