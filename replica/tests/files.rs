//! Attachments through the public API (ARCHITECTURE.md §17): uploads typed by their
//! content, downloads with caching headers, owner-only access, references
//! from messages, and what the model receives in each wire format.

mod common;

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_shared::testing::eventually;
use common::{WAIT, Wire, app::TestApp, http::Api, mock_model, wait_idle};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A real 1×1 PNG.
const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\x0d\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99\x3d\x1d\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every kind chatd accepts: (bytes, name, claimed type, the type it must get).
fn samples() -> Vec<(Vec<u8>, &'static str, &'static str, &'static str)> {
    let mut jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01".to_vec();
    jpeg.extend(std::iter::repeat_n(0x42, 300));
    let mut gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
    gif.extend([0u8; 20]);
    let mut webp = b"RIFF\x24\x00\x00\x00WEBPVP8 ".to_vec();
    webp.extend([7u8; 24]);
    vec![
        (PNG.to_vec(), "dot.png", "image/png", "image/png"),
        (jpeg, "photo.jpg", "image/jpeg", "image/jpeg"),
        (gif, "anim.gif", "application/octet-stream", "image/gif"),
        (webp, "pic.webp", "image/webp", "image/webp"),
        (
            b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n".to_vec(),
            "doc.pdf",
            "application/pdf",
            "application/pdf",
        ),
        (
            "plain text, ünïcode\n".as_bytes().to_vec(),
            "notes.txt",
            "text/plain",
            "text/plain",
        ),
        (
            b"# Title\n\n- item\n".to_vec(),
            "readme.md",
            "text/plain",
            "text/markdown",
        ),
        (
            b"{\"a\": [1, 2, {\"b\": null}]}".to_vec(),
            "data.json",
            "text/plain",
            "application/json",
        ),
    ]
}

