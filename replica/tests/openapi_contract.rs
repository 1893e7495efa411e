//! The API contract: `/api/v1/openapi.json` describes what the API does.
//!
//! Schemathesis (PyPI, pinned by `schemathesis-requirements.txt`, settings
//! and their reasons in `schemathesis.toml`) sends schema-valid and
//! schema-violating requests to a replica and checks every answer against
//! the document: statuses, bodies, refusals. `.ci/run` installs it under
//! `target/schemathesis`; `CHATD_SCHEMATHESIS` names another binary. The
//! other tests are the bugs it found, kept found.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chatd_shared::{status::UserRole, testing::eventually};
use common::{
    WAIT,
    app::{TestApp, say, user_with_token},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The pinned seed: the same requests on every run.
const SEED: &str = "1";
/// Test cases per operation and phase: about a minute on two cores.
const MAX_EXAMPLES: &str = "30";
/// Longest one schemathesis run may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A client of one replica acting with one token, answering status and JSON.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(app: &TestApp, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", app.url(0)),
            token: token.to_owned(),
        }
    }

    /// Sends `body` (raw JSON text) to `path`.
    async fn send(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("the replica answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

/// The schemathesis to run, at the pinned version.
fn schemathesis() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let binary = std::env::var_os("CHATD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests.join("../../target/schemathesis/bin/schemathesis"));
    let pins = std::fs::read_to_string(tests.join("schemathesis-requirements.txt"))
        .expect("schemathesis-requirements.txt");
    let pinned = pins
        .lines()
        .find_map(|line| line.strip_prefix("schemathesis=="))
        .expect("schemathesis is pinned");
    let install = "install it as .ci/run does: python3 -m venv target/schemathesis && \
         target/schemathesis/bin/pip install -r replica/tests/schemathesis-requirements.txt \
         (or name one in CHATD_SCHEMATHESIS)";
    let version = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}; {install}", binary.display()));
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.trim().ends_with(pinned),
        "{} is {version}, not the pinned {pinned}; {install}",
        binary.display()
    );
    binary
}

/// The ids schemathesis needs that the schema cannot give it (see
/// `schemathesis.toml`).
struct Fixtures {
    model: String,
    provider: String,
    spare_user: String,
    spare_token: String,
}

async fn fixtures(app: &TestApp, admin: &Api) -> Fixtures {
    let model = admin.get("/models").await["models"][0]["id"].clone();
    let provider = admin.get("/admin/providers").await[0]["id"].clone();
    let (spare_user, _) = user_with_token(&app.db, "spare", UserRole::Member).await;
    let tokens = admin
        .get(&format!("/admin/users/{spare_user}/tokens"))
        .await;
    let text = |value: &Value| value.as_str().expect("an id").to_owned();
    Fixtures {
        model: text(&model),
        provider: text(&provider),
        spare_user: spare_user.to_string(),
        spare_token: text(&tokens[0]["id"]),
    }
}

