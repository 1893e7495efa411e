//! The web page: how replicas serve it (headers, caching, CORS, WebSocket
//! sign-in), and the page itself in a real browser — Debian's chromium driven
//! by playwright-core (`tests/browser/run.mjs`) against two replicas.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    routing::post,
};
use chatd_replica::server::Replica;
use chatd_shared::{ids::ChatId, testing::TestDb};
use common::{
    app::{TestApp, replica_config, wait_up},
    proxy::Proxy,
};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// The browser run's deadline: every step inside waits with its own deadline.
const BROWSER_RUN: Duration = Duration::from_secs(300);

#[tokio::test]
async fn the_page_is_served_with_its_type_validator_and_security_headers() {
    let app = TestApp::start(1, |_| {}).await;
    let http = reqwest::Client::new();
    let page = http.get(app.url(0)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("cache-control"), "no-cache");
    let etag = header("etag");
    let body = page.text().await.unwrap();
    assert!(body.contains("/assets/app.js"), "{body}");

    let again = http
        .get(app.url(0))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    let script = http
        .get(format!("{}/assets/app.js", app.url(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_ne!(script.headers()["etag"].to_str().unwrap(), etag);

    let missing = http
        .get(format!("{}/assets/nothing.js", app.url(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let error: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found");
    app.shutdown().await;
}

#[tokio::test]
async fn pages_of_other_origins_may_call_the_api_with_a_token() {
    let app = TestApp::start(1, |_| {}).await;
    let http = reqwest::Client::new();
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/chats", app.url(0)),
        )
        .header("origin", "http://127.0.0.1:1")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    // No cookies are ever involved: credentials are not allowed.
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-credentials")
    );

    let listed = http
        .get(format!("{}/api/v1/chats", app.url(0)))
        .header("origin", "http://127.0.0.1:1")
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.headers()["access-control-allow-origin"], "*");
    app.shutdown().await;
}

#[tokio::test]
async fn a_websocket_signs_in_with_the_token_offered_as_a_subprotocol() {
    let app = TestApp::start(1, |_| {}).await;
    let url = format!("{}/api/v1/chats/watch", app.url(0).replace("http", "ws"));

    let offer = |token: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("chatd, chatd.bearer.{token}").parse().unwrap(),
        );
        request
    };
    let (mut socket, response) = tokio_tungstenite::connect_async(offer(&app.admin_token))
        .await
        .expect("the upgrade is accepted");
    // Browsers fail a connection whose offered subprotocols got no answer.
    assert_eq!(response.headers()["sec-websocket-protocol"], "chatd");
    socket.close(None).await.unwrap();

    let refused = tokio_tungstenite::connect_async(offer("chatd_0123456789abcdef0123456789abcdef"))
        .await
        .expect_err("an unknown token is refused");
    match refused {
        tungstenite::Error::Http(response) => assert_eq!(response.status(), 401),
        other => panic!("expected a 401, got {other}"),
    }
    app.shutdown().await;
}

/// What the browser script may ask of the cluster while it runs.
struct Cluster {
    db: TestDb,
    /// Replica 1 and 2; `None` once stopped.
    replicas: Mutex<Vec<Option<Replica>>>,
    /// Replica 1's API behind a proxy: the page's origin, cut to drop the network.
    proxy: Proxy,
    /// Where the proxy leads.
    proxy_target: Mutex<SocketAddr>,
}

/// `POST /cut`, `/restore`: the page's origin drops and refuses every
/// connection, then accepts them again. `POST /stop/{n}`: replica n (0-based)
/// shuts down gracefully. `POST /start`: one more replica.
/// `POST /stop-worker/{chat}`: the replica running the chat shuts down; when
/// it is the one behind the page's origin, the origin moves to another, as a
/// load balancer would. `POST /seed/{chat}/{count}`: `count` old messages.
fn control_routes(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route(
            "/cut",
            post(|State(cluster): State<Arc<Cluster>>| async move {
                cluster.proxy.cut();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/restore",
            post(|State(cluster): State<Arc<Cluster>>| async move {
                cluster.proxy.restore();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/stop/{index}",
            post(
                |State(cluster): State<Arc<Cluster>>, UrlPath(index): UrlPath<usize>| async move {
                    let replica = cluster.replicas.lock().await[index].take();
                    match replica {
                        Some(replica) => {
                            replica.shutdown().await;
                            StatusCode::NO_CONTENT
                        }
                        None => StatusCode::NOT_FOUND,
                    }
                },
            ),
        )
        .route(
            "/start",
            post(|State(cluster): State<Arc<Cluster>>| async move {
                let replica = Replica::start(replica_config(&cluster.db))
                    .await
                    .expect("replica starts");
                wait_up(&replica).await;
                cluster.replicas.lock().await.push(Some(replica));
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/stop-worker/{chat}",
            post(
                |State(cluster): State<Arc<Cluster>>, UrlPath(chat): UrlPath<ChatId>| async move {
                    stop_worker(&cluster, chat).await
                },
            ),
        )
        .route(
            "/seed/{chat}/{count}",
            post(
                |State(cluster): State<Arc<Cluster>>,
                 UrlPath((chat, count)): UrlPath<(ChatId, i64)>| async move {
                    seed_history(&cluster.db, chat, count).await;
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(cluster)
}

async fn stop_worker(cluster: &Cluster, chat: ChatId) -> (StatusCode, String) {
    let mut replicas = cluster.replicas.lock().await;
    let Some(index) = replicas.iter().position(|replica| {
        replica
            .as_ref()
            .is_some_and(|replica| replica.running().iter().any(|(id, _)| *id == chat))
    }) else {
        return (StatusCode::NOT_FOUND, "no replica runs the chat".into());
    };
    let Some(worker) = replicas[index].take() else {
        return (StatusCode::NOT_FOUND, "gone".into());
    };
    if cluster.proxy_target.lock().await.eq(&worker.http_addr()) {
        let survivor = replicas.iter().flatten().next().map(Replica::http_addr);
        if let Some(survivor) = survivor {
            cluster.proxy.route_to(survivor);
            *cluster.proxy_target.lock().await = survivor;
        }
    }
    drop(replicas);
    worker.shutdown().await;
    (StatusCode::OK, index.to_string())
}

/// Inserts `count` messages, `history 1` … `history N`, user and assistant in turn.
async fn seed_history(db: &TestDb, chat: ChatId, count: i64) {
    let client = db.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO chat_messages (chat_id, role, content)
             SELECT $1,
                    (CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END)::message_role,
                    jsonb_build_array(jsonb_build_object('type', 'text', 'text', 'history ' || i))
             FROM generate_series(1, $2::bigint) AS i ORDER BY i",
            &[&chat, &count],
        )
        .await
        .unwrap();
}

/// Debian's chromium (`CHATD_CHROMIUM` names another). Missing is a failure:
/// `.ci/run` installs it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHATD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (apt-get install -y chromium) or set CHATD_CHROMIUM",
        path.display()
    );
    path
}

fn browser_tests_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in {}",
        dir.display()
    );
    dir
}

/// Where the screenshots go: `target/web-screenshots/`.
fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("web-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_chats_streams_and_recovers_in_a_real_browser() {
    let chromium = chromium();
    let scripts = browser_tests_dir();
    let output = screenshots_dir();

    let proxy = Proxy::listen().await;
    let app = TestApp::start(2, |_| {}).await;
    proxy.route_to(app.replicas[0].http_addr());
    let page_url = proxy.ws_url().replace("ws://", "http://");
    let replica_urls = [app.url(0), app.url(1)].join(",");
    let (_, token) = app.user("web").await;
    let TestApp { db, replicas, .. } = app;
    let cluster = Arc::new(Cluster {
        db,
        proxy_target: Mutex::new(replicas[0].http_addr()),
        replicas: Mutex::new(replicas.into_iter().map(Some).collect()),
        proxy,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_url = format!("http://{}", listener.local_addr().unwrap());
    let control = tokio::spawn({
        let routes = control_routes(cluster.clone());
        async move { axum::serve(listener, routes).await }
    });

    let run = tokio::process::Command::new("node")
        .arg("run.mjs")
        .current_dir(&scripts)
        .env("CHATD_PAGE_URL", &page_url)
        .env("CHATD_REPLICA_URLS", &replica_urls)
        .env("CHATD_TOKEN", &token)
        .env("CHATD_CONTROL_URL", &control_url)
        .env("CHATD_OUTPUT_DIR", &output)
        .env("CHATD_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let finished = tokio::time::timeout(BROWSER_RUN, run)
        .await
        .unwrap_or_else(|_| panic!("the browser run took longer than {BROWSER_RUN:?}"))
        .expect("running node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&finished.stdout);
    let stderr = String::from_utf8_lossy(&finished.stderr);
    println!("{stdout}");
    assert!(
        finished.status.success(),
        "the browser run failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        finished.status,
        output.display()
    );

    control.abort();
    for replica in cluster.replicas.lock().await.iter_mut() {
        if let Some(replica) = replica.take() {
            replica.shutdown().await;
        }
    }
}
