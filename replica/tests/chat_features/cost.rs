//! Cost and usage: each assistant message's `cost_micros` is its tokens
//! times the model's prices, rounded up (cache reads priced on their own,
//! reasoning as output, null when unpriced), and the usage endpoints add up
//! to the messages.

use std::collections::BTreeMap;

use chatd_shared::{
    api::{Message, SendMessage},
    client::{Client, UsageRange},
    ids::ChatId,
    parts::{Part, Usage},
    status::MessageRole,
};
use serde_json::json;

use super::{
    common::{Wire, app::say},
    fixture::{ModelSpec, Setup, add_model, create, send, wait_idle},
};

/// Prices that make most costs fractional micro-dollars.
const PRICES: [Option<i64>; 4] = [
    Some(1_500_001),
    Some(2_500_003),
    Some(700_001),
    Some(3_750_001),
];

/// Cost by the book: Σ tokens × price per million, rounded up once.
fn expected_cost(usage: &Usage, prices: [Option<i64>; 4]) -> i64 {
    let [input, output, read, write] = prices.map(|p| i128::from(p.unwrap_or(0)));
    let tokens = |n: Option<i64>| i128::from(n.unwrap_or(0));
    let cache_read = tokens(usage.cache_read_tokens);
    let cache_write = tokens(usage.cache_write_tokens);
    let uncached = tokens(usage.input_tokens) - cache_read - cache_write;
    let micros = uncached * input
        + tokens(usage.output_tokens) * output
        + cache_read * read
        + cache_write * write;
    ((micros + 999_999) / 1_000_000) as i64
}

async fn replies(client: &Client, chat: ChatId) -> Vec<Message> {
    let page = client
        .list_messages(chat, &Default::default())
        .await
        .unwrap();
    page.messages
        .into_iter()
        .filter(|m| m.role == MessageRole::Assistant)
        .collect()
}

