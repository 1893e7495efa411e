//! The bench's database-only ceiling stores real turns with chatd's own
//! statements: what it counts is in the database afterwards.

use std::time::Duration;

use chatd_loadtest::bench::ceiling::{Plan, measure_on};
use chatd_shared::testing::TestDb;

#[tokio::test]
async fn the_ceiling_counts_turns_that_are_stored() {
    let db = TestDb::new().await;
    let plan = Plan {
        chats: 40,
        connections: 4,
        warm_up: Duration::from_millis(200),
        window: Duration::from_secs(1),
    };
    let ceiling = measure_on(db.url(), plan, None).await.expect("a ceiling");
    assert!(ceiling.turns_per_sec > 0.0, "{ceiling:?}");
    // One send per turn, two statements for each claimed chat, and a
    // share of a claim.
    assert!(
        (3.0..4.5).contains(&ceiling.statements_per_turn),
        "{ceiling:?}"
    );

    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE role = 'assistant' AND model_config_id IS NOT NULL),
                    count(*) FILTER (WHERE role = 'user' AND idempotency_key IS NOT NULL),
                    (SELECT coalesce(sum(output_tokens), 0) FROM usage_daily)::bigint
             FROM chat_messages",
            &[],
        )
        .await
        .unwrap();
    let (replies, sends, output_tokens): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let in_window = (ceiling.turns_per_sec * ceiling.window_secs).round() as i64;
    assert!(
        replies >= in_window,
        "{replies} replies stored, {in_window} counted in the window"
    );
    // Every reply answers a send, and its usage was accounted.
    assert!(sends >= replies, "{sends} sends for {replies} replies");
    assert_eq!(output_tokens, replies * 20);
}
