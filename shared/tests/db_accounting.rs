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
        turn_ends::{self, TurnEndCall},
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
    let rows = usage_today(&client, owner).await;
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

/// What a turn's end left for a client to see: what the statement answered,
/// the chat row, its open tool calls and queue.
async fn turn_end_seen(
    client: &impl GenericClient,
    fence: &Fence,
    answer: Option<(Vec<messages::Message>, lifecycle::Released)>,
) -> String {
    let answer = answer.map(|(committed, released)| {
        let committed: Vec<_> = committed
            .iter()
            .map(|m| {
                (
                    m.role,
                    m.content.clone(),
                    m.step,
                    m.generation,
                    m.cost_micros,
                )
            })
            .collect();
        let next = released.next.map(|m| (m.role, m.content, m.generation));
        (
            committed,
            released.status,
            released.owner_id,
            next,
            released.webhooks_queued,
        )
    });
    let chat = chats::get(client, fence.chat_id).await.unwrap().unwrap();
    let open = chatd_shared::db::tool_calls::open(client, fence.chat_id)
        .await
        .unwrap()
        .len();
    let queued = chatd_shared::db::queued_messages::list(client, fence.chat_id)
        .await
        .unwrap()
        .len();
    format!(
        "{answer:?} status={:?} worker={} error={:?} code={:?} open_calls={open} queued={queued}",
        chat.status,
        chat.worker_id.is_some(),
        chat.last_error,
        chat.last_error_code,
    )
}

/// One owner's turn ends of every kind: done with a priced step, failed
/// without a step, done with a queued message to go on with, refused,
/// done after a reservation, done with a tool result closing its call,
/// and two whose fence does not hold (a later generation; another worker).
async fn turn_ends_of_every_kind(
    client: &impl GenericClient,
    owner: UserId,
    model: ModelConfigId,
) -> Vec<(Fence, Vec<StepMessage>, TurnEnd)> {
    spend::open_period(client, owner, SpendPeriod::Month)
        .await
        .unwrap();
    let mut ends = Vec::new();
    ends.push((
        running_chat(client, owner).await,
        vec![priced_step(model, 7)],
        TurnEnd::Done,
    ));
    ends.push((
        running_chat(client, owner).await,
        Vec::new(),
        TurnEnd::Failed("boom".into()),
    ));
    let queued = running_chat(client, owner).await;
    chatd_shared::db::queued_messages::push(
        client,
        queued.chat_id,
        &[Part::text("and then")],
        Some(owner),
        None,
    )
    .await
    .unwrap()
    .expect("queued");
    ends.push((queued, vec![priced_step(model, 5)], TurnEnd::Done));
    ends.push((
        running_chat(client, owner).await,
        Vec::new(),
        TurnEnd::Refused {
            code: "spend_limit_exceeded".into(),
            message: "over".into(),
        },
    ));
    let reserved = running_chat(client, owner).await;
    let Reservation::Reserved(_) =
        spend::reserve(client, &reserved, SpendPeriod::Month, 600, 1_000_000)
            .await
            .unwrap()
    else {
        panic!("the reservation fits");
    };
    ends.push((reserved, vec![priced_step(model, 9)], TurnEnd::Done));
    let calling = running_chat(client, owner).await;
    let mut call_step = priced_step(model, 3);
    call_step.content = vec![Part::ToolCall {
        id: "c1".into(),
        name: "t".into(),
        args: json!({}),
    }];
    chatd_shared::db::tool_calls::record(
        client,
        &calling,
        &call_step,
        &[chatd_shared::db::tool_calls::NewCall {
            call_id: "c1".into(),
            tool: "t".into(),
            args: json!({}),
            runs_on: chatd_shared::tools::RunsOn::Replica,
            idempotent: true,
            waits_on: None,
        }],
    )
    .await
    .unwrap()
    .expect("fenced");
    let result = StepMessage {
        role: MessageRole::Tool,
        content: vec![Part::ToolResult {
            tool_call_id: "c1".into(),
            name: "t".into(),
            result: json!("ok"),
            is_error: false,
        }],
        model_config_id: None,
        step: 0,
        usage: Usage::default(),
        cost_micros: None,
        runtime_ms: None,
    };
    ends.push((calling, vec![result, priced_step(model, 4)], TurnEnd::Done));
    let mut stale = running_chat(client, owner).await;
    stale.generation = chatd_shared::ids::Generation(stale.generation.0 + 1);
    ends.push((stale, vec![priced_step(model, 100)], TurnEnd::Done));
    let mut elsewhere = running_chat(client, owner).await;
    elsewhere.worker_id = ReplicaId::new_random();
    ends.push((elsewhere, vec![priced_step(model, 200)], TurnEnd::Done));
    ends
}

