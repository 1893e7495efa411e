//! A chatd cluster inside the test process (whole replicas against one
//! test database, the in-process mock model), and the harness binary run
//! against it as an operator would.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Output,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use chatd_replica::{
    api::ApiConfig,
    bootstrap::ProviderBootstrap,
    runtime::RuntimeConfig,
    server::{RelayConfig, Replica, ReplicaConfig},
    turn::TurnConfig,
};
use chatd_shared::{
    ids::ReplicaId,
    pubsub::PubSubConfig,
    status::{ProviderKind, UserRole},
    testing::{TestDb, eventually, user_with_token, wait_for},
};

/// Generous deadline for conditions and runs in tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// Replicas with their API, and a user's token.
pub struct Cluster {
    pub db: TestDb,
    pub replicas: Vec<Replica>,
    pub token: String,
}

/// Test settings of a replica: fast lease, the in-process mock model
/// answering 20 words with no delay.
fn replica_config(db: &TestDb) -> ReplicaConfig {
    let mut database = db.config();
    database.pool_size = 8;
    let mut runtime = RuntimeConfig::new(ReplicaId::new_random());
    runtime.heartbeat_interval = Duration::from_millis(200);
    runtime.lease_ttl = Duration::from_secs(1);
    runtime.poll_interval = Duration::from_millis(500);
    runtime.drain_timeout = Duration::from_secs(2);
    ReplicaConfig {
        database,
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        migrate: false,
        bootstrap: Some(ProviderBootstrap {
            name: "mock".into(),
            kind: ProviderKind::Mock,
            base_url: "mock://?tokens=20".into(),
            api_key_env: None,
            model: "mock".into(),
            context_limit: 100_000,
            make_default: false,
        }),
        runtime,
        turn: TurnConfig::default(),
        api: ApiConfig::default(),
        test_tools: false,
        pubsub: PubSubConfig::default(),
        // One host: a relay on loopback needs no secret.
        relay: Some(RelayConfig::loopback(None)),
    }
}

impl Cluster {
    /// `count` replicas on a fresh database (`tweak` adjusts each), running
    /// and listening, and a member with a token.
    pub async fn start(count: usize, tweak: impl Fn(&mut ReplicaConfig)) -> Self {
        let db = TestDb::new().await;
        let mut replicas = Vec::new();
        for _ in 0..count {
            let mut config = replica_config(&db);
            tweak(&mut config);
            replicas.push(Replica::start(config).await.expect("replica starts"));
        }
        for replica in &replicas {
            eventually("the replica to run", WAIT, || {
                let up = replica.is_running() && replica.pubsub().is_connected();
                async move { up.then_some(()) }
            })
            .await;
        }
        let (_, token) = user_with_token(&db, "loadtest", UserRole::Member).await;
        Self {
            db,
            replicas,
            token,
        }
    }

    /// The replicas' API URLs.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(Replica::url).collect()
    }

    /// Chats in the database.
    pub async fn chat_count(&self) -> i64 {
        let client = self.db.pool().get().await.unwrap();
        client
            .query_one("SELECT count(*) FROM chats", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Stops every replica gracefully.
    pub async fn shutdown(self) {
        for replica in self.replicas {
            replica.shutdown().await;
        }
    }
}

/// Runs `chatd-loadtest` with `args` to its end.
pub async fn loadtest(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd-loadtest"))
        .args(args)
        .env_remove("CHATD_LOADTEST_TOKEN")
        .env_remove("CHATD_LOADTEST_PG_URL")
        .kill_on_drop(true)
        .output();
    wait_for("chatd-loadtest to finish", WAIT, run)
        .await
        .expect("chatd-loadtest runs")
}

/// A path for a summary that no other test uses; removed on drop.
pub struct OutFile(pub PathBuf);

impl OutFile {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(std::env::temp_dir().join(format!(
            "chatd-loadtest-test-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }

    pub fn json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.0).expect("the summary was written");
        serde_json::from_str(&text).expect("the summary is JSON")
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// stdout and stderr of a finished run, for assertion messages.
pub fn printed(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
