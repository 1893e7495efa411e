//! What the benchmarks share: `chatd serve` child processes, their memory
//! and CPU, and an admin token.
#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use chatd_shared::{
    ids::UserId,
    pg_server::free_port,
    status::UserRole,
    testing::{TestDb, eventually},
};

pub const WAIT: Duration = Duration::from_secs(120);

/// A `chatd serve` child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chatd serve` on `db` with the mock model (`mock_settings`) and
/// extra environment `env`; waits until it is ready.
pub async fn serve(db: &TestDb, mock_settings: &str, env: &[(&str, String)]) -> Server {
    let port = free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("serve")
        .env("CHATD_DATABASE_URL", db.url())
        .env("CHATD_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CHATD_PROVIDER_KIND", "mock")
        .env(
            "CHATD_PROVIDER_BASE_URL",
            format!("mock://?{mock_settings}"),
        )
        .env("CHATD_LOG", "warn")
        .env("CHATD_MAX_RUNNING_CHATS", "64")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .expect("chatd serve starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the replica to be ready", WAIT, || {
        let request = http.get(format!("{url}/readyz"));
        async move { (request.send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    Server { child, url }
}

/// (resident bytes, CPU seconds) of a process.
pub fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|f| f.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0);
    (rss_kb * 1024, ticks / 100.0)
}

/// An admin and their token.
pub async fn admin(db: &TestDb) -> (UserId, String) {
    chatd_shared::testing::user_with_token(db, "bench", UserRole::Admin).await
}
