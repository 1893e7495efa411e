//! Spend limits (invariant 15): a send at the limit is refused with the
//! documented body and writes nothing (a retry of one that was taken still
//! gets its original answer); a turn that cannot reserve its
//! estimate ends in `error` with `spend_limit_exceeded`; concurrent turns of
//! one user across replicas never spend more than the limit allows.

use std::time::Instant;

use chatd_shared::{
    api::{CreateChat, SendMessage, SpendLimits},
    client::{ClientError, Transport},
    status::{ChatStatus, SpendPeriod},
    stream::StreamEvent,
};
use chrono::{Datelike, Utc};
use futures::future::join_all;
use serde_json::json;

use chatd_shared::testing::eventually;

use super::{
    common::{
        WAIT, Wire,
        app::{idle_chat, open_stream, read_until, say},
    },
    fixture::{ModelSpec, Setup, create, wait_idle},
};

/// One micro-dollar a token, in and out.
fn priced() -> ModelSpec {
    ModelSpec {
        prices: [Some(1_000_000), Some(1_000_000), None, None],
        max_output_tokens: 100,
        ..ModelSpec::default()
    }
}

/// The status and error body of a refused call.
fn refused(error: ClientError) -> (u16, String, serde_json::Value) {
    match error {
        ClientError::Api {
            status,
            code,
            details,
            ..
        } => (status.as_u16(), code, details.unwrap_or_default()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn a_send_at_the_limit_is_refused_with_the_documented_body_and_writes_nothing() {
    let setup = Setup::start(1, Wire::OpenAi, priced(), |_, _| {}).await;
    let admin = setup.app.admin(0);
    let (ada_id, token) = setup.app.user("ada").await;
    let ada = setup.app.client(0, &token);
    // Both requests are taken, with keys a retry would carry.
    let first = CreateChat {
        text: Some(say(json!({"text": "first"}))),
        ..Default::default()
    };
    let chat = ada
        .create_chat(&first, Some("create-1"))
        .await
        .unwrap()
        .body
        .id;
    wait_idle(&ada, chat, 2).await;
    let second = SendMessage {
        text: Some(say(json!({"text": "second"}))),
        ..Default::default()
    };
    let taken = ada
        .send_message(chat, &second, Some("send-1"))
        .await
        .unwrap();
    wait_idle(&ada, chat, 4).await;
    let spent = ada.my_spend().await.unwrap();
    assert!(spent.spent_micros > 0);
    assert_eq!(spent.limit_micros, None);

    // Ada's limit is what she spent: the next send is over it.
    admin
        .set_user_spend_limit(ada_id, Some(spent.spent_micros))
        .await
        .unwrap();
    let send = SendMessage {
        text: Some("one more".into()),
        ..Default::default()
    };
    let (status, code, details) = refused(ada.send_message(chat, &send, None).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "spend_limit_exceeded"));
    let now = Utc::now();
    let next_month = if now.month() == 12 {
        format!("{}-01-01T00:00:00Z", now.year() + 1)
    } else {
        format!("{}-{:02}-01T00:00:00Z", now.year(), now.month() + 1)
    };
    assert_eq!(
        details,
        json!({
            "spent_micros": spent.spent_micros,
            "limit_micros": spent.spent_micros,
            "resets_at": next_month,
        })
    );
    // Nothing was written: no message, no queue, no new chat.
    let page = ada.list_messages(chat, &Default::default()).await.unwrap();
    assert_eq!(page.messages.len(), 4);
    assert_eq!(
        ada.get_chat(chat).await.unwrap().status,
        ChatStatus::Waiting
    );
    let create = CreateChat {
        text: Some("a new chat".into()),
        ..Default::default()
    };
    let (status, code, _) = refused(ada.create_chat(&create, None).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "spend_limit_exceeded"));
    assert_eq!(
        ada.list_chats(&Default::default())
            .await
            .unwrap()
            .chats
            .len(),
        1
    );
    // Retries of the requests that were taken get their original answers.
    let replayed = ada
        .send_message(chat, &second, Some("send-1"))
        .await
        .unwrap();
    assert_eq!(replayed.status.as_u16(), 200);
    assert_eq!(replayed.body, taken.body);
    let replayed = ada.create_chat(&first, Some("create-1")).await.unwrap();
    assert_eq!((replayed.status.as_u16(), replayed.body.id), (200, chat));
    let page = ada.list_messages(chat, &Default::default()).await.unwrap();
    assert_eq!(page.messages.len(), 4);
    let now = ada.my_spend().await.unwrap();
    assert_eq!(
        (
            now.spent_micros,
            now.reserved_micros,
            now.limit_micros,
            now.period
        ),
        (
            spent.spent_micros,
            0,
            Some(spent.spent_micros),
            SpendPeriod::Month
        )
    );

    // Removing the override lifts the limit.
    admin.set_user_spend_limit(ada_id, None).await.unwrap();
    assert!(ada.send_message(chat, &send, None).await.is_ok());
    setup.shutdown().await;
}

#[tokio::test]
async fn a_turn_that_cannot_reserve_its_estimate_ends_in_error() {
    let setup = Setup::start(2, Wire::Anthropic, priced(), |_, _| {}).await;
    let admin = setup.app.admin(0);
    // 50 µ$ a day for everyone: nothing spent yet, so sends pass, but one
    // call's output cap alone (100 tokens) is 100 µ$.
    admin
        .set_spend_limits(&SpendLimits {
            default_limit_micros: Some(50),
            period: SpendPeriod::Day,
        })
        .await
        .unwrap();
    let (_, token) = setup.app.user("bob").await;
    let bob = setup.app.client(1, &token);
    let chat = idle_chat(&bob).await;
    let mut stream = open_stream(&bob, chat, Transport::WebSocket).await;
    bob.send_message(
        chat,
        &SendMessage {
            text: Some("hello".into()),
            ..Default::default()
        },
        None,
    )
    .await
    .expect("under the limit, the send is taken");
    let events = read_until(&mut stream, |e| matches!(e, StreamEvent::Error { .. })).await;
    let Some(StreamEvent::Error { error, .. }) = events.last() else {
        unreachable!();
    };
    assert_eq!(error.code, "spend_limit_exceeded");
    assert_eq!(wait_idle(&bob, chat, 1).await, ChatStatus::Error);
    let chat_row = bob.get_chat(chat).await.unwrap();
    assert!(
        chat_row
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("spend limit")),
        "{chat_row:?}"
    );
    assert!(
        setup.mock.requests().is_empty(),
        "no model call was made, not even a title"
    );
    let spend = bob.my_spend().await.unwrap();
    assert_eq!((spend.spent_micros, spend.reserved_micros), (0, 0));
    setup.shutdown().await;
}