/// A `multipart/form-data` body with one file part.
fn multipart(name: &str, media_type: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "chatd-test-boundary-7d3f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {media_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The upload and download routes, on top of the JSON calls.
impl Api {
    async fn upload(&self, query: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let request = self
            .at(Method::POST, &format!("/files{query}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body);
        Api::answer(request).await
    }

    async fn upload_raw(
        &self,
        name: &str,
        media_type: &str,
        content: &[u8],
    ) -> (StatusCode, Value) {
        // Test names need no escaping.
        self.upload(&format!("?name={name}"), media_type, content.to_vec())
            .await
    }

    async fn upload_multipart(
        &self,
        name: &str,
        media_type: &str,
        content: &[u8],
    ) -> (StatusCode, Value) {
        let (content_type, body) = multipart(name, media_type, content);
        self.upload("", &content_type, body).await
    }

    async fn download(&self, id: &str) -> reqwest::Response {
        self.at(Method::GET, &format!("/files/{id}"))
            .send()
            .await
            .unwrap()
    }
}

async fn file_count(app: &TestApp) -> i64 {
    let client = app.db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT (SELECT count(*) FROM files) + (SELECT count(*) FROM file_chunks)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn each_allowed_type_round_trips_with_its_hash_and_caching_headers() {
    let app = TestApp::start(2, |_| {}).await;
    let (_, token) = app.user("alice").await;
    let uploader = Api::new(&app, 0, &token);
    let reader = Api::new(&app, 1, &token);
    for (index, (content, name, claimed, expected)) in samples().into_iter().enumerate() {
        let (status, file) = if index % 2 == 0 {
            uploader.upload_raw(name, claimed, &content).await
        } else {
            uploader.upload_multipart(name, claimed, &content).await
        };
        assert_eq!(status, StatusCode::CREATED, "{name}: {file}");
        let sha = hex(&Sha256::digest(&content));
        assert_eq!(file["media_type"], expected, "{name}");
        assert_eq!(file["name"], name);
        assert_eq!(file["size"], content.len());
        assert_eq!(file["sha256"], sha);

        let id = file["id"].as_str().unwrap();
        let response = reader.download(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::ETAG], format!("\"{sha}\"").as_str());
        let cache = headers[header::CACHE_CONTROL].to_str().unwrap();
        assert!(
            cache.contains("immutable") && cache.contains("max-age"),
            "{cache}"
        );
        let disposition = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert!(
            disposition.contains(&format!("filename=\"{name}\"")),
            "{disposition}"
        );
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(expected)
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            content.as_slice(),
            "{name}: the bytes come back"
        );
        assert_eq!(hex(&Sha256::digest(&body)), sha);

        let revalidated = reader
            .http
            .get(format!("{}/files/{id}", reader.base))
            .bearer_auth(&token)
            .header(header::IF_NONE_MATCH, format!("\"{sha}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test]
async fn a_large_file_spans_many_chunks_and_comes_back_whole() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, token) = app.user("alice").await;
    let api = Api::new(&app, 0, &token);
    // 3.5 MiB of text: four chunks, the last one partial.
    let content: Vec<u8> = (0..3_670_016u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize])
        .collect();
    let (status, file) = api.upload_raw("big.txt", "text/plain", &content).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let body = api
        .download(file["id"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), content.len());
    assert!(body.as_ref() == content.as_slice());
}

#[tokio::test]
async fn the_type_is_read_from_the_content_not_the_claim() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, token) = app.user("alice").await;
    let api = Api::new(&app, 0, &token);
    let (status, file) = api.upload_raw("dot.txt", "text/plain", PNG).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        file["media_type"], "image/png",
        "a PNG sent as text/plain is a PNG"
    );

    let elf = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00";
    for (status, body) in [
        api.upload_raw("cat.png", "image/png", elf).await,
        api.upload_multipart("cat.png", "image/png", elf).await,
        api.upload_raw(
            "setup.png",
            "image/png",
            b"MZ\x90\x00\x03\x00\x00\x00\x04\x00",
        )
        .await,
    ] {
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert_eq!(body["error"]["code"], "unsupported_file_type");
    }
    let (status, body) = api.upload_raw("empty.txt", "text/plain", b"").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        file_count(&app).await,
        2,
        "only the PNG (a row and a chunk) was stored"
    );
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_stores_nothing() {
    let app = TestApp::start(1, |config| config.api.max_file_size = 4096).await;
    let (_, token) = app.user("alice").await;
    let api = Api::new(&app, 0, &token);
    let at_limit = vec![b'a'; 4096];
    let over = vec![b'a'; 4097];
    assert_eq!(
        api.upload_raw("ok.txt", "text/plain", &at_limit).await.0,
        StatusCode::CREATED
    );
    let before = file_count(&app).await;
    for (status, body) in [
        api.upload_raw("big.txt", "text/plain", &over).await,
        api.upload_multipart("big.txt", "text/plain", &over).await,
        api.upload_raw("huge.txt", "text/plain", &vec![b'a'; 1 << 20])
            .await,
    ] {
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["code"], "payload_too_large");
    }
    // A body without a length (chunked) is cut off as it streams in.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'b'; 1000])).collect();
    let response = api
        .http
        .post(format!("{}/files", api.base))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(file_count(&app).await, before, "nothing more was stored");
}

