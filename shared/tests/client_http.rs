//! The typed client's plain routes against a fake server: what it sends
//! (method, path, query, headers, body) and what it makes of the answers.

#![cfg(feature = "client")]

mod client_support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use chatd_shared::{
    api::{
        ChatList, CreateChat, CreateModelConfig, CreateProvider, CreateToken, CreateUser,
        EditMessage, Model, ModelList, QueueList, SendMessage, SendResult, UpdateChat,
        UpdateModelConfig, UpdateProvider,
    },
    client::{ChatsQuery, Client, ClientError, MessagesQuery, RawBody},
    ids::{ChatId, MessageId, ModelConfigId, ProviderId, QueuedMessageId, TokenId, UserId},
    parts::Part,
    status::{ProviderKind, UserRole},
    testing::wait_for,
};
use client_support::{
    BEARER, FakeServer, Reply, WAIT, chat, error_body, message, model_config, provider, queued,
    to_json, token, token_created, user,
};
use serde_json::{Value, json};

#[tokio::test]
async fn create_chat_sends_its_body_the_token_and_the_idempotency_key() {
    let server = FakeServer::start().await;
    let created = chat(ChatId::new_v7());
    server.reply(
        Method::POST,
        "/api/v1/chats",
        Reply::Json(StatusCode::CREATED, to_json(&created)),
    );
    let request = CreateChat {
        text: Some("hi".to_owned()),
        title: Some("greeting".to_owned()),
        ..CreateChat::default()
    };

    let answer = server
        .client()
        .create_chat(&request, Some("key-1"))
        .await
        .unwrap();

    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body, created);
    let sent = server.only_request();
    assert_eq!(
        (&sent.method, sent.path.as_str()),
        (&Method::POST, "/api/v1/chats")
    );
    assert_eq!(sent.header("authorization"), Some(BEARER));
    assert_eq!(sent.header("idempotency-key"), Some("key-1"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.json(), json!({"text": "hi", "title": "greeting"}));
}

#[tokio::test]
async fn create_chat_reports_a_replayed_key_as_200() {
    let server = FakeServer::start().await;
    let original = chat(ChatId::new_v7());
    server.reply(
        Method::POST,
        "/api/v1/chats",
        Reply::Json(StatusCode::OK, to_json(&original)),
    );

    let answer = server
        .client()
        .create_chat(&CreateChat::default(), None)
        .await
        .unwrap();

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, original);
    assert_eq!(server.only_request().header("idempotency-key"), None);
}

#[tokio::test]
async fn send_message_tells_a_sent_message_201_from_a_queued_one_202() {
    let server = FakeServer::start().await;
    let (idle, busy) = (ChatId::new_v7(), ChatId::new_v7());
    let sent = message(idle, 7);
    let waiting = queued(3);
    server.reply(
        Method::POST,
        &format!("/api/v1/chats/{idle}/messages"),
        Reply::Json(StatusCode::CREATED, json!({"message": to_json(&sent)})),
    );
    server.reply(
        Method::POST,
        &format!("/api/v1/chats/{busy}/messages"),
        Reply::Json(StatusCode::ACCEPTED, json!({"queued": to_json(&waiting)})),
    );
    let client = server.client();
    let text = SendMessage {
        text: Some("next".to_owned()),
        ..SendMessage::default()
    };

    let to_idle = client.send_message(idle, &text, Some("k")).await.unwrap();
    let to_busy = client.send_message(busy, &text, None).await.unwrap();

    assert_eq!(to_idle.status, StatusCode::CREATED);
    assert_eq!(to_idle.body, SendResult::Sent { message: sent });
    assert_eq!(to_busy.status, StatusCode::ACCEPTED);
    assert_eq!(to_busy.body, SendResult::Queued { queued: waiting });
    let requests = server.requests();
    assert_eq!(requests[0].header("idempotency-key"), Some("k"));
    assert_eq!(requests[1].header("idempotency-key"), None);
    assert_eq!(requests[1].json(), json!({"text": "next"}));
}

