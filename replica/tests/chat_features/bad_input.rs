//! Bad input on every new route gets the right status and writes nothing.

use chatd_shared::client::{Client, RawBody};
use reqwest::Method;
use serde_json::{Value, json};

use super::{common::Wire, fixture::ModelSpec, fixture::Setup};

/// A request and the answer it must get: who sends it, the method, the
/// path, the body, the status and the error code.
type Case<'a> = (&'a Client, Method, String, Option<Value>, u16, &'static str);

/// Sends `body` to `path` with `method`; the status and error code.
async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
    let response = client
        .raw(method, path, body.map(RawBody::Json), &[])
        .await
        .expect("an answer");
    let code = response.error().map(|e| e.code).unwrap_or_default();
    (response.status.as_u16(), code)
}

#[tokio::test]
async fn bad_input_on_every_new_route_is_refused_and_writes_nothing() {
    let setup = Setup::start(1, Wire::OpenAi, ModelSpec::default(), |_, _| {}).await;
    let admin = setup.app.admin(0);
    let (member_id, token) = setup.app.user("member").await;
    let member = setup.app.client(0, &token);
    admin.set_system_prompt("Kept.").await.unwrap();
    member.set_my_prompt("Mine.").await.unwrap();

    let put = Method::PUT;
    let get = Method::GET;
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<Case> = vec![
        // System prompts.
        (
            &member,
            get.clone(),
            "/admin/system-prompt".into(),
            None,
            403,
            "forbidden",
        ),
        (
            &member,
            put.clone(),
            "/admin/system-prompt".into(),
            Some(json!({"system_prompt": "x"})),
            403,
            "forbidden",
        ),
        (
            &admin,
            put.clone(),
            "/admin/system-prompt".into(),
            Some(json!({"system_prompt": 5})),
            400,
            "invalid_body",
        ),
        (
            &admin,
            put.clone(),
            "/admin/system-prompt".into(),
            Some(json!({"system_prompt": "x", "extra": 1})),
            400,
            "invalid_body",
        ),
        (
            &admin,
            put.clone(),
            "/admin/system-prompt".into(),
            Some(json!({})),
            400,
            "invalid_body",
        ),
        (
            &admin,
            put.clone(),
            "/admin/system-prompt".into(),
            Some(json!({"system_prompt": long(100_001)})),
            422,
            "invalid_system_prompt",
        ),
        (
            &admin,
            put.clone(),
            "/admin/system-prompt".into(),
            Some(json!({"system_prompt": "a\u{0}b"})),
            400,
            "invalid_body",
        ),
        (
            &admin,
            put.clone(),
            "/admin/system-prompt".into(),
            Some(json!({"system_prompt": long(1_100_000)})),
            413,
            "payload_too_large",
        ),
        (
            &member,
            put.clone(),
            "/users/me/prompt".into(),
            Some(json!({"custom_prompt": long(20_001)})),
            422,
            "invalid_custom_prompt",
        ),
        (
            &member,
            put.clone(),
            "/users/me/prompt".into(),
            Some(json!({"prompt": "x"})),
            400,
            "invalid_body",
        ),
        // Spend limits.
        (
            &member,
            put.clone(),
            "/admin/spend-limits".into(),
            Some(json!({"default_limit_micros": 1, "period": "day"})),
            403,
            "forbidden",
        ),
        (
            &admin,
            put.clone(),
            "/admin/spend-limits".into(),
            Some(json!({"default_limit_micros": -1, "period": "day"})),
            422,
            "invalid_limit",
        ),
        (
            &admin,
            put.clone(),
            "/admin/spend-limits".into(),
            Some(json!({"default_limit_micros": 1, "period": "year"})),
            400,
            "invalid_body",
        ),
        (
            &admin,
            put.clone(),
            "/admin/spend-limits".into(),
            Some(json!({"default_limit_micros": 1})),
            400,
            "invalid_body",
        ),
        (
            &admin,
            put.clone(),
            format!("/admin/users/{}/spend-limit", uuid::Uuid::new_v4()),
            Some(json!({"limit_micros": 1})),
            404,
            "not_found",
        ),
        (
            &admin,
            put.clone(),
            "/admin/users/not-a-user/spend-limit".into(),
            Some(json!({"limit_micros": 1})),
            400,
            "invalid_path",
        ),
        (
            &admin,
            put.clone(),
            format!("/admin/users/{member_id}/spend-limit"),
            Some(json!({"limit_micros": -5})),
            422,
            "invalid_limit",
        ),
        (
            &admin,
            put.clone(),
            format!("/admin/users/{member_id}/spend-limit"),
            Some(json!({"limit_micros": "many"})),
            400,
            "invalid_body",
        ),
        (
            &member,
            put.clone(),
            format!("/admin/users/{member_id}/spend-limit"),
            Some(json!({"limit_micros": 1})),
            403,
            "forbidden",
        ),
        // Usage.
        (
            &member,
            get.clone(),
            "/users/me/usage?from=2026-02-01&to=2026-01-01".into(),
            None,
            422,
            "invalid_range",
        ),
        (
            &member,
            get.clone(),
            "/users/me/usage?from=2024-01-01&to=2026-01-01".into(),
            None,
            422,
            "invalid_range",
        ),
        (
            &member,
            get.clone(),
            "/users/me/usage?from=yesterday".into(),
            None,
            400,
            "invalid_query",
        ),
        (
            &member,
            get.clone(),
            "/users/me/usage?group_by=user".into(),
            None,
            400,
            "invalid_query",
        ),
        (
            &member,
            get.clone(),
            "/users/me/usage?limit=3".into(),
            None,
            400,
            "invalid_query",
        ),
        (
            &member,
            get.clone(),
            "/admin/usage".into(),
            None,
            403,
            "forbidden",
        ),
        (
            &admin,
            get.clone(),
            "/admin/usage?group_by=week".into(),
            None,
            400,
            "invalid_query",
        ),
    ];
    for (client, method, path, body, status, code) in cases {
        let label = format!(
            "{method} {path} {}",
            body.as_ref().map_or(String::new(), |b| {
                b.to_string().chars().take(80).collect()
            })
        );
        assert_eq!(
            call(client, method, &path, body).await,
            (status, code.to_owned()),
            "{label}"
        );
    }

    // Nothing changed.
    assert_eq!(admin.system_prompt().await.unwrap().system_prompt, "Kept.");
    assert_eq!(member.my_prompt().await.unwrap().custom_prompt, "Mine.");
    let limits = admin.spend_limits().await.unwrap();
    assert_eq!(limits.default_limit_micros, None);
    let spend = member.my_spend().await.unwrap();
    assert_eq!(spend.limit_micros, None);
    // Without a token, every route is a 401.
    let anonymous =
        Client::new(&setup.app.url(0), "chatd_00000000000000000000000000000000").unwrap();
    for path in [
        "/admin/system-prompt",
        "/users/me/prompt",
        "/users/me/spend",
        "/users/me/usage",
        "/admin/usage",
        "/admin/spend-limits",
    ] {
        assert_eq!(
            call(&anonymous, Method::GET, path, None).await.0,
            401,
            "{path}"
        );
    }
    setup.shutdown().await;
}
