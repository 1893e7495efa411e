//! Every enum value and every typed column survives a trip through the
//! database layer.

use std::time::Duration;

use chatd_shared::{
    db::{
        chats::{self, NewChat},
        messages::{self, NewMessage},
        model_configs::{self, NewModelConfig},
        providers::{self, NewProvider},
        queued_messages, replicas,
        tokens::{self, NewApiToken},
        transitions, users,
    },
    ids::{ChatId, Generation, MessageId, ReplicaId, UserId},
    parts::{Part, Usage},
    status::{ChatStatus, MessageRole, MessageVisibility, ProviderKind, UserRole},
    testing::TestDb,
};
use serde_json::json;

fn every_part() -> Vec<Part> {
    vec![
        Part::text("Hello"),
        Part::Reasoning {
            text: "hmm".into(),
            signature: Some("sig".into()),
        },
        Part::Reasoning {
            text: "no signature".into(),
            signature: None,
        },
        Part::ToolCall {
            id: "call_1".into(),
            name: "current_time".into(),
            args: json!({"tz": "UTC"}),
        },
        Part::ToolResult {
            tool_call_id: "call_1".into(),
            name: "current_time".into(),
            result: json!({"now": "2026-01-01T00:00:00Z"}),
            is_error: false,
        },
        Part::File {
            file_id: "f1".into(),
            media_type: "image/png".into(),
            name: Some("a.png".into()),
        },
        Part::Source {
            url: "https://example.com".into(),
            title: None,
        },
    ]
}

#[tokio::test]
async fn users_and_tokens_round_trip() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    for role in UserRole::ALL {
        let name = format!("user-{role}");
        let user = users::insert(&client, UserId::new_random(), &name, *role)
            .await
            .unwrap();
        assert_eq!(user.role, *role);
        assert_eq!(
            users::get(&client, user.id).await.unwrap(),
            Some(user.clone())
        );
        assert_eq!(
            users::get_by_username(&client, &name).await.unwrap(),
            Some(user.clone())
        );

        let hash = vec![role.as_str().len() as u8; 32];
        let expires = chrono::Utc::now() + chrono::Duration::hours(1);
        let token = tokens::insert(
            &client,
            &NewApiToken {
                user_id: user.id,
                name: "ci",
                token_hash: &hash,
                prefix: "chatd_ab",
                expires_at: Some(expires),
            },
        )
        .await
        .unwrap();
        let (found, owner) = tokens::find_active(&client, &hash)
            .await
            .unwrap()
            .expect("active token");
        assert_eq!(found, token);
        assert_eq!(owner, user);
        assert!(
            tokens::touch_last_used(&client, token.id).await.unwrap(),
            "first use is recorded"
        );
        assert!(
            !tokens::touch_last_used(&client, token.id).await.unwrap(),
            "a second use within a minute is not"
        );
        assert!(tokens::revoke(&client, token.id).await.unwrap());
        assert_eq!(
            tokens::find_active(&client, &hash).await.unwrap(),
            None,
            "revoked tokens do not authenticate"
        );
    }
    let again = users::upsert_by_username(&client, "user-admin", UserRole::Member)
        .await
        .unwrap();
    assert_eq!(
        again.role,
        UserRole::Admin,
        "upsert keeps an existing user as it is"
    );
}