/// The owner's usage today, per model.
async fn usage_today(client: &impl GenericClient, owner: UserId) -> Vec<usage::UsageRow> {
    let today = chrono::Utc::now().date_naive();
    usage::usage(
        client,
        &UsageQuery {
            user: Some(owner),
            from: today,
            to: today,
            group: UsageGroup::Model,
        },
    )
    .await
    .unwrap()
}

/// The owner's usage today and spend this month, as a client reads them.
async fn accounts(client: &impl GenericClient, owner: UserId) -> String {
    let usage: Vec<_> = usage_today(client, owner)
        .await
        .into_iter()
        .map(|row| {
            (
                row.key,
                row.cost_micros,
                row.input_tokens,
                row.output_tokens,
                row.turns,
            )
        })
        .collect();
    let spend = spend::spend(client, owner, SpendPeriod::Month)
        .await
        .unwrap();
    format!(
        "{usage:?} spent={} reserved={}",
        spend.spent_micros, spend.reserved_micros
    )
}

#[tokio::test]
async fn turn_ends_written_together_are_those_written_one_by_one() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let model = ModelConfigId::new_random();
    let (alone_owner, together_owner) = (new_user(&client).await, new_user(&client).await);

    let alone = turn_ends_of_every_kind(&client, alone_owner, model).await;
    let mut seen_alone = Vec::new();
    for (fence, step, end) in &alone {
        let answer = lifecycle::finish_turn(
            &client,
            fence,
            step,
            end,
            lifecycle::OwnerWebhooks::NoneSeen,
        )
        .await
        .unwrap();
        seen_alone.push(turn_end_seen(&client, fence, answer).await);
    }

    let together = turn_ends_of_every_kind(&client, together_owner, model).await;
    let calls: Vec<_> = together
        .iter()
        .map(|(fence, step, end)| TurnEndCall::new(*fence, step, end.clone()).unwrap())
        .collect();
    let answers = turn_ends::finish_turns(&client, &calls).await.unwrap();
    let mut seen_together = Vec::new();
    for ((fence, _, _), answer) in together.iter().zip(answers) {
        seen_together.push(turn_end_seen(&client, fence, answer).await);
    }
    let owners = |seen: Vec<String>, owner: UserId| {
        seen.into_iter()
            .map(|s| s.replace(&owner.to_string(), "OWNER"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        owners(seen_together, together_owner),
        owners(seen_alone, alone_owner)
    );
    assert_eq!(
        accounts(&client, together_owner).await,
        accounts(&client, alone_owner).await
    );
    // What the two owners' accounts say, so that equal is also right:
    // 7 + 5 + 9 + 3 + 4 spent, four turns ended with a model call, the
    // reservation released.
    assert_eq!(
        accounts(&client, together_owner).await,
        format!("[(\"{model}\", 28, 500, 50, 4)] spent=28 reserved=0")
    );
}

#[tokio::test]
async fn a_batched_turn_end_leaves_an_owner_with_a_webhook_to_the_full_statement() {
    let db = TestDb::new().await;
    let client = db.pool().get().await.unwrap();
    let (plain, hooked) = (new_user(&client).await, new_user(&client).await);
    chatd_shared::testing::webhook_for(&client, hooked).await;
    let fences = [
        running_chat(&client, plain).await,
        running_chat(&client, hooked).await,
    ];
    let calls: Vec<_> = fences
        .iter()
        .map(|fence| TurnEndCall::new(*fence, &[], TurnEnd::Done).unwrap())
        .collect();
    let answers = turn_ends::finish_turns(&client, &calls).await.unwrap();
    assert!(answers[0].is_some(), "no webhook: ended");
    assert!(answers[1].is_none(), "a webhook: left alone");
    let left = chats::get(&client, fences[1].chat_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.status, ChatStatus::Running);
}