#[tokio::test]
async fn another_users_file_is_404_and_cannot_be_referenced_in_a_message() {
    let app = TestApp::start(1, |_| {}).await;
    let (alice_id, alice_token) = app.user("alice").await;
    let (_, bob_token) = app.user("bob").await;
    let alice = Api::new(&app, 0, &alice_token);
    let bob = Api::new(&app, 0, &bob_token);
    let (_, file) = alice.upload_raw("dot.png", "image/png", PNG).await;
    let id = file["id"].as_str().unwrap().to_owned();

    assert_eq!(bob.download(&id).await.status(), StatusCode::NOT_FOUND);
    let admin = Api::new(&app, 0, &app.admin_token);
    assert_eq!(
        admin.download(&id).await.status(),
        StatusCode::NOT_FOUND,
        "files are owner-only, for admins too"
    );

    // Bob cannot put Alice's file in a message: create, send, edit.
    let part = json!({"type": "file", "file_id": id, "media_type": "image/png"});
    let (status, body) = bob.post("/chats", json!({"content": [part.clone()]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_file");
    let (status, chat) = bob.post("/chats", json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let chat_uuid = chat_id.parse().unwrap();
    wait_idle(&app.db, chat_uuid).await;
    let (status, body) = bob
        .post(
            &format!("/chats/{chat_id}/messages"),
            json!({"content": [part.clone()]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let messages = common::messages(&app.db, chat_uuid).await;
    let (status, body) = bob
        .patch(
            &format!("/chats/{chat_id}/messages/{}", messages[0].id),
            json!({"content": [part.clone()]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let bogus = json!({"type": "file", "file_id": "not-a-uuid", "media_type": "image/png"});
    let (status, _) = bob.post("/chats", json!({"content": [bogus]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        common::messages(&app.db, chat_uuid).await.len(),
        messages.len(),
        "nothing was written"
    );

    // Alice can, and the stored part carries the sniffed type, whatever she wrote.
    let claimed = json!({"type": "file", "file_id": id.to_uppercase(), "media_type": "text/plain"});
    let (status, chat) = alice
        .post(
            "/chats",
            json!({"content": [{"type": "text", "text": "look"}, claimed]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let stored = common::messages(&app.db, chat["id"].as_str().unwrap().parse().unwrap()).await;
    assert_eq!(
        serde_json::to_value(&stored[0].content[1]).unwrap(),
        json!({"type": "file", "file_id": id, "media_type": "image/png", "name": "dot.png"})
    );

    // Deleted with their owner.
    let client = app.db.pool().get().await.unwrap();
    client
        .execute("DELETE FROM users WHERE id = $1", &[&alice_id])
        .await
        .unwrap();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM files WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the file went with its owner");
}

/// The body of the last turn request the mock model received (a streamed
/// one: the chat's title is asked for beside its first turn, unstreamed).
fn last_request(mock: &MockLlm) -> Value {
    mock.requests()
        .into_iter()
        .filter_map(|request| request.body)
        .rfind(|body| body["stream"] == true)
        .expect("a streamed request with a JSON body")
}

async fn attachment_reaches_the_model(wire: Wire) -> Value {
    let mock = MockLlm::start(Behaviour::default()).await.unwrap();
    let app = TestApp::start(1, |_| {}).await;
    mock_model(&app.db, &mock, wire, "test-key").await;
    let (_, token) = app.user("alice").await;
    let api = Api::new(&app, 0, &token);
    let (_, png) = api.upload_raw("dot.png", "image/png", PNG).await;
    let (_, notes) = api
        .upload_raw("notes.md", "text/plain", b"# Notes\nthe answer is 42")
        .await;
    let (_, pdf) = api
        .upload_raw("doc.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n")
        .await;
    let part = |file: &Value| json!({"type": "file", "file_id": file["id"], "media_type": file["media_type"]});
    let (status, chat) = api
        .post(
            "/chats",
            json!({"content": [
                {"type": "text", "text": "@mock {\"text\": \"seen\"}"},
                part(&png), part(&notes), part(&pdf),
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = wait_idle(&app.db, chat["id"].as_str().unwrap().parse().unwrap()).await;
    assert_eq!(chat.last_error, None);
    eventually("the model to be called", WAIT, || {
        let called = !mock.requests().is_empty();
        async move { called.then_some(()) }
    })
    .await;
    let body = last_request(&mock);
    app.shutdown().await;
    body
}

fn user_content(body: &Value) -> Vec<Value> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn an_image_part_reaches_the_model_as_an_openai_image_url() {
    use base64::Engine;
    let body = attachment_reaches_the_model(Wire::OpenAi).await;
    let content = user_content(&body);
    let png = base64::engine::general_purpose::STANDARD.encode(PNG);
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "@mock {\"text\": \"seen\"}"})
    );
    assert_eq!(
        content[1],
        json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}})
    );
    assert_eq!(
        content[2],
        json!({"type": "text", "text": "[Attached file notes.md (text/markdown)]\n# Notes\nthe answer is 42"})
    );
    let note = content[3]["text"].as_str().unwrap();
    assert!(
        note.contains("doc.pdf") && note.contains("not included"),
        "{note}"
    );
}

#[tokio::test]
async fn an_image_part_reaches_the_model_as_an_anthropic_image_block() {
    use base64::Engine;
    let body = attachment_reaches_the_model(Wire::Anthropic).await;
    let content = user_content(&body);
    let engine = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        content[1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": engine.encode(PNG)}})
    );
    assert_eq!(
        content[2],
        json!({"type": "document", "title": "notes.md", "source": {"type": "text", "media_type": "text/plain", "data": "# Notes\nthe answer is 42"}})
    );
    assert_eq!(
        content[3],
        json!({"type": "document", "title": "doc.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": engine.encode(b"%PDF-1.4\n%%EOF\n")}})
    );
}