/// Runs schemathesis on the operations `filter` selects, as `token`;
/// panics with its report when it finds anything.
async fn run_schemathesis(
    binary: &Path,
    app: &TestApp,
    fixtures: &Fixtures,
    token: &str,
    filter: [&str; 2],
) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    // Its working directory is its own: schemathesis may write caches there.
    let scratch = std::env::temp_dir().join(format!("chatd-schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .args(["run", &format!("{}/api/v1/openapi.json", app.url(0))])
        .args([
            "--checks",
            "all",
            "--seed",
            SEED,
            "--max-examples",
            MAX_EXAMPLES,
        ])
        .args(["--generation-database", "none"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(filter)
        .env("CHATD_CONTRACT_MODEL", &fixtures.model)
        .env("CHATD_CONTRACT_PROVIDER", &fixtures.provider)
        .env("CHATD_CONTRACT_SPARE_USER", &fixtures.spare_user)
        .env("CHATD_CONTRACT_SPARE_TOKEN", &fixtures.spare_token)
        .current_dir(&scratch)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {RUN_LIMIT:?}"))
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        output.status.success(),
        "schemathesis found what the document does not say ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_the_document_does_not_say() {
    let binary = schemathesis();
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::new(&app, &app.admin_token);
    let fixtures = fixtures(&app, &admin).await;
    let (_, member) = app.user("member").await;
    // A member first, on everything but the admin routes (an admin could
    // delete the model the chats use). Then an admin, on the admin routes.
    let admin_routes = "^/api/v1/admin/";
    run_schemathesis(
        &binary,
        &app,
        &fixtures,
        &member,
        ["--exclude-path-regex", admin_routes],
    )
    .await;
    run_schemathesis(
        &binary,
        &app,
        &fixtures,
        &app.admin_token,
        ["--include-path-regex", admin_routes],
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_what_every_route_shares() {
    let app = TestApp::start(1, |_| {}).await;
    let document = Api::new(&app, &app.admin_token).get("/openapi.json").await;
    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    assert_eq!(document["security"], json!([{"bearer": []}]));
    let schemas = &document["components"]["schemas"];
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                schemas[reference.trim_start_matches("#/components/schemas/")].clone()
            }
            None => schema.clone(),
        }
    };
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            operations += 1;
            let route = format!("{method} {path}");
            let responses = &operation["responses"];
            for status in ["401", "503"] {
                assert!(responses[status].is_object(), "{route}: no {status}");
            }
            if path.starts_with("/api/v1/admin/") {
                assert!(responses["403"].is_object(), "{route}: no 403");
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert!(responses["400"].is_object(), "{route}: no 400");
                let schema = resolve(&parameter["schema"]);
                match parameter["in"].as_str() {
                    Some("path") => assert!(
                        matches!(schema["format"].as_str(), Some("uuid" | "int64")),
                        "{route}: path parameter {parameter} has no format"
                    ),
                    Some("query") => assert_eq!(
                        schema["additionalProperties"], false,
                        "{route}: unknown query parameters are refused"
                    ),
                    _ => {}
                }
            }
            if let Some(body) = operation["requestBody"].as_object() {
                for status in ["400", "413", "415"] {
                    assert!(responses[status].is_object(), "{route}: no {status}");
                }
                // JSON bodies; an upload's body is the file's bytes.
                if let Some(json) = body["content"].get("application/json") {
                    let schema = resolve(&json["schema"]);
                    let fields = schema["allOf"].get(0).map(&resolve).unwrap_or(schema);
                    assert_eq!(
                        fields["additionalProperties"], false,
                        "{route}: unknown body fields are refused"
                    );
                }
            }
            for (status, response) in responses.as_object().expect("responses") {
                let described = response["$ref"].is_string()
                    || response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty());
                assert!(described, "{route}: {status} has no description");
            }
        }
    }
    assert_eq!(operations, 58, "every route is in the document");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_the_database_cannot_store_is_refused_not_failed() {
    let app = TestApp::start(1, |_| {}).await;
    let api = Api::new(&app, &app.admin_token);
    let (_, created) = api.send(Method::POST, "/chats", Some("{}")).await;
    let chat = format!("/chats/{}", created["id"].as_str().expect("a chat"));
    let refused = [
        (Method::POST, "/chats".to_owned(), r#"{"text": "a\u0000b"}"#),
        (Method::POST, "/chats".to_owned(), r#"{"title": "\u0000"}"#),
        (
            Method::POST,
            "/chats".to_owned(),
            r#"{"system_prompt": "\u0000"}"#,
        ),
        (
            Method::POST,
            "/chats".to_owned(),
            r#"{"labels": {"a": ["\u0000"]}}"#,
        ),
        (Method::PATCH, chat.clone(), r#"{"labels": {"\u0000": 1}}"#),
        (
            Method::POST,
            format!("{chat}/messages"),
            r#"{"content": [{"type": "source", "url": "\u0000"}]}"#,
        ),
        (
            Method::POST,
            "/admin/users".to_owned(),
            r#"{"username": "a\u0000"}"#,
        ),
    ];
    for (method, path, body) in refused {
        let (status, answer) = api.send(method.clone(), &path, Some(body)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {answer}"
        );
        assert_eq!(answer["error"]["code"], "invalid_body", "{answer}");
    }
    // An escaped backslash before `u0000` is text like any other.
    let (status, answer) = api
        .send(Method::PATCH, &chat, Some(r#"{"title": "a\\u0000b"}"#))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["title"], "a\\u0000b");
    assert_eq!(
        api.get("/chats").await["chats"].as_array().map(Vec::len),
        Some(1)
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_a_json_object_not_an_array_of_its_fields() {
    let app = TestApp::start(1, |_| {}).await;
    let api = Api::new(&app, &app.admin_token);
    for (path, body) in [
        ("/chats", "[null, null]"),
        ("/admin/users", r#"["x", null]"#),
    ] {
        let (status, answer) = api.send(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_body", "{answer}");
    }
    assert_eq!(api.get("/chats").await["chats"], json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_with_the_largest_numbers_are_read_back_and_the_chat_runs() {
    let app = TestApp::start(1, |_| {}).await;
    let api = Api::new(&app, &app.admin_token);
    // PostgreSQL writes these out in full (309 digits); reading them back
    // once overflowed, failing every listing and every claim of the chat.
    let labels =
        r#"{"max": 1.7976931348623157e308, "min": -1.7976931348623157e308, "tiny": 5e-324}"#;
    let text = json!(say(json!({"text": "ok"})));
    let body = format!(r#"{{"labels": {labels}, "text": {text}}}"#);
    let (status, created) = api.send(Method::POST, "/chats", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let expected: Value = serde_json::from_str(labels).expect("labels");
    assert_eq!(created["labels"], expected);
    assert_eq!(api.get("/chats").await["chats"][0]["labels"], expected);
    let path = format!("/chats/{}", created["id"].as_str().expect("an id"));
    eventually("the chat to run its turn", WAIT, || async {
        (api.get(&path).await["status"] == "waiting").then_some(())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_may_be_sent_with_a_zero_fraction() {
    let app = TestApp::start(1, |_| {}).await;
    let api = Api::new(&app, &app.admin_token);
    let provider = api.get("/admin/providers").await[0]["id"].clone();
    let body = |context_limit: &str| {
        format!(
            r#"{{"provider_id": {provider}, "model": "m", "context_limit": {context_limit}, "max_output_tokens": 100.0}}"#
        )
    };
    let (status, created) = api
        .send(Method::POST, "/admin/model-configs", Some(&body("4096.0")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (&created["context_limit"], &created["max_output_tokens"]),
        (&json!(4096), &json!(100))
    );
    for refused in ["4096.5", "1e10", "\"4096\""] {
        let (status, answer) = api
            .send(Method::POST, "/admin/model-configs", Some(&body(refused)))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_body", "{answer}");
    }
    app.shutdown().await;
}
