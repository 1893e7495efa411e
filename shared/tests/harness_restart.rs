//! Restarting the test cluster. This file holds only this test: a restart cuts
//! every connection of the process, so it gets a cluster of its own.

use chatd_shared::testing::{TestDb, cluster};

#[tokio::test]
async fn a_connection_made_after_restart_works() {
    if !cluster().can_restart() {
        return;
    }
    let db = TestDb::new().await;
    let before = db.connect().await;
    before
        .execute(
            "INSERT INTO users (id, username) VALUES (gen_random_uuid(), 'kept')",
            &[],
        )
        .await
        .unwrap();
    // Park a connection in the pool so the pool has something to recover.
    db.pool()
        .get()
        .await
        .unwrap()
        .execute("SELECT 1", &[])
        .await
        .unwrap();

    tokio::task::spawn_blocking(|| cluster().restart())
        .await
        .unwrap();

    assert!(
        before.execute("SELECT 1", &[]).await.is_err(),
        "the old connection was cut"
    );
    let after = db.connect().await;
    let kept: i64 = after
        .query_one("SELECT count(*) FROM users WHERE username = 'kept'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "data survives a restart on the same port");
    // The pool recovers too: its cut connection is replaced on checkout.
    let pooled = db
        .pool()
        .get()
        .await
        .expect("pool connection after restart");
    pooled
        .execute("SELECT 1", &[])
        .await
        .expect("pooled query after restart");
}