#[tokio::test]
async fn promote_reports_202_with_the_queue() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let queue = QueueList {
        queued: vec![queued(4)],
    };
    server.reply(
        Method::POST,
        &format!("/api/v1/chats/{chat_id}/queue/5/promote"),
        Reply::Json(StatusCode::ACCEPTED, to_json(&queue)),
    );

    let answer = server
        .client()
        .promote_queued(chat_id, QueuedMessageId(5))
        .await
        .unwrap();

    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body, queue);
}

#[tokio::test]
async fn list_queries_carry_only_the_parameters_given() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let list = ChatList {
        chats: vec![chat(chat_id)],
        next_cursor: Some("c2".to_owned()),
    };
    server.reply(
        Method::GET,
        "/api/v1/chats",
        Reply::Json(StatusCode::OK, to_json(&list)),
    );
    server.reply(
        Method::GET,
        &format!("/api/v1/chats/{chat_id}/messages"),
        Reply::Json(StatusCode::OK, json!({"messages": [], "has_more": true})),
    );
    let client = server.client();

    let page = client
        .list_chats(&ChatsQuery {
            limit: Some(20),
            cursor: Some("c1 &=".to_owned()),
            archived: Some(true),
        })
        .await
        .unwrap();
    client.list_chats(&ChatsQuery::default()).await.unwrap();
    let messages = client
        .list_messages(
            chat_id,
            &MessagesQuery {
                before_id: Some(MessageId(40)),
                limit: Some(10),
            },
        )
        .await
        .unwrap();
    client
        .list_messages(
            chat_id,
            &MessagesQuery {
                limit: Some(5),
                ..MessagesQuery::default()
            },
        )
        .await
        .unwrap();

    assert_eq!(page, list);
    assert!(messages.has_more && messages.messages.is_empty());
    let queries: Vec<_> = server.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries,
        [
            Some("limit=20&cursor=c1+%26%3D&archived=true".to_owned()),
            None,
            Some("before_id=40&limit=10".to_owned()),
            Some("limit=5".to_owned()),
        ]
    );
}

