//! The test harness itself: isolation between tests, cleanup when the test
//! process dies.

use std::{path::PathBuf, process::Command, time::Duration};

use chatd_shared::testing::{TestDb, cluster, eventually};
use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

/// Connects with a driver that forwards notifications to a channel.
async fn listen(
    url: &str,
    channel: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(note) = message {
                let _ = tx.send(note.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("LISTEN");
    (client, rx)
}

#[tokio::test]
async fn databases_of_parallel_tests_are_isolated() {
    let (a, b) = tokio::join!(TestDb::new(), TestDb::new());
    assert_ne!(a.name(), b.name());

    let client_a = a.connect().await;
    client_a
        .execute(
            "INSERT INTO users (id, username) VALUES (gen_random_uuid(), 'only-in-a')",
            &[],
        )
        .await
        .unwrap();
    let client_b = b.connect().await;
    let seen: i64 = client_b
        .query_one(
            "SELECT count(*) FROM users WHERE username = 'only-in-a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        seen, 0,
        "a row written in one test database is invisible in another"
    );

    let (_listener_b, mut notes_b) = listen(b.url(), "isolation").await;
    client_a
        .batch_execute("NOTIFY isolation, 'from-a'")
        .await
        .unwrap();
    client_b
        .batch_execute("NOTIFY isolation, 'from-b'")
        .await
        .unwrap();
    // Notifications of one session arrive in order; 'from-b' arriving first
    // proves 'from-a' was never delivered to b.
    let first = tokio::time::timeout(Duration::from_secs(10), notes_b.recv())
        .await
        .expect("b hears its own notification")
        .expect("listener alive");
    assert_eq!(first, "from-b");
    assert!(notes_b.try_recv().is_err(), "nothing from a reached b");
}

/// Run in a child process by `the_cluster_is_removed_when_the_test_process_dies`:
/// starts the cluster, prints its directory, and dies without any cleanup.
#[tokio::test]
#[ignore = "helper run in a child process"]
async fn child_starts_cluster_then_aborts() {
    let db = TestDb::new().await;
    db.connect().await.execute("SELECT 1", &[]).await.unwrap();
    let dir = cluster().server_dir().expect("private cluster");
    println!("SERVER_DIR={}", dir.display());
    std::process::abort();
}

#[test]
fn the_cluster_is_removed_when_the_test_process_dies() {
    if !cluster().can_restart() {
        return; // an external server is not ours to remove
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_cluster_then_aborts",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run child test process");
    assert!(!output.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir: PathBuf = stdout
        .lines()
        .find_map(|line| line.split_once("SERVER_DIR=").map(|(_, dir)| dir.trim()))
        .unwrap_or_else(|| panic!("child printed no server dir: {stdout}"))
        .into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(eventually(
        "the dead child's cluster to be removed",
        Duration::from_secs(30),
        || {
            let gone = !dir.exists();
            async move { gone.then_some(()) }
        },
    ));
    let postmasters = Command::new("pgrep")
        .args(["-f", &format!("postgres -D {}", dir.join("data").display())])
        .output()
        .expect("pgrep");
    assert!(
        postmasters.stdout.is_empty(),
        "no server left running for {}",
        dir.display()
    );
}
