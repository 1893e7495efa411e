//! Found by `chatd-loadtest chaos --faults partition`: a replica cut from
//! PostgreSQL in the middle of a transaction (a send locks the chat's row,
//! then needs another round trip) left that row locked until PostgreSQL
//! noticed the dead session, which with TCP keepalive's defaults takes
//! hours; every other replica's send to that chat waited on the lock. A
//! pooled connection now ends a session idle in a transaction after a few
//! seconds, so the lock goes with it.

use std::time::Duration;

use chatd_loadtest::chaos::proxy::Proxy;
use chatd_shared::{
    db::connect_pool,
    status::UserRole,
    testing::{TestDb, user_with_token},
};

/// Far more than the pool's idle-in-transaction limit, far less than TCP's.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_transaction_cut_off_from_postgresql_releases_its_row_lock_within_seconds() {
    let db = TestDb::new().await;
    let (user, _) = user_with_token(&db, "partitioned", UserRole::Member).await;
    let mut url = reqwest::Url::parse(db.url()).expect("the test database URL parses");
    let target = format!(
        "{}:{}",
        url.host_str().expect("a TCP host"),
        url.port().expect("a port")
    );
    let proxy = Proxy::start(target.parse().expect("an address"))
        .await
        .expect("proxy");
    url.set_port(Some(proxy.addr().port())).expect("a port");
    let mut config = db.config();
    config.url = url.to_string();
    let cut_off = connect_pool(&config).expect("pool");

    let mut session = cut_off.get().await.expect("a connection through the proxy");
    let transaction = session.transaction().await.expect("begin");
    transaction
        .query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user])
        .await
        .expect("the row is locked");
    // The partition: the transaction's next statement never arrives, and
    // nothing tells PostgreSQL the session is gone.
    proxy.hold();

    let other = db.pool().get().await.expect("a connection");
    let locked = tokio::time::timeout(
        PATIENCE,
        other.query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user]),
    )
    .await;
    assert!(
        matches!(locked, Ok(Ok(_))),
        "the row was still locked {PATIENCE:?} after its session was cut off: {locked:?}"
    );
    drop(transaction);
    proxy.release();
}
