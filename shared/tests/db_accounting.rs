//! The statements of chat features part 1 against a real database: spend
//! reservations and their settlement, the usage rollup a commit keeps, the
//! compaction write, generated titles, and the turn's prompt context.

use chatd_shared::{
    db::{
        GenericClient, chats,
        compaction::{self, Compacted, Summary},
        lifecycle::{self, Fence, StepMessage, TurnEnd},
        messages::{self, NewMessage},
        prompt_context,
        spend::{self, Reservation},
        system_prompts, transitions,
        usage::{self, UsageGroup, UsageQuery},
        users,
    },
    ids::{ChatId, MessageId, ModelConfigId, ReplicaId, UserId},
    parts::{Part, Usage},
    status::{ChatStatus, MessageRole, MessageVisibility, SpendPeriod, UserRole},
    testing::TestDb,
};
use serde_json::json;

/// A user, and a running chat of theirs with one user message, claimed by
/// a fresh replica: its fence.
async fn running_chat(client: &impl GenericClient, owner: UserId) -> Fence {
    let chat = transitions::insert(
        client,
        &chats::NewChat {
            id: ChatId::new_v7(),
            owner_id: owner,
            parent_chat_id: None,
            root_chat_id: None,
            title: "",
            status: ChatStatus::Waiting,
            model_config_id: None,
            system_prompt: None,
            labels: &json!({}),
            tools: chats::ChatTools::default(),
            trace_parent: None,
        },
    )
    .await
    .unwrap();
    let outgoing = transitions::Outgoing {
        content: &[Part::text("hello")],
        created_by: Some(owner),
        idempotency_key: None,
        trace_parent: None,
    };
    let _ = transitions::send_to_idle(client, chat.id, &outgoing, None)
        .await
        .unwrap()
        .expect("sent");
    let worker = ReplicaId::new_random();
    let claimed = lifecycle::claim_pending(client, worker, 1000)
        .await
        .unwrap();
    let claimed = claimed
        .iter()
        .find(|c| c.chat.id == chat.id)
        .expect("claimed");
    Fence {
        chat_id: chat.id,
        worker_id: worker,
        generation: claimed.chat.generation,
    }
}

async fn new_user(client: &impl GenericClient) -> UserId {
    let id = UserId::new_random();
    users::insert(client, id, &format!("u-{id}"), UserRole::Member)
        .await
        .unwrap();
    id
}

fn priced_step(model: ModelConfigId, cost: i64) -> StepMessage {
    StepMessage {
        role: MessageRole::Assistant,
        content: vec![Part::text("answer")],
        model_config_id: Some(model),
        step: 0,
        usage: Usage {
            input_tokens: Some(100),
            output_tokens: Some(10),
            ..Usage::default()
        },
        cost_micros: Some(cost),
        runtime_ms: Some(1),
    }
}

#[tokio::test]
async fn a_reservation_counts_until_its_step_commits_and_the_limit_holds() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let owner = new_user(&client).await;
    let first = running_chat(&client, owner).await;
    let second = running_chat(&client, owner).await;
    let period = SpendPeriod::Month;

    assert_eq!(
        spend::reserve(&client, &first, period, 600, 1000)
            .await
            .unwrap(),
        Reservation::PeriodNotOpen
    );
    spend::open_period(&client, owner, period).await.unwrap();
    let Reservation::Reserved(after) = spend::reserve(&client, &first, period, 600, 1000)
        .await
        .unwrap()
    else {
        panic!("the first reservation fits");
    };
    assert_eq!((after.spent_micros, after.reserved_micros), (0, 600));
    // The second does not fit beside the first.
    let Reservation::OverLimit(refused) = spend::reserve(&client, &second, period, 600, 1000)
        .await
        .unwrap()
    else {
        panic!("600 + 600 is over 1000");
    };
    assert_eq!(refused.reserved_micros, 600);

    // The first's step commits: its cost replaces its reservation.
    let model = ModelConfigId::new_random();
    lifecycle::finish_turn(
        &client,
        &first,
        &[priced_step(model, 250)],
        &TurnEnd::Done,
        lifecycle::OwnerWebhooks::Unknown,
    )
    .await
    .unwrap()
    .expect("fenced write");
    let now = spend::spend(&client, owner, period).await.unwrap();
    assert_eq!((now.spent_micros, now.reserved_micros), (250, 0));
    assert!(matches!(
        spend::reserve(&client, &second, period, 600, 1000)
            .await
            .unwrap(),
        Reservation::Reserved(_)
    ));

    // Reserving again replaces the chat's own reservation instead of adding.
    let Reservation::Reserved(again) = spend::reserve(&client, &second, period, 700, 1000)
        .await
        .unwrap()
    else {
        panic!("a replacement fits");
    };
    assert_eq!(again.reserved_micros, 700);

    // A reservation whose run is gone (the chat was deleted) is swept.
    chats::delete(&client, second.chat_id).await.unwrap();
    let third = running_chat(&client, owner).await;
    let Reservation::Reserved(swept) = spend::reserve(&client, &third, period, 100, 1000)
        .await
        .unwrap()
    else {
        panic!("fits once the dead reservation is gone");
    };
    assert_eq!((swept.spent_micros, swept.reserved_micros), (250, 100));

    // A lost fence reserves nothing.
    let stale = Fence {
        generation: chatd_shared::ids::Generation(third.generation.0 - 1),
        ..third
    };
    assert_eq!(
        spend::reserve(&client, &stale, period, 1, 1000)
            .await
            .unwrap(),
        Reservation::OwnershipLost
    );
}

