//! The admin API (users, tokens, providers, model configs), `/users/me` and
//! `/models`, over raw HTTP against real replicas.

mod common;

use chatd_shared::{auth_token, db::tokens, ids::UserId, testing::eventually};
use chrono::{Duration, Utc};
use common::{WAIT, app::TestApp};
use reqwest::Method;
use serde_json::{Value, json};

use Body::{Empty, Json, Raw};

/// A client of one replica with one token (or none).
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// What a request sends.
#[derive(Clone)]
enum Body {
    Empty,
    Json(Value),
    /// Not necessarily JSON at all.
    Raw(&'static str),
}

/// An answer: its status and JSON body (`null` when empty).
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    /// The body, once the status is `status`.
    #[track_caller]
    fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        self.body
    }

    /// The error code, once the status is `status`.
    #[track_caller]
    fn error(self, status: u16) -> String {
        let body = self.expect(status);
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("an error body: {body}"))
            .to_owned()
    }
}

impl Api {
    fn new(app: &TestApp, replica: usize, token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", app.url(replica)),
            token: token.map(str::to_owned),
        }
    }

    fn admin(app: &TestApp) -> Self {
        Self::new(app, 0, Some(&app.admin_token))
    }

    async fn send(&self, method: &str, path: &str, body: Body) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let body = match body {
            Empty => None,
            Json(value) => Some(value.to_string()),
            Raw(text) => Some(text.to_owned()),
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply { status, body }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, Empty).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, Empty).await
    }

    async fn json(&self, method: &str, path: &str, body: Value) -> Reply {
        self.send(method, path, Json(body)).await
    }
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// An OpenAI-compatible provider named `name`.
async fn openai_provider(admin: &Api, name: &str) -> Value {
    admin
        .json(
            "POST",
            "/admin/providers",
            json!({"name": name, "kind": "openai", "base_url": "https://llm.example.com/v1"}),
        )
        .await
        .expect(201)
}

/// A model config on `provider` with `extra` fields.
async fn model_config(admin: &Api, provider: &Value, model: &str, extra: Value) -> Value {
    let body = json!({"provider_id": provider["id"], "model": model, "context_limit": 8000});
    admin
        .json("POST", "/admin/model-configs", with(body, extra))
        .await
        .expect(201)
}