async fn cost_matches_the_prices(wire: Wire) {
    let spec = ModelSpec {
        prices: PRICES,
        ..ModelSpec::default()
    };
    let setup = Setup::start(1, wire, spec, |_, _| {}).await;
    let client = setup.app.admin(0);
    let chat = create(&client, &say(json!({"text": "one two three"})), None).await;
    wait_idle(&client, chat, 2).await;
    // A tool step, then a reply with reasoning, with a cached prefix.
    let script = json!({"steps": [
        {"tool_calls": [{"name": "current_time"}]},
        {"thinking": "let me think about it", "text": "done now"}
    ]});
    send(&client, chat, &say(script)).await;
    wait_idle(&client, chat, 6).await;
    let answers = replies(&client, chat).await;
    assert_eq!(answers.len(), 3);
    for reply in &answers {
        assert_eq!(
            reply.cost_micros,
            Some(expected_cost(&reply.usage, PRICES)),
            "{reply:?}"
        );
    }
    let last = answers.last().unwrap();
    // Five words of reasoning and two of text: reasoning is output, priced
    // as output (OpenAI also says how much of it was reasoning).
    assert_eq!(last.usage.output_tokens, Some(7), "{last:?}");
    assert!(last.usage.cache_read_tokens.unwrap_or(0) > 0, "{last:?}");

    // A model without prices has no cost.
    let unpriced = add_model(
        &setup.app,
        &setup.mock,
        setup.wire,
        "free-model",
        ModelSpec {
            prices: [None; 4],
            ..ModelSpec::default()
        },
    )
    .await;
    client
        .send_message(
            chat,
            &SendMessage {
                text: Some(say(json!({"text": "free"}))),
                model_config_id: Some(unpriced),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    wait_idle(&client, chat, 8).await;
    let free = replies(&client, chat).await.pop().unwrap();
    assert_eq!(free.cost_micros, None);
    assert!(free.usage.output_tokens.is_some());
    setup.shutdown().await;
}

#[tokio::test]
async fn cost_matches_the_prices_rounded_up_over_openai() {
    cost_matches_the_prices(Wire::OpenAi).await;
}

#[tokio::test]
async fn cost_matches_the_prices_rounded_up_over_anthropic() {
    cost_matches_the_prices(Wire::Anthropic).await;
}

/// Per key: cost, input, output, turns.
type Totals = BTreeMap<String, (i64, i64, i64, i64)>;

fn add(totals: &mut Totals, key: String, reply: &Message) {
    let entry = totals.entry(key).or_default();
    entry.0 += reply.cost_micros.unwrap_or(0);
    entry.1 += reply.usage.input_tokens.unwrap_or(0);
    entry.2 += reply.usage.output_tokens.unwrap_or(0);
    let ends_turn = !reply
        .content
        .iter()
        .any(|part| matches!(part, Part::ToolCall { .. }));
    entry.3 += i64::from(ends_turn);
}

fn rows(report: &chatd_shared::api::UsageReport) -> Totals {
    report
        .rows
        .iter()
        .map(|row| {
            (
                row.key.clone(),
                (
                    row.cost_micros,
                    row.input_tokens,
                    row.output_tokens,
                    row.turns,
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn usage_adds_up_to_the_messages() {
    let spec = ModelSpec {
        prices: PRICES,
        ..ModelSpec::default()
    };
    let setup = Setup::start(2, Wire::OpenAi, spec, |_, _| {}).await;
    let other = add_model(&setup.app, &setup.mock, Wire::OpenAi, "other-model", spec).await;
    let (alice_id, alice_token) = setup.app.user("alice").await;
    let (bob_id, bob_token) = setup.app.user("bob").await;
    let alice = setup.app.client(0, &alice_token);
    let bob = setup.app.client(1, &bob_token);

    let tool_turn =
        say(json!({"steps": [{"tool_calls": [{"name": "current_time"}]}, {"text": "it is late"}]}));
    let first = create(&alice, &tool_turn, None).await;
    let second = alice
        .create_chat(
            &chatd_shared::api::CreateChat {
                text: Some(say(json!({"text": "on the other model"}))),
                model_config_id: Some(other),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap()
        .body
        .id;
    let third = create(&bob, &say(json!({"tokens": 3})), None).await;
    wait_idle(&alice, first, 4).await;
    send(&alice, first, &say(json!({"text": "and again"}))).await;
    wait_idle(&alice, first, 6).await;
    wait_idle(&alice, second, 2).await;
    wait_idle(&bob, third, 2).await;

    let mut by_model = Totals::new();
    let mut by_user = Totals::new();
    let mut alice_total = Totals::new();
    for (client, chat, user) in [
        (&alice, first, alice_id),
        (&alice, second, alice_id),
        (&bob, third, bob_id),
    ] {
        for reply in replies(client, chat).await {
            let model = reply_model(&setup, &reply).await;
            add(&mut by_model, model.clone(), &reply);
            add(&mut by_user, user.to_string(), &reply);
            if user == alice_id {
                add(&mut alice_total, model, &reply);
            }
        }
    }
    let admin = setup.app.admin(0);
    let range = |group_by| UsageRange {
        group_by: Some(group_by),
        ..UsageRange::default()
    };
    assert_eq!(
        rows(&admin.admin_usage(&range("model")).await.unwrap()),
        by_model
    );
    assert_eq!(
        rows(&admin.admin_usage(&range("user")).await.unwrap()),
        by_user
    );
    let mine = alice.my_usage(&range("model")).await.unwrap();
    assert_eq!(rows(&mine), alice_total);
    let total: i64 = alice_total.values().map(|t| t.0).sum();
    assert_eq!(mine.total_cost_micros, total);
    let by_day = alice.my_usage(&UsageRange::default()).await.unwrap();
    assert_eq!(by_day.rows.len(), 1, "one day");
    assert_eq!(by_day.total_cost_micros, total);
    assert_eq!(by_day.rows[0].turns, 3, "alice's three turns");
    setup.shutdown().await;
}

/// The model config that wrote `reply` (the API does not say; the row does).
async fn reply_model(setup: &Setup, reply: &Message) -> String {
    let db = setup.app.db.pool().get().await.unwrap();
    let model: uuid::Uuid = db
        .query_one(
            "SELECT model_config_id FROM chat_messages WHERE id = $1",
            &[&reply.id],
        )
        .await
        .unwrap()
        .get(0);
    model.to_string()
}

/// A subagent is a chat of its parent's owner like any other: its first
/// turn gets a title, its reply a cost, and its tokens and cost count in
/// the owner's usage, beside the parent's (whose steps that spawn and wait
/// are stored with their calls on record, and counted there).
#[tokio::test]
async fn a_subagent_gets_a_title_and_its_cost_counts_for_the_owner() {
    let spec = ModelSpec {
        prices: PRICES,
        ..ModelSpec::default()
    };
    let setup = Setup::start(1, Wire::OpenAi, spec, |_, _| {}).await;
    let (_, token) = setup.app.user("alice").await;
    let alice = setup.app.client(0, &token);
    let child_script = say(json!({"text": "the child answers", "title": "Child at work"}));
    let parent = create(
        &alice,
        &say(json!({"steps": [
            {"tool_calls": [{"name": "spawn_agent", "id": "call_a", "args": {"prompt": child_script}}]},
            {"tool_calls": [{"name": "wait_agent", "id": "call_wait",
                             "args": {"ids": ["$ref:call_a/agent_id"], "timeout_s": 60}}]},
            {"text": "All done."}
        ]})),
        None,
    )
    .await;
    // user, spawn, its result, wait, its result, the answer.
    wait_idle(&alice, parent, 6).await;
    let child = alice
        .list_chats(&Default::default())
        .await
        .unwrap()
        .chats
        .into_iter()
        .find(|chat| chat.parent_chat_id == Some(parent))
        .expect("the child");
    wait_idle(&alice, child.id, 2).await;
    let title = chatd_shared::testing::eventually("the child's title", super::common::WAIT, || {
        let alice = &alice;
        async move {
            let chat = alice.get_chat(child.id).await.ok()?;
            (!chat.title.is_empty()).then_some(chat.title)
        }
    })
    .await;
    assert_eq!(title, "Child at work");

    let parent_replies = replies(&alice, parent).await;
    let child_replies = replies(&alice, child.id).await;
    assert_eq!(parent_replies.len(), 3);
    assert_eq!(child_replies.len(), 1);
    let mut total = 0;
    for reply in parent_replies.iter().chain(&child_replies) {
        let cost = reply.cost_micros.expect("a priced reply has a cost");
        assert_eq!(cost, expected_cost(&reply.usage, PRICES), "{reply:?}");
        total += cost;
    }
    let usage = alice.my_usage(&UsageRange::default()).await.unwrap();
    assert_eq!(usage.total_cost_micros, total, "{usage:?}");
    assert_eq!(usage.rows.len(), 1, "one day");
    assert_eq!(usage.rows[0].turns, 2, "the parent's turn and the child's");
    setup.shutdown().await;
}
