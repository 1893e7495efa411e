//! Operations: health, readiness, metrics, shutdown as clients see it, and
//! the `chatd token create` bootstrap.

mod common;

use std::process::Command;

use chatd_shared::{
    api::CreateChat,
    client::Transport,
    status::UserRole,
    stream::{Cursor, StreamEvent},
    testing::{TestDb, eventually, wait_for},
};
use common::{
    WAIT,
    app::{TestApp, open_stream, read_until, say, user_with_token},
};
use futures::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_status_and_streams_by_transport() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let id = client
        .create_chat(
            &CreateChat {
                text: Some(say(json!({"text": "counted"}))),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap()
        .body
        .id;
    let _ = client.get_chat(chatd_shared::ids::ChatId::new_v7()).await;
    let stream = open_stream(&client, id, Transport::Sse).await;
    // The turn is counted when it ends, which may be after the stream opened.
    let text = eventually("the turn to be counted", WAIT, || async {
        let text = app.metrics(0).await;
        text.contains("chatd_turns").then_some(text)
    })
    .await;
    assert!(
        text.contains(r#"route="/api/v1/chats""#) && text.contains(r#"status="201""#),
        "{text}"
    );
    assert!(text.contains(r#"route="/api/v1/chats/{id}""#) && text.contains(r#"status="404""#));
    assert!(text.contains("chatd_http_request_duration_seconds_bucket"));
    assert!(
        text.lines().any(
            |l| l.starts_with(r#"chatd_stream_subscribers{transport="sse""#) && l.ends_with(" 1")
        ),
        "{text}"
    );
    for name in [
        "chatd_running_chats",
        "chatd_pubsub_publishes",
        "chatd_acquires",
        "chatd_turns",
        "chatd_lease_renew_seconds",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    drop(stream);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_open_streams_to_reconnect_and_readiness_goes_false() {
    let app = TestApp::start(1, |config| {
        config.runtime.drain_timeout = std::time::Duration::from_millis(200)
    })
    .await;
    let client = app.admin(0);
    let ready = reqwest::get(format!("{}/readyz", app.url(0)))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let id = client
        .create_chat(&CreateChat::default(), None)
        .await
        .unwrap()
        .body
        .id;
    let mut ws = client
        .stream_chat(id, Cursor::default(), Transport::WebSocket)
        .await
        .unwrap();
    let mut sse = client
        .stream_chat(id, Cursor::default(), Transport::Sse)
        .await
        .unwrap();
    read_until(&mut ws, |e| matches!(e, StreamEvent::Queue { .. })).await;
    read_until(&mut sse, |e| matches!(e, StreamEvent::Queue { .. })).await;
    let mut watch = client.watch(Transport::WebSocket).await.unwrap();
    // A slow turn keeps the drain busy long enough to look at readiness.
    let busy = client
        .create_chat(
            &CreateChat {
                text: Some(say(
                    json!({"text": "a b c d e f g h", "token_delay_ms": 1000}),
                )),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap()
        .body
        .id;
    eventually("the slow turn to run", WAIT, || async {
        (client.get_chat(busy).await.ok()?.status == chatd_shared::status::ChatStatus::Running)
            .then_some(())
    })
    .await;

    let url = app.url(0);
    let shutdown = tokio::spawn(app.shutdown());
    let http = reqwest::Client::new();
    eventually("readiness to turn false while draining", WAIT, || {
        let request = http.get(format!("{url}/readyz"));
        async move { (request.send().await.ok()?.status() == 503).then_some(()) }
    })
    .await;
    for stream in [&mut ws, &mut sse] {
        let last = wait_for("the stream to end", WAIT, async {
            let mut last = None;
            while let Some(Ok(event)) = stream.next().await {
                last = Some(event);
            }
            last
        })
        .await;
        assert!(
            matches!(&last, Some(StreamEvent::Reconnect { reason, .. }) if reason == "replica_shutting_down"),
            "{last:?}"
        );
    }
    let last = wait_for("the watch to end", WAIT, async {
        let mut last = None;
        while let Some(Ok(event)) = watch.next().await {
            last = Some(event);
        }
        last
    })
    .await;
    assert!(
        matches!(last, Some(chatd_shared::api::WatchEvent::Reconnect { .. })),
        "{last:?}"
    );
    wait_for("shutdown", WAIT, shutdown).await.unwrap();
    assert!(
        reqwest::get(format!("{url}/healthz")).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_use_is_recorded_at_most_once_a_minute() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, token) = app.user("recorded").await;
    let client = app.client(0, &token);
    let hash = chatd_shared::auth_token::hash(&token);
    let last_used = || async {
        let db = app.db.pool().get().await.unwrap();
        db.query_one(
            "SELECT last_used_at FROM api_tokens WHERE token_hash = $1",
            &[&hash],
        )
        .await
        .unwrap()
        .get::<_, Option<chrono::DateTime<chrono::Utc>>>(0)
    };
    assert_eq!(last_used().await, None);
    client.list_chats(&Default::default()).await.unwrap();
    let first = eventually("the use to be recorded", WAIT, || async {
        last_used().await
    })
    .await;
    for _ in 0..20 {
        client.list_chats(&Default::default()).await.unwrap();
    }
    assert_eq!(
        last_used().await,
        Some(first),
        "not rewritten within the minute"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn chatd_token_create_bootstraps_an_admin() {
    let db = TestDb::new().await;
    let url = db.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["token", "create", "--username", "root", "--admin"])
            .env("CHATD_DATABASE_URL", url)
            .env("CHATD_LOG", "error")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let token = stdout.lines().last().unwrap().trim().to_owned();
    assert!(chatd_shared::auth_token::looks_valid(&token), "{stdout}");
    let client = db.pool().get().await.unwrap();
    let (found, user) =
        chatd_shared::db::tokens::find_active(&client, &chatd_shared::auth_token::hash(&token))
            .await
            .unwrap()
            .expect("the printed token authenticates");
    assert_eq!(
        (user.username.as_str(), user.role),
        ("root", UserRole::Admin)
    );
    assert_eq!(found.prefix, &token[..12]);
    // A second run for an existing member promotes it and makes another token.
    let (_, _) = user_with_token(&db, "member", UserRole::Member).await;
    let url = db.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args([
                "token",
                "create",
                "--username",
                "member",
                "--admin",
                "--name",
                "ops",
            ])
            .env("CHATD_DATABASE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let promoted = chatd_shared::db::users::get_by_username(&client, "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(promoted.role, UserRole::Admin);
}