#[tokio::test]
async fn step_commits_keep_the_usage_rollup_and_a_new_period_starts_from_it() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let owner = new_user(&client).await;
    let model = ModelConfigId::new_random();
    for _ in 0..3 {
        let fence = running_chat(&client, owner).await;
        let mut tool_step = priced_step(model, 5);
        tool_step.content = vec![Part::ToolCall {
            id: "c".into(),
            name: "t".into(),
            args: json!({}),
        }];
        lifecycle::persist_step(&client, &fence, &[tool_step])
            .await
            .unwrap()
            .expect("fenced");
        lifecycle::finish_turn(
            &client,
            &fence,
            &[priced_step(model, 7)],
            &TurnEnd::Done,
            lifecycle::OwnerWebhooks::Unknown,
        )
        .await
        .unwrap()
        .expect("fenced");
    }
    let today = chrono::Utc::now().date_naive();
    let rows = usage::usage(
        &client,
        &UsageQuery {
            user: Some(owner),
            from: today,
            to: today,
            group: UsageGroup::Model,
        },
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key, model.to_string());
    assert_eq!(
        (
            rows[0].cost_micros,
            rows[0].input_tokens,
            rows[0].output_tokens,
            rows[0].turns
        ),
        (36, 600, 60, 3)
    );
    // Spent so far counts once a limit applies.
    spend::open_period(&client, owner, SpendPeriod::Day)
        .await
        .unwrap();
    let spent = spend::spend(&client, owner, SpendPeriod::Day)
        .await
        .unwrap();
    assert_eq!(spent.spent_micros, 36);
}

#[tokio::test]
async fn compaction_marks_what_it_replaces_once() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let owner = new_user(&client).await;
    let fence = running_chat(&client, owner).await;
    lifecycle::persist_step(
        &client,
        &fence,
        &[priced_step(ModelConfigId::new_random(), 1)],
    )
    .await
    .unwrap()
    .expect("fenced");
    let last_user = messages::insert(
        &client,
        fence.chat_id,
        MessageRole::User,
        &NewMessage {
            content: &[Part::text("next question")],
            ..NewMessage::default()
        },
    )
    .await
    .unwrap();
    let text = [Part::text("we said hello")];
    let summary = Summary {
        before: last_user.id,
        content: &text,
        model_config_id: ModelConfigId::new_random(),
        usage: Usage::default(),
        cost_micros: Some(3),
        runtime_ms: 5,
    };
    let Compacted::Stored {
        summary: stored,
        through,
    } = compaction::compact(&client, &fence, &summary)
        .await
        .unwrap()
    else {
        panic!("the first compaction stores a summary");
    };
    assert_eq!(stored.visibility, MessageVisibility::Model);
    assert_eq!(stored.role, MessageRole::System);
    assert!(through < last_user.id);
    assert_eq!(
        compaction::compact(&client, &fence, &summary)
            .await
            .unwrap(),
        Compacted::NothingToReplace,
        "the same range is never summarized twice"
    );
    let context = prompt_context::load(&client, fence.chat_id, owner)
        .await
        .unwrap();
    let ids: Vec<MessageId> = context.history.iter().map(|m| m.id).collect();
    assert_eq!(ids, [last_user.id, stored.id]);
    // The history users read still has every message.
    let (page, _) = messages::page(&client, fence.chat_id, None, 50)
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
}

#[tokio::test]
async fn a_generated_title_never_replaces_one_that_is_set() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let owner = new_user(&client).await;
    let fence = running_chat(&client, owner).await;
    assert_eq!(
        chats::set_generated_title(&client, fence.chat_id, "Greeting")
            .await
            .unwrap(),
        Some(owner)
    );
    assert_eq!(
        chats::set_generated_title(&client, fence.chat_id, "Another")
            .await
            .unwrap(),
        None
    );
    let other = running_chat(&client, owner).await;
    let mine = chats::ChatUpdate {
        title: Some("Mine"),
        ..Default::default()
    };
    chats::update(&client, other.chat_id, &mine).await.unwrap();
    assert_eq!(
        chats::set_generated_title(&client, other.chat_id, "Generated")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_prompt_context_has_the_owners_settings() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let owner = new_user(&client).await;
    let fence = running_chat(&client, owner).await;
    let context = prompt_context::load(&client, fence.chat_id, owner)
        .await
        .unwrap();
    assert_eq!(context.user_prompt, "");
    assert_eq!(context.user_spend_limit, None);
    assert_eq!(context.history.len(), 1);
    system_prompts::set_user(&client, owner, "Call me Ada.")
        .await
        .unwrap();
    spend::set_user_limit(&client, owner, Some(5))
        .await
        .unwrap();
    let context = prompt_context::load(&client, fence.chat_id, owner)
        .await
        .unwrap();
    assert_eq!(context.user_prompt, "Call me Ada.");
    assert_eq!(context.user_spend_limit, Some(5));
    assert!(
        !system_prompts::set_user(&client, UserId::new_random(), "x")
            .await
            .unwrap()
    );
}