#[tokio::test]
async fn every_route_has_its_method_path_and_body_and_decodes_its_answer() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    let (message_id, queued_id) = (MessageId(9), QueuedMessageId(4));
    let (provider_id, config_id) = (ProviderId::new_random(), ModelConfigId::new_random());
    let (user_id, token_id) = (UserId::new_random(), TokenId::new_random());
    let the_chat = chat(chat_id);
    let the_message = message(chat_id, message_id.0);
    let the_provider = provider(provider_id);
    let the_config = model_config(config_id, provider_id);
    let the_user = user(user_id);
    let the_token = token(user_id, token_id);
    let new_token = token_created(user_id, token_id);
    let models = ModelList {
        models: vec![Model {
            id: config_id,
            display_name: "Mock".to_owned(),
            model: "mock-model".to_owned(),
            context_limit: 8192,
            is_default: true,
        }],
    };
    let queue = QueueList {
        queued: vec![queued(queued_id.0)],
    };
    let update_chat = UpdateChat {
        archived: Some(true),
        ..UpdateChat::default()
    };
    let edit = EditMessage {
        content: Some(vec![Part::text("edited")]),
        text: None,
    };
    let create_provider = CreateProvider {
        name: "mock".to_owned(),
        kind: ProviderKind::Openai,
        base_url: "http://127.0.0.1:1/v1".to_owned(),
        api_key: None,
        api_key_env: Some("KEY".to_owned()),
        enabled: None,
    };
    let update_provider = UpdateProvider {
        api_key: Some(None),
        ..UpdateProvider::default()
    };
    let create_config = CreateModelConfig {
        provider_id,
        model: "mock-model".to_owned(),
        display_name: None,
        enabled: None,
        is_default: Some(true),
        use_for_titles: None,
        context_limit: 8192,
        compaction_threshold_pct: None,
        max_output_tokens: None,
        price_input_micros_per_mtok: None,
        price_output_micros_per_mtok: None,
        price_cache_read_micros_per_mtok: None,
        price_cache_write_micros_per_mtok: None,
        options: None,
    };
    let update_config = UpdateModelConfig {
        price_input_micros_per_mtok: Some(None),
        ..UpdateModelConfig::default()
    };
    let create_user = CreateUser {
        username: "alice".to_owned(),
        role: Some(UserRole::Member),
    };
    let create_token = CreateToken {
        name: Some("ci".to_owned()),
        expires_at: None,
    };
    let ok = |value: Value| Reply::Json(StatusCode::OK, value);
    let no_content = || Reply::Empty(StatusCode::NO_CONTENT);
    let chat_path = format!("/api/v1/chats/{chat_id}");
    let provider_path = format!("/api/v1/admin/providers/{provider_id}");
    let config_path = format!("/api/v1/admin/model-configs/{config_id}");
    let user_path = format!("/api/v1/admin/users/{user_id}");
    // (method, path, reply, body the client must send), in call order.
    let routes: Vec<(Method, String, Reply, Option<Value>)> = vec![
        (
            Method::GET,
            "/api/v1/chats".into(),
            ok(json!({"chats": [], "next_cursor": null})),
            None,
        ),
        (Method::GET, chat_path.clone(), ok(to_json(&the_chat)), None),
        (
            Method::PATCH,
            chat_path.clone(),
            ok(to_json(&the_chat)),
            Some(to_json(&update_chat)),
        ),
        (Method::DELETE, chat_path.clone(), no_content(), None),
        (
            Method::PATCH,
            format!("{chat_path}/messages/{message_id}"),
            ok(to_json(&the_message)),
            Some(to_json(&edit)),
        ),
        (
            Method::POST,
            format!("{chat_path}/interrupt"),
            Reply::Json(StatusCode::ACCEPTED, to_json(&the_chat)),
            None,
        ),
        (
            Method::GET,
            format!("{chat_path}/queue"),
            ok(to_json(&queue)),
            None,
        ),
        (
            Method::DELETE,
            format!("{chat_path}/queue/{queued_id}"),
            no_content(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/models".into(),
            ok(to_json(&models)),
            None,
        ),
        (
            Method::GET,
            "/api/v1/users/me".into(),
            ok(to_json(&the_user)),
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/providers".into(),
            ok(json!([to_json(&the_provider)])),
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/providers".into(),
            Reply::Json(StatusCode::CREATED, to_json(&the_provider)),
            Some(to_json(&create_provider)),
        ),
        (
            Method::GET,
            provider_path.clone(),
            ok(to_json(&the_provider)),
            None,
        ),
        (
            Method::PATCH,
            provider_path.clone(),
            ok(to_json(&the_provider)),
            Some(json!({"api_key": null})),
        ),
        (Method::DELETE, provider_path.clone(), no_content(), None),
        (
            Method::GET,
            "/api/v1/admin/model-configs".into(),
            ok(json!([to_json(&the_config)])),
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/model-configs".into(),
            Reply::Json(StatusCode::CREATED, to_json(&the_config)),
            Some(to_json(&create_config)),
        ),
        (
            Method::GET,
            config_path.clone(),
            ok(to_json(&the_config)),
            None,
        ),
        (
            Method::PATCH,
            config_path.clone(),
            ok(to_json(&the_config)),
            Some(json!({"price_input_micros_per_mtok": null})),
        ),
        (Method::DELETE, config_path.clone(), no_content(), None),
        (
            Method::GET,
            "/api/v1/admin/users".into(),
            ok(json!([to_json(&the_user)])),
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/users".into(),
            Reply::Json(StatusCode::CREATED, to_json(&the_user)),
            Some(to_json(&create_user)),
        ),
        (Method::GET, user_path.clone(), ok(to_json(&the_user)), None),
        (
            Method::GET,
            format!("{user_path}/tokens"),
            ok(json!([to_json(&the_token)])),
            None,
        ),
        (
            Method::POST,
            format!("{user_path}/tokens"),
            Reply::Json(StatusCode::CREATED, to_json(&new_token)),
            Some(to_json(&create_token)),
        ),
        (
            Method::DELETE,
            format!("{user_path}/tokens/{token_id}"),
            no_content(),
            None,
        ),
    ];
    for (method, path, reply, _) in &routes {
        server.reply(method.clone(), path, reply.clone());
    }
    let client = server.client();

    client.list_chats(&ChatsQuery::default()).await.unwrap();
    assert_eq!(client.get_chat(chat_id).await.unwrap(), the_chat);
    assert_eq!(
        client.update_chat(chat_id, &update_chat).await.unwrap(),
        the_chat
    );
    client.delete_chat(chat_id).await.unwrap();
    assert_eq!(
        client
            .edit_message(chat_id, message_id, &edit)
            .await
            .unwrap(),
        the_message
    );
    assert_eq!(client.interrupt_chat(chat_id).await.unwrap(), the_chat);
    assert_eq!(client.list_queue(chat_id).await.unwrap(), queue);
    client.delete_queued(chat_id, queued_id).await.unwrap();
    assert_eq!(client.list_models().await.unwrap(), models);
    assert_eq!(client.me().await.unwrap(), the_user);
    assert_eq!(
        client.list_providers().await.unwrap(),
        std::slice::from_ref(&the_provider)
    );
    assert_eq!(
        client.create_provider(&create_provider).await.unwrap(),
        the_provider
    );
    assert_eq!(
        client.get_provider(provider_id).await.unwrap(),
        the_provider
    );
    assert_eq!(
        client
            .update_provider(provider_id, &update_provider)
            .await
            .unwrap(),
        the_provider
    );
    client.delete_provider(provider_id).await.unwrap();
    assert_eq!(
        client.list_model_configs().await.unwrap(),
        std::slice::from_ref(&the_config)
    );
    assert_eq!(
        client.create_model_config(&create_config).await.unwrap(),
        the_config
    );
    assert_eq!(
        client.get_model_config(config_id).await.unwrap(),
        the_config
    );
    assert_eq!(
        client
            .update_model_config(config_id, &update_config)
            .await
            .unwrap(),
        the_config
    );
    client.delete_model_config(config_id).await.unwrap();
    assert_eq!(
        client.list_users().await.unwrap(),
        std::slice::from_ref(&the_user)
    );
    assert_eq!(client.create_user(&create_user).await.unwrap(), the_user);
    assert_eq!(client.get_user(user_id).await.unwrap(), the_user);
    assert_eq!(client.list_tokens(user_id).await.unwrap(), [the_token]);
    assert_eq!(
        client.create_token(user_id, &create_token).await.unwrap(),
        new_token
    );
    client.revoke_token(user_id, token_id).await.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), routes.len());
    for (request, (method, path, _, body)) in requests.iter().zip(&routes) {
        assert_eq!((&request.method, &request.path), (method, path));
        assert_eq!(request.header("authorization"), Some(BEARER));
        let sent = (!request.body.is_empty()).then(|| request.json());
        assert_eq!(&sent, body, "{method} {path}");
    }
}