/// The display names of the default model configs.
fn defaults(configs: &Value) -> Vec<&str> {
    configs
        .as_array()
        .unwrap()
        .iter()
        .filter(|config| config["is_default"] == true)
        .map(|config| config["display_name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_me_is_the_caller() {
    let app = TestApp::start(1, |_| {}).await;
    let me = Api::admin(&app).get("/users/me").await.expect(200);
    assert_eq!(me["id"], app.admin_id.to_string());
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");

    let (member_id, member_token) = app.user("mia").await;
    let me = Api::new(&app, 0, Some(&member_token))
        .get("/users/me")
        .await
        .expect(200);
    assert_eq!(me["id"], member_id.to_string());
    assert_eq!(me["username"], "mia");
    assert_eq!(me["role"], "member");

    let anonymous = Api::new(&app, 0, None).get("/users/me").await;
    assert_eq!(anonymous.error(401), "unauthorized");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_usable_models_default_first() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let (_, member_token) = app.user("mia").await;
    let member = Api::new(&app, 0, Some(&member_token));

    let bootstrap = member.get("/models").await.expect(200);
    let models = bootstrap["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{bootstrap}");
    assert_eq!(models[0]["model"], "mock");
    assert_eq!(models[0]["is_default"], true);
    assert_eq!(models[0]["context_limit"], 100_000);

    let provider = openai_provider(&admin, "openai").await;
    let alpha = model_config(&admin, &provider, "alpha", json!({"display_name": "Alpha"})).await;
    model_config(&admin, &provider, "off", json!({"enabled": false})).await;
    let gone = model_config(&admin, &provider, "gone", json!({})).await;
    admin
        .delete(&format!("/admin/model-configs/{}", id(&gone)))
        .await
        .expect(204);
    let hidden = admin
        .json(
            "POST",
            "/admin/providers",
            json!({"name": "hidden", "kind": "mock", "base_url": "mock://", "enabled": false}),
        )
        .await
        .expect(201);
    model_config(&admin, &hidden, "on-hidden-provider", json!({})).await;

    let listed = member.get("/models").await.expect(200);
    let names: Vec<&str> = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["display_name"].as_str().unwrap())
        .collect();
    // "Alpha" sorts before "mock", but the default comes first.
    assert_eq!(names, ["mock", "Alpha"], "{listed}");
    assert_eq!(listed["models"][1]["id"], alpha["id"]);
    assert_eq!(listed["models"][1]["is_default"], false);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_lifecycle_never_shows_the_key() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let secret = "sk-very-secret-key";

    let created = admin
        .json(
            "POST",
            "/admin/providers",
            json!({"name": " vllm ", "kind": "openai", "base_url": "http://127.0.0.1:8000/v1",
                   "api_key": secret}),
        )
        .await
        .expect(201);
    assert!(!created.to_string().contains(secret), "{created}");
    assert_eq!(created["name"], "vllm");
    assert_eq!(created["has_api_key"], true);
    assert_eq!(created["enabled"], true);
    let path = format!("/admin/providers/{}", id(&created));
    assert_eq!(admin.get(&path).await.expect(200), created);

    let listed = admin.get("/admin/providers").await.expect(200);
    assert!(!listed.to_string().contains(secret), "{listed}");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|provider| provider["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mock", "vllm"]);

    let renamed = admin
        .json(
            "PATCH",
            &path,
            json!({"name": "claude", "kind": "anthropic", "base_url": "https://api.anthropic.com"}),
        )
        .await
        .expect(200);
    assert_eq!(renamed["name"], "claude");
    assert_eq!(renamed["kind"], "anthropic");
    assert_eq!(renamed["base_url"], "https://api.anthropic.com");
    assert_eq!(renamed["has_api_key"], true, "a key left out stays");

    let to_env = admin
        .json(
            "PATCH",
            &path,
            json!({"api_key": null, "api_key_env": "ANTHROPIC_API_KEY"}),
        )
        .await
        .expect(200);
    assert_eq!(to_env["has_api_key"], false);
    assert_eq!(to_env["api_key_env"], "ANTHROPIC_API_KEY");
    let both = admin.json("PATCH", &path, json!({"api_key": secret})).await;
    assert_eq!(both.error(422), "invalid_api_key");
    let disabled = admin
        .json("PATCH", &path, json!({"enabled": false}))
        .await
        .expect(200);
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["api_key_env"], "ANTHROPIC_API_KEY");
    assert_eq!(admin.get(&path).await.expect(200), disabled);

    let taken = admin.json("PATCH", &path, json!({"name": "mock"})).await;
    assert_eq!(taken.error(409), "name_taken");

    let config = model_config(&admin, &disabled, "claude-x", json!({})).await;
    assert_eq!(admin.delete(&path).await.error(409), "provider_in_use");
    admin
        .delete(&format!("/admin/model-configs/{}", id(&config)))
        .await
        .expect(204);
    // Its deleted model config named by no chat goes with it.
    admin.delete(&path).await.expect(204);
    assert_eq!(admin.get(&path).await.error(404), "not_found");
    assert_eq!(admin.delete(&path).await.error(404), "not_found");
    assert_eq!(
        admin.json("PATCH", &path, json!({})).await.error(404),
        "not_found"
    );
    let listed = admin.get("/admin/providers").await.expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_stays_while_old_chats_name_its_deleted_models() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let provider = openai_provider(&admin, "old").await;
    let config = model_config(&admin, &provider, "old-model", json!({})).await;
    admin
        .json("POST", "/chats", json!({"model_config_id": config["id"]}))
        .await
        .expect(201);
    admin
        .delete(&format!("/admin/model-configs/{}", id(&config)))
        .await
        .expect(204);

    let path = format!("/admin/providers/{}", id(&provider));
    assert_eq!(admin.delete(&path).await.error(409), "provider_in_use");
    assert_eq!(admin.get(&path).await.expect(200), provider);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_config_lifecycle_keeps_exactly_one_default() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let provider = openai_provider(&admin, "openai").await;

    let a = model_config(
        &admin,
        &provider,
        "gpt-a",
        json!({"display_name": "A", "is_default": true, "max_output_tokens": 1000,
               "compaction_threshold_pct": 80, "price_input_micros_per_mtok": 2_500_000,
               "options": {"temperature": 0.2}}),
    )
    .await;
    assert_eq!(a["is_default"], true);
    assert_eq!(a["model"], "gpt-a");
    assert_eq!(a["context_limit"], 8000);
    assert_eq!(a["max_output_tokens"], 1000);
    assert_eq!(a["compaction_threshold_pct"], 80);
    assert_eq!(a["price_input_micros_per_mtok"], 2_500_000);
    assert_eq!(a["price_output_micros_per_mtok"], Value::Null);
    assert_eq!(a["options"], json!({"temperature": 0.2}));
    let a_path = format!("/admin/model-configs/{}", id(&a));
    assert_eq!(admin.get(&a_path).await.expect(200), a);
    let listed = admin.get("/admin/model-configs").await.expect(200);
    assert_eq!(defaults(&listed), ["A"], "the bootstrap default gave way");

    let b = model_config(&admin, &provider, "gpt-b", json!({})).await;
    assert_eq!(b["display_name"], "gpt-b", "defaults to the model name");
    assert_eq!(b["is_default"], false);
    assert_eq!(b["max_output_tokens"], 4096);
    assert_eq!(b["compaction_threshold_pct"], 70);
    assert_eq!(b["options"], json!({}));
    let b_path = format!("/admin/model-configs/{}", id(&b));

    let b = admin
        .json(
            "PATCH",
            &b_path,
            json!({"is_default": true, "display_name": "B", "price_output_micros_per_mtok": 10,
                   "options": {"reasoning_effort": "low"}}),
        )
        .await
        .expect(200);
    assert_eq!(b["is_default"], true);
    assert_eq!(b["display_name"], "B");
    assert_eq!(b["price_output_micros_per_mtok"], 10);
    assert_eq!(b["options"], json!({"reasoning_effort": "low"}));
    let listed = admin.get("/admin/model-configs").await.expect(200);
    assert_eq!(defaults(&listed), ["B"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    let refused = admin
        .json("PATCH", &b_path, json!({"is_default": false}))
        .await;
    assert_eq!(refused.error(422), "invalid_is_default");
    let a = admin
        .json(
            "PATCH",
            &a_path,
            json!({"price_input_micros_per_mtok": null, "enabled": false, "context_limit": 4000}),
        )
        .await
        .expect(200);
    assert_eq!(a["price_input_micros_per_mtok"], Value::Null);
    assert_eq!(a["enabled"], false);
    assert_eq!(a["context_limit"], 4000);
    assert_eq!(a["max_output_tokens"], 1000, "fields left out stay");
    assert_eq!(a["is_default"], false);

    admin.delete(&b_path).await.expect(204);
    assert_eq!(admin.get(&b_path).await.error(404), "not_found");
    assert_eq!(
        admin
            .json("PATCH", &b_path, json!({"is_default": true}))
            .await
            .error(404),
        "not_found"
    );
    assert_eq!(admin.delete(&b_path).await.error(404), "not_found");
    let listed = admin.get("/admin/model-configs").await.expect(200);
    assert!(
        defaults(&listed).is_empty(),
        "the deleted default took it along"
    );
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    admin
        .json("PATCH", &a_path, json!({"is_default": true}))
        .await
        .expect(200);
    let listed = admin.get("/admin/model-configs").await.expect(200);
    assert_eq!(defaults(&listed), ["A"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_on_every_replica() {
    let app = TestApp::start(2, |_| {}).await;
    let admin = Api::admin(&app);
    let user = admin
        .json("POST", "/admin/users", json!({"username": "  rita  "}))
        .await
        .expect(201);
    assert_eq!(user["username"], "rita");
    assert_eq!(user["role"], "member");
    let user_path = format!("/admin/users/{}", id(&user));
    assert_eq!(admin.get(&user_path).await.expect(200), user);
    let users = admin.get("/admin/users").await.expect(200);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "rita"]);

    let created = admin
        .json(
            "POST",
            &format!("{user_path}/tokens"),
            json!({"name": "laptop"}),
        )
        .await
        .expect(201);
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(auth_token::looks_valid(&secret), "{secret}");
    assert_eq!(created["name"], "laptop");
    assert_eq!(created["user_id"], user["id"]);
    assert_eq!(created["prefix"], auth_token::display_prefix(&secret));
    assert_eq!(created["revoked_at"], Value::Null);

    let replicas = [
        Api::new(&app, 0, Some(&secret)),
        Api::new(&app, 1, Some(&secret)),
    ];
    for replica in &replicas {
        // Each replica now has the token in its cache.
        let me = replica.get("/users/me").await.expect(200);
        assert_eq!(me["username"], "rita");
    }
    let listed = admin.get(&format!("{user_path}/tokens")).await.expect(200);
    assert!(!listed.to_string().contains(&secret), "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);

    let token_path = format!("{user_path}/tokens/{}", id(&created));
    let someone_elses = format!("/admin/users/{}/tokens/{}", app.admin_id, id(&created));
    assert_eq!(admin.delete(&someone_elses).await.error(404), "not_found");
    replicas[1].get("/users/me").await.expect(200);

    admin.delete(&token_path).await.expect(204);
    assert_eq!(
        replicas[0].get("/users/me").await.error(401),
        "unauthorized"
    );
    // The other replica's cache entry would live a minute: only the notice
    // empties it within the wait.
    eventually("the other replica to refuse the token", WAIT, || async {
        (replicas[1].get("/users/me").await.status == 401).then_some(())
    })
    .await;
    assert_eq!(admin.delete(&token_path).await.error(404), "not_found");
    let listed = admin.get(&format!("{user_path}/tokens")).await.expect(200);
    assert!(listed[0]["revoked_at"].is_string(), "{listed}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let (user_id, _) = app.user("eve").await;

    let secret = auth_token::generate();
    let client = app.db.pool().get().await.unwrap();
    tokens::insert(
        &client,
        &tokens::NewApiToken {
            user_id,
            name: "old",
            token_hash: &auth_token::hash(&secret),
            prefix: &auth_token::display_prefix(&secret),
            expires_at: Some(Utc::now() - Duration::minutes(1)),
        },
    )
    .await
    .unwrap();
    drop(client);
    let expired = Api::new(&app, 0, Some(&secret)).get("/users/me").await;
    assert_eq!(expired.error(401), "unauthorized");

    // A token that expires while cached stops working at its expiry too.
    let soon = Utc::now() + Duration::seconds(5);
    let created = admin
        .json(
            "POST",
            &format!("/admin/users/{user_id}/tokens"),
            json!({"expires_at": soon}),
        )
        .await
        .expect(201);
    assert_eq!(created["name"], "");
    let expiring = Api::new(&app, 0, created["token"].as_str());
    expiring.get("/users/me").await.expect(200);
    eventually("the token to expire", WAIT, || async {
        (expiring.get("/users/me").await.status == 401).then_some(())
    })
    .await;
    assert!(Utc::now() >= soon, "refused before its expiry");
    app.shutdown().await;
}

/// Every admin route, with a body an admin could send.
fn admin_routes(
    user: UserId,
    provider: &str,
    config: &str,
    token: &str,
) -> Vec<(&'static str, String, Body)> {
    let user_path = format!("/admin/users/{user}");
    let provider_path = format!("/admin/providers/{provider}");
    let config_path = format!("/admin/model-configs/{config}");
    let new_provider = json!({"name": "sneaky", "kind": "mock", "base_url": "mock://"});
    let new_config = json!({"provider_id": provider, "model": "sneaky", "context_limit": 1});
    let disable = json!({"enabled": false});
    vec![
        ("GET", "/admin/users".into(), Empty),
        (
            "POST",
            "/admin/users".into(),
            Json(json!({"username": "sneaky"})),
        ),
        ("GET", user_path.clone(), Empty),
        ("GET", format!("{user_path}/tokens"), Empty),
        ("POST", format!("{user_path}/tokens"), Json(json!({}))),
        ("DELETE", format!("{user_path}/tokens/{token}"), Empty),
        ("GET", "/admin/providers".into(), Empty),
        ("POST", "/admin/providers".into(), Json(new_provider)),
        ("GET", provider_path.clone(), Empty),
        ("PATCH", provider_path.clone(), Json(disable.clone())),
        ("DELETE", provider_path, Empty),
        ("GET", "/admin/model-configs".into(), Empty),
        ("POST", "/admin/model-configs".into(), Json(new_config)),
        ("GET", config_path.clone(), Empty),
        ("PATCH", config_path.clone(), Json(disable)),
        ("DELETE", config_path, Empty),
    ]
}

/// What the admin routes show, so that a write would show here: users,
/// `user`'s tokens, providers and model configs. Tokens' `last_used_at` is
/// left out: using a token (as every request does) updates it.
async fn snapshot(admin: &Api, user: UserId) -> Value {
    let mut tokens = admin
        .get(&format!("/admin/users/{user}/tokens"))
        .await
        .expect(200);
    for token in tokens.as_array_mut().unwrap() {
        token.as_object_mut().unwrap().remove("last_used_at");
    }
    json!({
        "users": admin.get("/admin/users").await.expect(200),
        "tokens": tokens,
        "providers": admin.get("/admin/providers").await.expect(200),
        "model_configs": admin.get("/admin/model-configs").await.expect(200),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_strangers_cannot_use_admin_routes() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let (_, member_token) = app.user("mia").await;
    let member = Api::new(&app, 0, Some(&member_token));
    let anonymous = Api::new(&app, 0, None);
    let (target, _) = app.user("bob").await;
    let token = id(&admin
        .get(&format!("/admin/users/{target}/tokens"))
        .await
        .expect(200)[0]);
    let provider = id(&openai_provider(&admin, "openai").await);
    let config = id(&admin.get("/admin/model-configs").await.expect(200)[0]);
    let before = snapshot(&admin, target).await;

    for (method, path, body) in admin_routes(target, &provider, &config, &token) {
        for (caller, status, code) in [
            (&member, 403, "forbidden"),
            (&anonymous, 401, "unauthorized"),
        ] {
            let reply = caller.send(method, &path, body.clone()).await;
            assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
            assert_eq!(reply.body["error"]["code"], code, "{method} {path}");
        }
    }
    // Refused before the path is read.
    let bad_id = member.get("/admin/users/not-a-uuid").await;
    assert_eq!(bad_id.error(403), "forbidden");
    assert_eq!(snapshot(&admin, target).await, before);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_and_token_input_writes_nothing() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let (user, _) = app.user("taken").await;
    let before = snapshot(&admin, user).await;
    let stranger = UserId::new_random();
    let create_user = |body, status, code| refusal("POST", "/admin/users", body, status, code);
    let tokens = format!("/admin/users/{user}/tokens");
    let create_token = |body, status, code| refusal("POST", &tokens, body, status, code);
    let long_name = "n".repeat(129);
    let past = Utc::now() - Duration::seconds(1);

    let refusals = [
        create_user(Raw("{\"username\": "), 400, "malformed_json"),
        create_user(
            Json(json!({"username": "x", "admin": true})),
            400,
            "invalid_body",
        ),
        create_user(Json(json!({"username": 7})), 400, "invalid_body"),
        create_user(
            Json(json!({"username": "x", "role": "owner"})),
            400,
            "invalid_body",
        ),
        create_user(Json(json!({"username": "   "})), 422, "invalid_username"),
        create_user(
            Json(json!({"username": "a\u{7}b"})),
            422,
            "invalid_username",
        ),
        create_user(
            Json(json!({"username": "x".repeat(65)})),
            422,
            "invalid_username",
        ),
        create_user(Json(json!({"username": " taken "})), 409, "username_taken"),
        create_token(Raw("{"), 400, "malformed_json"),
        create_token(Json(json!({"scope": "all"})), 400, "invalid_body"),
        create_token(Json(json!({"expires_at": "tomorrow"})), 400, "invalid_body"),
        create_token(Json(json!({"expires_at": past})), 422, "invalid_expires_at"),
        create_token(Json(json!({"name": long_name})), 422, "invalid_name"),
        refusal(
            "POST",
            "/admin/users/1/tokens",
            Json(json!({})),
            400,
            "invalid_path",
        ),
        refusal(
            "POST",
            &format!("/admin/users/{stranger}/tokens"),
            Json(json!({})),
            404,
            "not_found",
        ),
        refusal("GET", "/admin/users/not-a-uuid", Empty, 400, "invalid_path"),
        refusal(
            "GET",
            &format!("/admin/users/{stranger}"),
            Empty,
            404,
            "not_found",
        ),
        refusal(
            "GET",
            &format!("/admin/users/{stranger}/tokens"),
            Empty,
            404,
            "not_found",
        ),
        refusal(
            "DELETE",
            &format!("{tokens}/not-a-uuid"),
            Empty,
            400,
            "invalid_path",
        ),
        refusal(
            "DELETE",
            &format!("{tokens}/{stranger}"),
            Empty,
            404,
            "not_found",
        ),
    ];
    check_refusals(&admin, refusals).await;
    assert_eq!(snapshot(&admin, user).await, before);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_provider_input_writes_nothing() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let provider = openai_provider(&admin, "openai").await;
    let path = format!("/admin/providers/{}", id(&provider));
    let before = snapshot(&admin, app.admin_id).await;
    let create = |fields: Value, status, code| {
        let body = with(
            json!({"name": "new", "kind": "openai", "base_url": "https://x.example/v1"}),
            fields,
        );
        refusal("POST", "/admin/providers", Json(body), status, code)
    };
    let update = |body, status, code| refusal("PATCH", &path, body, status, code);

    let refusals = [
        refusal(
            "POST",
            "/admin/providers",
            Raw("{\"name\": \"x\",}"),
            400,
            "malformed_json",
        ),
        create(json!({"region": "eu"}), 400, "invalid_body"),
        create(json!({"kind": "gemini"}), 400, "invalid_body"),
        create(json!({"enabled": "yes"}), 400, "invalid_body"),
        create(json!({"name": ""}), 422, "invalid_name"),
        create(json!({"name": "openai"}), 409, "name_taken"),
        create(
            json!({"base_url": "api.openai.com/v1"}),
            422,
            "invalid_base_url",
        ),
        create(
            json!({"base_url": "ftp://x.example"}),
            422,
            "invalid_base_url",
        ),
        create(json!({"base_url": "mock://"}), 422, "invalid_base_url"),
        create(json!({"kind": "mock"}), 422, "invalid_base_url"),
        create(
            json!({"kind": "mock", "base_url": "mock://?tokens=many"}),
            422,
            "invalid_base_url",
        ),
        create(
            json!({"api_key": "k", "api_key_env": "K"}),
            422,
            "invalid_api_key",
        ),
        create(json!({"api_key": " "}), 422, "invalid_api_key"),
        create(json!({"api_key_env": "1KEY"}), 422, "invalid_api_key_env"),
        update(Raw("nope"), 400, "malformed_json"),
        update(Json(json!({"api_key_file": "/k"})), 400, "invalid_body"),
        update(Json(json!({"enabled": 1})), 400, "invalid_body"),
        update(Json(json!({"name": "mock"})), 409, "name_taken"),
        update(Json(json!({"name": " "})), 422, "invalid_name"),
        update(
            Json(json!({"base_url": "mock://"})),
            422,
            "invalid_base_url",
        ),
        update(Json(json!({"kind": "mock"})), 422, "invalid_base_url"),
        update(Json(json!({"api_key_env": ""})), 422, "invalid_api_key_env"),
        refusal(
            "PATCH",
            "/admin/providers/1",
            Json(json!({})),
            400,
            "invalid_path",
        ),
        refusal("DELETE", "/admin/providers/1", Empty, 400, "invalid_path"),
        refusal("GET", "/admin/providers/1", Empty, 400, "invalid_path"),
    ];
    check_refusals(&admin, refusals).await;
    assert_eq!(snapshot(&admin, app.admin_id).await, before);
    assert_eq!(admin.get(&path).await.expect(200), provider);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_config_input_writes_nothing() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let provider = openai_provider(&admin, "openai").await;
    let config = model_config(&admin, &provider, "gpt", json!({})).await;
    let path = format!("/admin/model-configs/{}", id(&config));
    let before = snapshot(&admin, app.admin_id).await;
    let create = |fields: Value, status, code| {
        let body = with(
            json!({"provider_id": provider["id"], "model": "m", "context_limit": 1000}),
            fields,
        );
        refusal("POST", "/admin/model-configs", Json(body), status, code)
    };
    let update = |body, status, code| refusal("PATCH", &path, body, status, code);
    let unknown = UserId::new_random();

    let refusals = [
        refusal(
            "POST",
            "/admin/model-configs",
            Raw("{\"model\": "),
            400,
            "malformed_json",
        ),
        create(json!({"temperature": 1}), 400, "invalid_body"),
        create(json!({"context_limit": "big"}), 400, "invalid_body"),
        create(json!({"provider_id": "not-a-uuid"}), 400, "invalid_body"),
        create(json!({"provider_id": unknown}), 422, "invalid_provider"),
        create(json!({"model": " "}), 422, "invalid_model"),
        create(json!({"display_name": ""}), 422, "invalid_display_name"),
        create(json!({"context_limit": 0}), 422, "invalid_context_limit"),
        create(
            json!({"max_output_tokens": 0}),
            422,
            "invalid_max_output_tokens",
        ),
        create(
            json!({"compaction_threshold_pct": 0}),
            422,
            "invalid_compaction_threshold_pct",
        ),
        create(
            json!({"compaction_threshold_pct": 101}),
            422,
            "invalid_compaction_threshold_pct",
        ),
        create(
            json!({"price_cache_write_micros_per_mtok": -1}),
            422,
            "invalid_price",
        ),
        create(json!({"options": [1]}), 422, "invalid_options"),
        update(Raw("{\"enabled\": tru}"), 400, "malformed_json"),
        update(Json(json!({"model": "other"})), 400, "invalid_body"),
        update(Json(json!({"context_limit": 1.5})), 400, "invalid_body"),
        update(
            Json(json!({"is_default": false})),
            422,
            "invalid_is_default",
        ),
        update(
            Json(json!({"context_limit": -5})),
            422,
            "invalid_context_limit",
        ),
        update(
            Json(json!({"price_input_micros_per_mtok": -1})),
            422,
            "invalid_price",
        ),
        update(Json(json!({"options": "fast"})), 422, "invalid_options"),
        update(
            Json(json!({"display_name": "\n"})),
            422,
            "invalid_display_name",
        ),
        refusal(
            "PATCH",
            "/admin/model-configs/1",
            Json(json!({})),
            400,
            "invalid_path",
        ),
        refusal(
            "DELETE",
            "/admin/model-configs/1",
            Empty,
            400,
            "invalid_path",
        ),
        refusal("GET", "/admin/model-configs/1", Empty, 400, "invalid_path"),
    ];
    check_refusals(&admin, refusals).await;
    assert_eq!(snapshot(&admin, app.admin_id).await, before);
    assert_eq!(admin.get(&path).await.expect(200), config);
    app.shutdown().await;
}

/// A request that must be refused, with the status and error code expected.
struct Refusal {
    method: &'static str,
    path: String,
    body: Body,
    status: u16,
    code: &'static str,
}

fn refusal(
    method: &'static str,
    path: &str,
    body: Body,
    status: u16,
    code: &'static str,
) -> Refusal {
    Refusal {
        method,
        path: path.to_owned(),
        body,
        status,
        code,
    }
}

/// `body` with `fields` added or replaced.
fn with(mut body: Value, fields: Value) -> Value {
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    body
}

/// Sends each request and checks it is refused as expected.
async fn check_refusals(admin: &Api, refusals: impl IntoIterator<Item = Refusal>) {
    for Refusal {
        method,
        path,
        body,
        status,
        code,
    } in refusals
    {
        let reply = admin.send(method, &path, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert_eq!(
            reply.body["error"]["code"], code,
            "{method} {path}: {}",
            reply.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_the_admin_user_and_model_routes() {
    let app = TestApp::start(1, |_| {}).await;
    let spec = Api::new(&app, 0, None)
        .get("/openapi.json")
        .await
        .expect(200);
    let routes = [
        ("/users/me", &["get"][..], "users"),
        ("/models", &["get"], "models"),
        ("/admin/users", &["get", "post"], "admin"),
        ("/admin/users/{id}", &["get"], "admin"),
        ("/admin/users/{id}/tokens", &["get", "post"], "admin"),
        ("/admin/users/{id}/tokens/{token_id}", &["delete"], "admin"),
        ("/admin/providers", &["get", "post"], "admin"),
        (
            "/admin/providers/{id}",
            &["get", "patch", "delete"],
            "admin",
        ),
        ("/admin/model-configs", &["get", "post"], "admin"),
        (
            "/admin/model-configs/{id}",
            &["get", "patch", "delete"],
            "admin",
        ),
    ];
    for (path, methods, tag) in routes {
        let item = &spec["paths"][format!("/api/v1{path}")];
        for method in methods {
            assert_eq!(item[method]["tags"][0], tag, "{method} {path}: {item}");
        }
    }
    for schema in [
        "User",
        "Token",
        "TokenCreated",
        "Provider",
        "UpdateProvider",
        "ModelConfig",
        "ModelList",
    ] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_admins_can_administer() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = Api::admin(&app);
    let second = admin
        .json(
            "POST",
            "/admin/users",
            json!({"username": "root", "role": "admin"}),
        )
        .await
        .expect(201);
    assert_eq!(second["role"], "admin");
    let token = admin
        .json(
            "POST",
            &format!("/admin/users/{}/tokens", id(&second)),
            json!({}),
        )
        .await
        .expect(201);
    let second = Api::new(&app, 0, token["token"].as_str());
    second.get("/admin/users").await.expect(200);
    app.shutdown().await;
}
