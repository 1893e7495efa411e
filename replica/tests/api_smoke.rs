//! The API comes up and serves a turn end to end (raw HTTP).

mod common;

use common::app::TestApp;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_created_over_http_runs_to_waiting() {
    let app = TestApp::start(1, |_| {}).await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", app.url(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("{}/readyz", app.url(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let created = http
        .post(format!("{}/api/v1/chats", app.url(0)))
        .bearer_auth(&app.admin_token)
        .json(&json!({"text": "@mock {\"text\": \"hi there\"}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let chat: Value = created.json().await.unwrap();
    let id = chat["id"].as_str().unwrap().to_owned();
    let url = format!("{}/api/v1/chats/{id}", app.url(0));
    let done = chatd_shared::testing::eventually("waiting", common::WAIT, || {
        let http = http.clone();
        let url = url.clone();
        let token = app.admin_token.clone();
        async move {
            let chat: Value = http
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (chat["status"] == "waiting").then_some(chat)
        }
    })
    .await;
    assert_eq!(done["generation"], 1);
    let messages: Value = http
        .get(format!("{url}/messages"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(messages["messages"][1]["content"][0]["text"], "hi there");
    let spec: Value = http
        .get(format!("{}/api/v1/openapi.json", app.url(0)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        spec["paths"]["/api/v1/chats/{id}/stream"].is_object(),
        "{}",
        spec["paths"]
    );
    app.shutdown().await;
}