#[tokio::test]
async fn providers_model_configs_and_replicas_round_trip() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    for kind in ProviderKind::ALL {
        let name = format!("p-{kind}");
        let provider = providers::insert(
            &client,
            &NewProvider {
                name: &name,
                kind: *kind,
                base_url: "http://127.0.0.1:1/v1",
                api_key: Some("k"),
                api_key_env: None,
                enabled: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(provider.kind, *kind);
        assert_eq!(
            providers::get(&client, provider.id).await.unwrap(),
            Some(provider.clone())
        );
        assert_eq!(
            providers::get_by_name(&client, &name).await.unwrap(),
            Some(provider.clone())
        );

        let config = model_configs::insert(
            &client,
            &NewModelConfig {
                provider_id: provider.id,
                model: "m",
                display_name: &name,
                enabled: true,
                is_default: *kind == ProviderKind::Mock,
                context_limit: 128_000,
                compaction_threshold_pct: 70,
                max_output_tokens: 4096,
                prices: [Some(1), Some(2), None, Some(4)],
                options: json!({"temperature": 0.5}),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            model_configs::get(&client, config.id).await.unwrap(),
            Some(config)
        );
    }
    let default = model_configs::get_default(&client)
        .await
        .unwrap()
        .expect("a default model");
    assert_eq!(default.display_name, "p-mock");
    assert_eq!(
        model_configs::list(&client).await.unwrap().len(),
        ProviderKind::ALL.len()
    );

    let id = ReplicaId::new_random();
    let replica = replicas::register(
        &client,
        &replicas::Registration {
            id,
            hostname: "host-a",
            relay_url: Some("ws://127.0.0.1:7081"),
            version: "0.1.0",
            lease_ttl: Duration::from_secs(10),
            max_running_chats: 64,
        },
    )
    .await
    .unwrap();
    assert_eq!(replica.max_running_chats, Some(64));
    assert!(replica.lease_expires_at > replica.heartbeat_at);
    assert!(
        replicas::renew_lease(&client, id, Duration::from_secs(10))
            .await
            .unwrap()
    );
    assert!(replicas::mark_draining(&client, id).await.unwrap());
    assert!(replicas::get(&client, id).await.unwrap().unwrap().draining);
    assert_eq!(replicas::list(&client).await.unwrap().len(), 1);
    assert!(replicas::delete(&client, id).await.unwrap());
    assert!(
        !replicas::renew_lease(&client, id, Duration::from_secs(10))
            .await
            .unwrap(),
        "a deleted replica has no lease"
    );
}

#[tokio::test]
async fn chats_messages_and_queue_round_trip() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let owner = users::insert(&client, UserId::new_random(), "owner", UserRole::Member)
        .await
        .unwrap();
    let labels = json!({"team": "infra"});

    for status in ChatStatus::ALL {
        if status == ChatStatus::Running {
            continue; // only acquire makes a chat running (with a worker)
        }
        let chat = transitions::insert(
            &client,
            &NewChat {
                id: ChatId::new_v7(),
                owner_id: owner.id,
                parent_chat_id: None,
                root_chat_id: None,
                title: "t",
                status,
                model_config_id: None,
                system_prompt: Some("be brief"),
                labels: &labels,
                tools: Default::default(),
                trace_parent: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(chat.status, status);
        assert_eq!(chat.generation, Generation(0));
        assert_eq!(chats::get(&client, chat.id).await.unwrap(), Some(chat));
    }
    let running_without_worker = transitions::insert(
        &client,
        &NewChat {
            id: ChatId::new_v7(),
            owner_id: owner.id,
            parent_chat_id: None,
            root_chat_id: None,
            title: "",
            status: ChatStatus::Running,
            model_config_id: None,
            system_prompt: None,
            labels: &labels,
            tools: Default::default(),
            trace_parent: None,
        },
    )
    .await;
    assert!(
        running_without_worker.is_err(),
        "a running chat must have a worker"
    );

    let chat_id = ChatId::new_v7();
    let chat = transitions::insert(
        &client,
        &NewChat {
            id: chat_id,
            owner_id: owner.id,
            parent_chat_id: None,
            root_chat_id: None,
            title: "",
            status: ChatStatus::Waiting,
            model_config_id: None,
            system_prompt: None,
            labels: &labels,
            tools: Default::default(),
            trace_parent: None,
        },
    )
    .await
    .unwrap();
    let parts = every_part();
    let mut written = Vec::new();
    for (index, role) in MessageRole::ALL.iter().enumerate() {
        for visibility in MessageVisibility::ALL {
            let usage = Usage {
                input_tokens: Some(10),
                output_tokens: Some(20),
                reasoning_tokens: Some(3),
                cache_read_tokens: None,
                cache_write_tokens: Some(5),
            };
            let key = format!("key-{index}-{visibility:?}");
            let message = messages::insert(
                &client,
                chat.id,
                *role,
                &NewMessage {
                    visibility: Some(visibility),
                    content: &parts,
                    created_by: Some(owner.id),
                    model_config_id: None,
                    generation: Some(Generation(3)),
                    step: Some(index as i32),
                    usage,
                    cost_micros: Some(42),
                    runtime_ms: Some(1500),
                    idempotency_key: Some(&key),
                },
            )
            .await
            .unwrap();
            assert_eq!(message.role, *role);
            assert_eq!(message.visibility, visibility);
            assert_eq!(message.content, parts);
            assert_eq!(message.usage, usage);
            written.push(message);
        }
    }
    let read = messages::list_after(&client, chat.id, MessageId(0), 100)
        .await
        .unwrap();
    assert_eq!(
        read, written,
        "messages come back in id order, every column intact"
    );
    let tail = messages::list_after(&client, chat.id, written[2].id, 100)
        .await
        .unwrap();
    assert_eq!(tail, written[3..]);
    // Rows are read by position from their `id` on: other columns may
    // frame the message's, but columns out of order are refused, not misread.
    let framed = client
        .query_one(
            &format!(
                "SELECT 7 AS want, {}, 'x' AS after FROM chat_messages WHERE id = $1",
                messages::COLUMNS
            ),
            &[&written[0].id],
        )
        .await
        .unwrap();
    assert_eq!(messages::Message::from_row(&framed).unwrap(), written[0]);
    let swapped = messages::COLUMNS.replacen("chat_id, role", "role, chat_id", 1);
    let shuffled = client
        .query_one(
            &format!("SELECT {swapped} FROM chat_messages WHERE id = $1"),
            &[&written[0].id],
        )
        .await
        .unwrap();
    assert!(matches!(
        messages::Message::from_row(&shuffled),
        Err(chatd_shared::db::DbError::Unexpected(_))
    ));

    let queued = queued_messages::push(&client, chat.id, &parts[..1], Some(owner.id), Some("q1"))
        .await
        .unwrap()
        .expect("queue has room");
    assert_eq!(
        queued_messages::list(&client, chat.id).await.unwrap(),
        vec![queued]
    );
    for _ in 1..queued_messages::MAX_QUEUED_PER_CHAT {
        queued_messages::push(&client, chat.id, &parts[..1], None, None)
            .await
            .unwrap()
            .expect("room");
    }
    let full = queued_messages::push(&client, chat.id, &parts[..1], None, None)
        .await
        .unwrap();
    assert_eq!(full, None, "the 21st queued message is refused");
}

#[test]
fn parts_serialise_as_documented() {
    let value = serde_json::to_value(every_part()).unwrap();
    assert_eq!(value[0], json!({"type": "text", "text": "Hello"}));
    assert_eq!(
        value[3],
        json!({"type": "tool_call", "id": "call_1", "name": "current_time", "args": {"tz": "UTC"}})
    );
    let delta: Part = serde_json::from_value(
        json!({"type": "tool_call_delta", "id": "c", "name": "n", "args_delta": "{\""}),
    )
    .unwrap();
    assert!(delta.is_delta());
    let unknown = serde_json::from_value::<Part>(json!({"type": "text", "text": "x", "extra": 1}));
    assert!(unknown.is_err(), "unknown fields are rejected");
    let bad_type = serde_json::from_value::<Part>(json!({"type": "video"}));
    assert!(bad_type.is_err());
}
