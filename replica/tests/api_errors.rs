//! What clients get wrong: authentication, other users' chats, and bad input
//! on every write route. Each gets the right status and error code, and
//! nothing is written.

mod common;

use chatd_shared::{
    api::{CreateChat, SendMessage},
    client::{Client, RawBody, Transport},
    ids::ChatId,
    pubsub::ControlNotice,
    stream::Cursor,
    testing::eventually,
};
use common::{
    WAIT,
    app::{TestApp, say},
};
use reqwest::Method;
use serde_json::json;

async fn expect(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<RawBody>,
    status: u16,
    code: &str,
) {
    let response = client.raw(method.clone(), path, body, &[]).await.unwrap();
    assert_eq!(
        response.status.as_u16(),
        status,
        "{method} {path}: {}",
        response.body
    );
    let error = response
        .error()
        .unwrap_or_else(|| panic!("{method} {path}: no error body: {}", response.body));
    assert_eq!(error.code, code, "{method} {path}: {}", error.message);
    assert!(!error.message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused() {
    let app = TestApp::start(1, |_| {}).await;
    let anonymous = app.admin(0).with_token(None).unwrap();
    expect(&anonymous, Method::GET, "/chats", None, 401, "unauthorized").await;
    let malformed = app.admin(0).with_token(Some("not-a-token")).unwrap();
    expect(&malformed, Method::GET, "/chats", None, 401, "unauthorized").await;
    let unknown = app
        .admin(0)
        .with_token(Some(&chatd_shared::auth_token::generate()))
        .unwrap();
    expect(&unknown, Method::GET, "/chats", None, 401, "unauthorized").await;

    // Expired.
    let (user, _) = app.user("expiring").await;
    let expired = chatd_shared::auth_token::generate();
    let client = app.db.pool().get().await.unwrap();
    chatd_shared::db::tokens::insert(
        &client,
        &chatd_shared::db::tokens::NewApiToken {
            user_id: user,
            name: "old",
            token_hash: &chatd_shared::auth_token::hash(&expired),
            prefix: &chatd_shared::auth_token::display_prefix(&expired),
            expires_at: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        },
    )
    .await
    .unwrap();
    expect(
        &app.client(0, &expired),
        Method::GET,
        "/chats",
        None,
        401,
        "unauthorized",
    )
    .await;

    // Revoked: works, is revoked (every replica hears of it), stops working.
    let (_, token) = app.user("revoked").await;
    let member = app.client(0, &token);
    assert!(member.list_chats(&Default::default()).await.is_ok());
    client
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1",
            &[&chatd_shared::auth_token::hash(&token)],
        )
        .await
        .unwrap();
    app.replicas[0]
        .pubsub()
        .publish_control(&ControlNotice::TokensChanged)
        .unwrap();
    eventually("the revoked token to stop working", WAIT, || async {
        let error = member.list_chats(&Default::default()).await.err()?;
        (error.status().map(|s| s.as_u16()) == Some(401)).then_some(())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_chat_is_not_found_on_every_route() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, alice_token) = app.user("alice").await;
    let (_, bob_token) = app.user("bob").await;
    let alice = app.client(0, &alice_token);
    let bob = app.client(0, &bob_token);
    // Titled, so no generated title changes it while bob tries.
    let chat = alice
        .create_chat(
            &CreateChat {
                text: Some(say(json!({"text": "mine"}))),
                title: Some("Alice's".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap()
        .body;
    let id = chat.id;
    let missing = ChatId::new_v7();
    for target in [id, missing] {
        let path = format!("/chats/{target}");
        let text = || Some(RawBody::Json(json!({"text": "hi"})));
        let routes = [
            (Method::GET, "", None),
            (
                Method::PATCH,
                "",
                Some(RawBody::Json(json!({"title": "x"}))),
            ),
            (Method::DELETE, "", None),
            (Method::GET, "/messages", None),
            (Method::POST, "/messages", text()),
            (Method::PATCH, "/messages/1", text()),
            (Method::POST, "/interrupt", None),
            (Method::GET, "/queue", None),
            (Method::DELETE, "/queue/1", None),
            (Method::POST, "/queue/1/promote", None),
        ];
        for (method, rest, body) in routes {
            expect(
                &bob,
                method,
                &format!("{path}{rest}"),
                body,
                404,
                "not_found",
            )
            .await;
        }
        for transport in [Transport::WebSocket, Transport::Sse] {
            let refused = bob
                .stream_chat(target, Cursor::default(), transport)
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Some("not_found"));
        }
    }
    assert!(
        bob.list_chats(&Default::default())
            .await
            .unwrap()
            .chats
            .is_empty(),
        "bob lists none of alice's chats"
    );
    // Admins see everything.
    let admin = app.admin(0);
    assert_eq!(admin.get_chat(id).await.unwrap().owner_id, chat.owner_id);
    assert!(
        admin
            .list_chats(&Default::default())
            .await
            .unwrap()
            .chats
            .iter()
            .any(|c| c.id == id)
    );
    // Nothing bob did changed anything.
    let after = alice.get_chat(id).await.unwrap();
    assert_eq!((after.title.as_str(), after.archived), ("Alice's", false));
    app.shutdown().await;
}

async fn counts(app: &TestApp) -> (i64, i64, i64) {
    let client = app.db.pool().get().await.unwrap();
    let count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    (
        count("chats").await,
        count("chat_messages").await,
        count("chat_queued_messages").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_write_route_is_refused_and_writes_nothing() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let chat = client
        .create_chat(&CreateChat::default(), None)
        .await
        .unwrap()
        .body;
    let id = chat.id;
    let before = counts(&app).await;
    let bytes = |text: &str| Some(RawBody::Bytes(text.as_bytes().to_vec().into()));
    let json_body = |value: serde_json::Value| Some(RawBody::Json(value));
    let chat_path = format!("/chats/{id}");
    let messages = format!("{chat_path}/messages");

    for (method, path) in [
        (Method::POST, "/chats".to_owned()),
        (Method::PATCH, chat_path.clone()),
        (Method::POST, messages.clone()),
        (Method::PATCH, format!("{messages}/1")),
        (Method::POST, format!("{chat_path}/tool-results")),
        (Method::POST, "/admin/mcp-servers".to_owned()),
        (
            Method::PATCH,
            format!("/admin/mcp-servers/{}", uuid::Uuid::new_v4()),
        ),
    ] {
        expect(
            &client,
            method.clone(),
            &path,
            bytes("{not json"),
            400,
            "malformed_json",
        )
        .await;
        expect(
            &client,
            method.clone(),
            &path,
            json_body(json!({"text": "hi", "surprise": 1})),
            400,
            "invalid_body",
        )
        .await;
        expect(
            &client,
            method.clone(),
            &path,
            json_body(json!({"text": 42})),
            400,
            "invalid_body",
        )
        .await;
        let oversize = json!({"text": "x".repeat(1024 * 1024 + 1)});
        expect(
            &client,
            method,
            &path,
            json_body(oversize),
            413,
            "payload_too_large",
        )
        .await;
    }
    // Empty or forbidden content.
    for body in [json!({"text": "   "}), json!({"content": []})] {
        expect(
            &client,
            Method::POST,
            &messages,
            json_body(body.clone()),
            422,
            "empty_message",
        )
        .await;
        expect(
            &client,
            Method::POST,
            "/chats",
            json_body(body),
            422,
            "empty_message",
        )
        .await;
    }
    expect(
        &client,
        Method::POST,
        &messages,
        json_body(json!({})),
        400,
        "invalid_body",
    )
    .await;
    expect(
        &client,
        Method::POST,
        &messages,
        json_body(json!({"text": "a", "content": [{"type": "text", "text": "b"}]})),
        400,
        "invalid_body",
    )
    .await;
    let tool_call = json!({"content": [{"type": "tool_call", "id": "x", "name": "y", "args": {}}]});
    expect(
        &client,
        Method::POST,
        &messages,
        json_body(tool_call),
        422,
        "invalid_content",
    )
    .await;
    expect(
        &client,
        Method::POST,
        &messages,
        json_body(json!({"text": "hi", "busy_behavior": "sometimes"})),
        400,
        "invalid_body",
    )
    .await;
    expect(
        &client,
        Method::POST,
        "/chats",
        json_body(json!({"labels": [1, 2]})),
        422,
        "invalid_labels",
    )
    .await;
    expect(
        &client,
        Method::POST,
        "/chats",
        json_body(json!({"model_config_id": ChatId::new_v7()})),
        422,
        "invalid_model",
    )
    .await;
    expect(
        &client,
        Method::PATCH,
        &chat_path,
        json_body(json!({"title": "t".repeat(201)})),
        422,
        "invalid_title",
    )
    .await;
    // Bad ids, bad queries.
    expect(
        &client,
        Method::GET,
        "/chats/not-a-uuid",
        None,
        400,
        "invalid_path",
    )
    .await;
    expect(
        &client,
        Method::POST,
        "/chats/not-a-uuid/messages",
        json_body(json!({"text": "hi"})),
        400,
        "invalid_path",
    )
    .await;
    expect(
        &client,
        Method::PATCH,
        &format!("{messages}/abc"),
        json_body(json!({"text": "hi"})),
        400,
        "invalid_path",
    )
    .await;
    expect(
        &client,
        Method::DELETE,
        &format!("{chat_path}/queue/abc"),
        None,
        400,
        "invalid_path",
    )
    .await;
    for limit in ["0", "201", "-1", "many"] {
        expect(
            &client,
            Method::GET,
            &format!("/chats?limit={limit}"),
            None,
            400,
            "invalid_query",
        )
        .await;
        expect(
            &client,
            Method::GET,
            &format!("{messages}?limit={limit}"),
            None,
            400,
            "invalid_query",
        )
        .await;
    }
    expect(
        &client,
        Method::GET,
        "/chats?cursor=nope",
        None,
        400,
        "invalid_query",
    )
    .await;
    expect(
        &client,
        Method::GET,
        "/chats?unknown=1",
        None,
        400,
        "invalid_query",
    )
    .await;
    expect(
        &client,
        Method::GET,
        &format!("{chat_path}/stream?after_part=7"),
        None,
        400,
        "stream_transport",
    )
    .await;
    let bad_cursor = client
        .raw(
            Method::GET,
            &format!("{chat_path}/stream?after_part=x.y"),
            None,
            &[("accept", "text/event-stream")],
        )
        .await
        .unwrap();
    assert_eq!(bad_cursor.error().unwrap().code, "invalid_cursor");
    // Idempotency keys must be usable.
    let long_key = "k".repeat(300);
    let response = client
        .raw(
            Method::POST,
            &messages,
            json_body(json!({"text": "hi"})),
            &[("idempotency-key", &long_key)],
        )
        .await
        .unwrap();
    assert_eq!(response.error().unwrap().code, "invalid_idempotency_key");
    // Unknown routes and methods get the JSON error body too.
    expect(&client, Method::GET, "/nowhere", None, 404, "not_found").await;

    assert_eq!(counts(&app).await, before, "nothing was written");
    // And the chat still works.
    let sent = client
        .send_message(
            id,
            &SendMessage {
                text: Some(say(json!({"text": "fine"}))),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(sent.status, 201);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let app = TestApp::start(1, |_| {}).await;
    let spec: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", app.url(0)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with('3'));
    let paths = spec["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/chats", &["get", "post"][..]),
        ("/api/v1/chats/{id}", &["get", "patch", "delete"]),
        ("/api/v1/chats/{id}/messages", &["get", "post"]),
        ("/api/v1/chats/{id}/messages/{message_id}", &["patch"]),
        ("/api/v1/chats/{id}/interrupt", &["post"]),
        ("/api/v1/chats/{id}/queue", &["get"]),
        ("/api/v1/chats/{id}/queue/{queued_id}", &["delete"]),
        ("/api/v1/chats/{id}/queue/{queued_id}/promote", &["post"]),
        ("/api/v1/chats/{id}/stream", &["get"]),
        ("/api/v1/chats/watch", &["get"]),
    ] {
        let entry = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing: {:?}", paths.keys().collect::<Vec<_>>()));
        for method in methods {
            assert!(entry.get(*method).is_some(), "{method} {path} missing");
        }
    }
    assert!(spec["components"]["schemas"]["StreamEvent"].is_object());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    app.shutdown().await;
}

/// Rows of the attachment and webhook tables.
async fn attachment_and_webhook_rows(app: &TestApp) -> i64 {
    let client = app.db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT (SELECT count(*) FROM files) + (SELECT count(*) FROM file_chunks)
                  + (SELECT count(*) FROM webhooks) + (SELECT count(*) FROM webhook_deliveries)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_file_and_webhook_routes_is_refused_and_writes_nothing() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let before = attachment_and_webhook_rows(&app).await;
    let bytes = |content: &[u8]| Some(RawBody::Bytes(content.to_vec().into()));
    let json_body = |value: serde_json::Value| Some(RawBody::Json(value));
    let unknown = ChatId::new_v7();

    // Webhooks: the body's shape (400), what it means (422), sizes (413).
    for (body, status, code) in [
        (bytes(b"{not json"), 400, "malformed_json"),
        (
            json_body(
                json!({"url": "https://example.com/", "events": ["turn.completed"], "secret": "mine"}),
            ),
            400,
            "invalid_body",
        ),
        (
            json_body(json!({"url": 42, "events": ["turn.completed"]})),
            400,
            "invalid_body",
        ),
        (
            json_body(json!({"url": "https://example.com/"})),
            400,
            "invalid_body",
        ),
        (
            json_body(json!({"url": "https://example.com/", "events": ["turn.started"]})),
            400,
            "invalid_body",
        ),
        (
            json_body(
                json!({"url": "https://example.com/", "events": ["turn.completed"], "chat_id": "nope"}),
            ),
            400,
            "invalid_body",
        ),
        (
            json_body(json!({"url": "https://example.com/", "events": []})),
            422,
            "invalid_events",
        ),
        (
            json_body(json!({"url": "not a url", "events": ["turn.completed"]})),
            422,
            "invalid_url",
        ),
        (
            json_body(json!({"url": "ftp://example.com/", "events": ["turn.completed"]})),
            422,
            "invalid_url",
        ),
        (
            json_body(
                json!({"url": "https://93.184.215.14/hook", "events": ["turn.completed"], "chat_id": unknown}),
            ),
            422,
            "invalid_chat",
        ),
        (
            json_body(
                json!({"url": format!("https://example.com/{}", "x".repeat(1024 * 1024)), "events": ["turn.completed"]}),
            ),
            413,
            "payload_too_large",
        ),
    ] {
        expect(&client, Method::POST, "/webhooks", body, status, code).await;
    }
    for (method, path, status, code) in [
        (
            Method::GET,
            "/webhooks/not-a-uuid".to_owned(),
            400,
            "invalid_path",
        ),
        (
            Method::DELETE,
            format!("/webhooks/{unknown}"),
            404,
            "not_found",
        ),
        (
            Method::GET,
            format!("/webhooks/{unknown}/deliveries"),
            404,
            "not_found",
        ),
        (
            Method::GET,
            format!("/webhooks/{unknown}/deliveries?limit=0"),
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/files/not-a-uuid".to_owned(),
            400,
            "invalid_path",
        ),
        (Method::GET, format!("/files/{unknown}"), 404, "not_found"),
        (
            Method::POST,
            "/files?surprise=1".to_owned(),
            400,
            "invalid_query",
        ),
    ] {
        expect(&client, method, &path, None, status, code).await;
    }

    // Uploads: a broken multipart body, one without a file, a refused kind,
    // an empty file.
    let multipart = [("content-type", "multipart/form-data; boundary=b")];
    for (body, headers, status, code) in [
        (
            bytes(b"--b\r\nno headers or end"),
            &multipart[..],
            400,
            "invalid_body",
        ),
        (
            bytes(b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n"),
            &multipart[..],
            400,
            "invalid_body",
        ),
        (
            bytes(b"\x7fELF\x02\x01\x01\0"),
            &[("content-type", "image/png")][..],
            415,
            "unsupported_file_type",
        ),
        (
            bytes(b""),
            &[("content-type", "text/plain")][..],
            422,
            "empty_file",
        ),
    ] {
        let response = client
            .raw(Method::POST, "/files", body, headers)
            .await
            .unwrap();
        assert_eq!(response.status.as_u16(), status, "{}", response.body);
        let error = response.error().expect("an error body");
        assert_eq!(error.code, code, "{}", error.message);
    }
    assert_eq!(
        attachment_and_webhook_rows(&app).await,
        before,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mcp_servers_and_tool_results_are_refused_with_their_codes() {
    let app = TestApp::start(1, |_| {}).await;
    let client = app.admin(0);
    let json_body = |value: serde_json::Value| Some(RawBody::Json(value));
    let server = |name: &str, url: &str| json_body(json!({"name": name, "url": url}));
    let servers = "/admin/mcp-servers";
    for (body, code) in [
        (server("Has Caps", "http://x/mcp"), "invalid_name"),
        (server("a__b", "http://x/mcp"), "invalid_name"),
        (server("ok", "ftp://x/mcp"), "invalid_url"),
        (server("ok", "not a url"), "invalid_url"),
        (
            json_body(json!({"name": "ok", "url": "http://x/mcp", "allowed_tools": ["a b"]})),
            "invalid_tools",
        ),
        (
            json_body(json!({"name": "ok", "url": "http://x/mcp", "bearer_token": ""})),
            "invalid_bearer_token",
        ),
    ] {
        expect(&client, Method::POST, servers, body, 422, code).await;
    }
    let created = client
        .raw(Method::POST, servers, server("one", "http://x/mcp"), &[])
        .await
        .unwrap();
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    expect(
        &client,
        Method::POST,
        servers,
        server("one", "http://y/mcp"),
        409,
        "name_taken",
    )
    .await;
    let missing = format!("{servers}/{}", uuid::Uuid::new_v4());
    for method in [Method::GET, Method::DELETE] {
        expect(&client, method, &missing, None, 404, "not_found").await;
    }
    expect(
        &client,
        Method::GET,
        &format!("{missing}/tools"),
        None,
        404,
        "not_found",
    )
    .await;
    expect(
        &client,
        Method::PATCH,
        &missing,
        json_body(json!({})),
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        client.list_mcp_servers().await.unwrap().mcp_servers.len(),
        1
    );

    // A chat may opt only into servers that exist, and results go to a
    // chat that waits for them.
    expect(
        &client,
        Method::POST,
        "/chats",
        json_body(json!({"mcp_servers": ["nope"]})),
        422,
        "unknown_mcp_server",
    )
    .await;
    let chat = client
        .create_chat(&CreateChat::default(), None)
        .await
        .unwrap()
        .body;
    let results = format!("/chats/{}/tool-results", chat.id);
    let answer = json_body(json!({"results": [{"tool_call_id": "call_x", "result": 1}]}));
    expect(
        &client,
        Method::POST,
        &results,
        answer.clone(),
        422,
        "unknown_tool_call",
    )
    .await;
    let missing_chat = format!("/chats/{}/tool-results", uuid::Uuid::new_v4());
    expect(
        &client,
        Method::POST,
        &missing_chat,
        answer,
        404,
        "not_found",
    )
    .await;
    app.shutdown().await;
}