#[tokio::test]
async fn error_bodies_become_api_errors_with_their_code() {
    let server = FakeServer::start().await;
    let chat_id = ChatId::new_v7();
    server.reply(
        Method::GET,
        &format!("/api/v1/chats/{chat_id}"),
        Reply::Json(StatusCode::NOT_FOUND, error_body("not_found")),
    );

    let error = server.client().get_chat(chat_id).await.unwrap_err();

    let ClientError::Api {
        status,
        code,
        message,
        details,
    } = &error
    else {
        panic!("expected an API error: {error:?}");
    };
    assert_eq!(*status, StatusCode::NOT_FOUND);
    assert_eq!(code, "not_found");
    assert_eq!(message, "not_found happened");
    assert_eq!(details, &Some(json!({"field": "x"})));
    assert_eq!(error.code(), Some("not_found"));
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn refusals_without_an_error_body_keep_their_status_and_an_excerpt() {
    let server = FakeServer::start().await;
    server.reply(
        Method::GET,
        "/api/v1/users/me",
        Reply::Text(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>"),
    );

    let error = server.client().me().await.unwrap_err();

    assert!(
        matches!(
            &error,
            ClientError::Status { status: StatusCode::BAD_GATEWAY, excerpt }
                if excerpt == "<html>bad gateway</html>"
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn unexpected_bodies_are_decode_errors_with_an_excerpt() {
    let server = FakeServer::start().await;
    server.reply(
        Method::GET,
        "/api/v1/models",
        Reply::Json(StatusCode::OK, json!({"models": "not a list"})),
    );

    let error = server.client().list_models().await.unwrap_err();

    assert!(
        matches!(&error, ClientError::Decode { excerpt, .. } if excerpt == r#"{"models":"not a list"}"#),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_client_without_a_token_sends_no_authorization() {
    let server = FakeServer::start().await;
    server.reply(
        Method::GET,
        "/api/v1/users/me",
        Reply::Json(StatusCode::UNAUTHORIZED, error_body("unauthorized")),
    );
    let shared_pool = reqwest::Client::new();
    let anonymous = Client::with_http_client(shared_pool, server.base_url(), None).unwrap();

    let error = anonymous.me().await.unwrap_err();

    assert_eq!(error.code(), Some("unauthorized"));
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(server.only_request().header("authorization"), None);
}

#[tokio::test]
async fn with_token_acts_as_another_user() {
    let server = FakeServer::start().await;
    server.reply(
        Method::GET,
        "/api/v1/users/me",
        Reply::Json(StatusCode::OK, to_json(&user(UserId::new_random()))),
    );

    let other = server.client().with_token(Some("chatd_other")).unwrap();
    other.me().await.unwrap();
    other.with_token(None).unwrap().me().await.unwrap();

    let requests = server.requests();
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer chatd_other")
    );
    assert_eq!(requests[1].header("authorization"), None);
}

#[tokio::test]
async fn raw_sends_bytes_and_headers_as_given_and_returns_any_status() {
    let server = FakeServer::start().await;
    server.reply(
        Method::POST,
        "/api/v1/chats",
        Reply::Json(StatusCode::BAD_REQUEST, error_body("invalid_json")),
    );
    let client = server.client();

    let answer = client
        .raw(
            Method::POST,
            "/chats",
            Some(RawBody::Bytes(Bytes::from_static(b"{not json"))),
            &[
                ("idempotency-key", "k"),
                ("authorization", "Bearer chatd_forged"),
            ],
        )
        .await
        .unwrap();

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.error().map(|error| error.code).as_deref(),
        Some("invalid_json")
    );
    assert_eq!(answer.json::<Value>().unwrap(), error_body("invalid_json"));
    let sent = server.only_request();
    assert_eq!(&sent.body[..], b"{not json");
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("idempotency-key"), Some("k"));
    assert_eq!(
        sent.headers.get_all("authorization").iter().count(),
        1,
        "a given header replaces the client's"
    );
    assert_eq!(sent.header("authorization"), Some("Bearer chatd_forged"));
}

#[tokio::test]
async fn raw_sends_json_and_any_path_and_query() {
    let server = FakeServer::start().await;
    let unknown_field = json!({"text": "hi", "colour": "blue"});

    let answer = server
        .client()
        .raw(
            Method::PATCH,
            "chats/not-a-uuid?limit=0",
            Some(RawBody::Json(unknown_field.clone())),
            &[],
        )
        .await
        .unwrap();

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.error().map(|error| error.code).as_deref(),
        Some("no_route")
    );
    let sent = server.only_request();
    assert_eq!(
        (&sent.method, sent.path.as_str(), sent.query.as_deref()),
        (&Method::PATCH, "/api/v1/chats/not-a-uuid", Some("limit=0"))
    );
    assert_eq!(sent.json(), unknown_field);
    assert_eq!(sent.header("authorization"), Some(BEARER));
}

#[tokio::test]
async fn a_request_without_an_answer_times_out() {
    let server = FakeServer::start().await;
    server.reply(Method::GET, "/api/v1/users/me", Reply::Hang);
    let timeout = Duration::from_millis(50);
    let client = server.client().with_request_timeout(timeout);

    let error = wait_for("the timeout", WAIT, client.me())
        .await
        .unwrap_err();

    assert!(
        matches!(error, ClientError::Timeout(t) if t == timeout),
        "{error:?}"
    );
}