/// Reservations that wait on a row lock in the test's database (matched
/// by the start of the statement: PostgreSQL shows the first kilobyte).
async fn waiting_reservations(setup: &Setup) -> i64 {
    let client = setup.app.db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%FROM user_spend s, run, period%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn twenty_concurrent_sends_from_one_user_across_three_replicas_stay_within_the_limit() {
    // Output-priced only, capped at the 8 tokens the mock writes: a turn's
    // estimate is exactly its cost, so invariant 15 allows no overspend.
    let spec = ModelSpec {
        prices: [Some(0), Some(1_000_000), None, None],
        max_output_tokens: 8,
        ..ModelSpec::default()
    };
    // Room in each pool for every run to wait on the spend row at once,
    // however the claims share them out (the sends come together, so one
    // replica may claim most of the twenty).
    let setup = Setup::start(3, Wire::OpenAi, spec, |_, config| {
        config.database.pool_size = 32;
    })
    .await;
    let (user_id, token) = setup.app.user("carol").await;
    let limit = 6 * 8;
    setup
        .app
        .admin(0)
        .set_user_spend_limit(user_id, Some(limit))
        .await
        .unwrap();
    let clients: Vec<_> = (0..3).map(|i| setup.app.client(i, &token)).collect();
    // A first turn opens the period: 8 µ$ spent, 5 turns' worth left.
    let first = create(&clients[0], &say(json!({"tokens": 8})), None).await;
    assert_eq!(wait_idle(&clients[0], first, 2).await, ChatStatus::Waiting);
    let mut chats = Vec::new();
    for index in 0..20 {
        chats.push(idle_chat(&clients[index % 3]).await);
    }

    // The worst interleaving, every time: the test holds carol's spend row,
    // so every run's reservation has to wait for it, all at once.
    let mut holder = setup.app.db.pool().get().await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM user_spend WHERE user_id = $1 FOR UPDATE",
        &[&user_id],
    )
    .await
    .unwrap();
    let text = say(json!({"tokens": 8}));
    let started = Instant::now();
    let sends = chats.iter().enumerate().map(|(index, chat)| {
        let client = &clients[index % 3];
        let message = SendMessage {
            text: Some(text.clone()),
            ..Default::default()
        };
        async move { client.send_message(*chat, &message, None).await }
    });
    let sent = join_all(sends).await;
    let refused_at_send = sent.iter().filter(|result| result.is_err()).count();
    assert_eq!(refused_at_send, 0, "5 turns' worth was left: {sent:?}");
    eventually("20 reservations waiting on the spend row", WAIT, || async {
        (waiting_reservations(&setup).await == 20).then_some(())
    })
    .await;
    hold.commit().await.unwrap();

    let mut succeeded = 0;
    let mut refused_at_reservation = 0;
    for chat in &chats {
        match wait_idle(&clients[0], *chat, 1).await {
            ChatStatus::Waiting => succeeded += 1,
            _ => {
                let row = clients[0].get_chat(*chat).await.unwrap();
                assert!(
                    row.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("spend limit")),
                    "{row:?}"
                );
                refused_at_reservation += 1;
            }
        }
    }
    let spend = clients[1].my_spend().await.unwrap();
    println!(
        "spend race: limit {limit} µ$, 8 µ$ spent before, {succeeded} of 20 concurrent turns ran, \
         {refused_at_reservation} refused at reservation, spent {} µ$, reserved {} µ$, in {:?}",
        spend.spent_micros,
        spend.reserved_micros,
        started.elapsed()
    );
    assert!(
        spend.spent_micros <= limit,
        "overspent: {} µ$ over a limit of {limit} µ$",
        spend.spent_micros
    );
    assert_eq!(spend.spent_micros, 8 + 8 * succeeded as i64);
    assert_eq!(spend.reserved_micros, 0, "every reservation was settled");
    assert_eq!(succeeded, 5, "exactly the turns the limit pays for ran");
    assert_eq!(succeeded + refused_at_reservation, 20);
    setup.shutdown().await;
}
