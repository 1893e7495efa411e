//! What a committed model call costs, recorded by the statement that
//! commits it (a step, a turn's last step, a compaction summary): the day's
//! usage rollup of the chat's owner and model (`usage_daily`), and the
//! owner's spend (`user_spend`, when a limit applies to them), where the
//! chat's reservation is replaced by the cost (invariant 15). Part of the
//! commit, so a step is counted exactly when it is stored, and costs no
//! statement of its own.

/// Stripes of a (day, user, model) usage row, chosen by chat: one user's
/// concurrent turn ends queue on a stripe's row lock for the rest of their
/// statement. 64, not 8: in the bench (one owner, 5,000 chats) 8 stripes
/// made `finish_turn` wait (1.07 -> 0.71 ms per call with 64) and cost
/// PostgreSQL ~6-9 % more CPU per turn; a usage report reads at most 64
/// rows per day and model.
const USAGE_STRIPES: i32 = 64;

/// How a usage row (`INSERT INTO usage_daily AS u`) that exists already
/// takes what is added to it.
const USAGE_ADDED: &str = "ON CONFLICT (day, user_id, model_config_id, stripe) DO UPDATE SET
    cost_micros = u.cost_micros + EXCLUDED.cost_micros,
    input_tokens = u.input_tokens + EXCLUDED.input_tokens,
    output_tokens = u.output_tokens + EXCLUDED.output_tokens,
    turns = u.turns + EXCLUDED.turns";

/// The CTEs of the accounting, to put in a statement after a CTE `owned`
/// (the chat's id when the fence holds) and a CTE `step` (the committed
/// rows, with `model_config_id`, `cost_micros`, `input_tokens` and
/// `output_tokens`; rows without a model are not model calls). With
/// `turn_ends`, the day's turn count grows by one when the step is not empty.
/// Rows without a model call (a step's tool results) and no reservation to
/// release touch nothing: the owner's hot `user_spend` row is left alone.
pub fn step_ctes(turn_ends: bool) -> String {
    let turns = if turn_ends { 1 } else { 0 };
    format!(
        "acct_chat AS (
             SELECT c.owner_id, {stripe} AS stripe
             FROM chats c JOIN owned o ON o.id = c.id
         ), acct_step AS (
             SELECT model_config_id, coalesce(sum(cost_micros), 0)::bigint AS cost_micros,
                    coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
                    coalesce(sum(output_tokens), 0)::bigint AS output_tokens
             FROM step WHERE model_config_id IS NOT NULL GROUP BY model_config_id
         ), acct_usage AS (
             INSERT INTO usage_daily AS u (day, user_id, model_config_id, stripe, cost_micros,
                                           input_tokens, output_tokens, turns)
             SELECT (now() AT TIME ZONE 'UTC')::date, a.owner_id, s.model_config_id, a.stripe,
                    s.cost_micros, s.input_tokens, s.output_tokens, {turns}
             FROM acct_chat a, acct_step s
             {USAGE_ADDED}
         ), acct_released AS (
             DELETE FROM spend_reservations r USING owned o WHERE r.chat_id = o.id
             RETURNING r.period_start, r.amount_micros
         ), acct_spend AS (
             UPDATE user_spend s SET
                 spent_micros = s.spent_micros
                     + coalesce((SELECT sum(cost_micros) FROM acct_step), 0)::bigint,
                 reserved_micros = s.reserved_micros
                     - coalesce((SELECT sum(amount_micros) FROM acct_released), 0)::bigint
             FROM acct_chat a, deployment_settings d
             WHERE s.user_id = a.owner_id
               AND s.period_start = coalesce((SELECT min(period_start) FROM acct_released),
                                             date_trunc(d.spend_period, now(), 'UTC'))
               AND (EXISTS (SELECT 1 FROM acct_step) OR EXISTS (SELECT 1 FROM acct_released))
         )",
        stripe = stripe_of("c.id"),
    )
}

/// The usage stripe of the chat whose id is `chat_id` (an SQL expression).
pub(super) fn stripe_of(chat_id: &str) -> String {
    format!(
        "(hashtext({chat_id}::text) & {mask})::smallint",
        mask = USAGE_STRIPES - 1
    )
}

/// The accounting of many chats' turn ends in one statement
/// ([`super::turn_ends`]), as [`step_ctes`] with `turn_ends` does for one:
/// after a CTE `owned` (`id`, `want`, `owner_id`, `stripe` of each chat
/// whose fence holds) and a CTE `new_rows` (the rows stored, by `want`).
///
/// One statement may not touch a row twice, and chats of one owner end
/// together: the usage is summed per owner and model into one row, on the
/// stripe of the batch's first such chat (any stripe is right, a report
/// sums them all; the first chat's spreads batches as chats spread single
/// turn ends), and the spend per owner and period. Rows are written in key
/// order, so batches running at once take their row locks in one order.
pub fn turn_ends_ctes() -> String {
    format!(
        "acct_calls AS (
         SELECT n.want, n.model_config_id, coalesce(sum(n.cost_micros), 0)::bigint AS cost_micros,
                coalesce(sum(n.input_tokens), 0)::bigint AS input_tokens,
                coalesce(sum(n.output_tokens), 0)::bigint AS output_tokens
         FROM new_rows n WHERE n.model_config_id IS NOT NULL GROUP BY n.want, n.model_config_id
     ), acct_usage AS (
         INSERT INTO usage_daily AS u (day, user_id, model_config_id, stripe, cost_micros,
                                       input_tokens, output_tokens, turns)
         SELECT (now() AT TIME ZONE 'UTC')::date, o.owner_id, a.model_config_id,
                (array_agg(o.stripe ORDER BY o.want))[1], sum(a.cost_micros)::bigint,
                sum(a.input_tokens)::bigint, sum(a.output_tokens)::bigint, count(*)
         FROM acct_calls a JOIN owned o ON o.want = a.want
         GROUP BY o.owner_id, a.model_config_id
         ORDER BY o.owner_id, a.model_config_id
         {USAGE_ADDED}
     ), acct_released AS (
         DELETE FROM spend_reservations r USING owned o WHERE r.chat_id = o.id
         RETURNING o.want, r.period_start, r.amount_micros
     ), acct_owed AS (
         SELECT o.owner_id,
                coalesce(r.period_start, date_trunc(d.spend_period, now(), 'UTC')) AS period_start,
                coalesce(c.cost_micros, 0) AS cost_micros,
                coalesce(r.amount_micros, 0) AS released_micros
         FROM owned o CROSS JOIN deployment_settings d
         LEFT JOIN (SELECT want, sum(cost_micros) AS cost_micros FROM acct_calls GROUP BY want) c
             ON c.want = o.want
         LEFT JOIN (SELECT want, min(period_start) AS period_start,
                           sum(amount_micros) AS amount_micros
                    FROM acct_released GROUP BY want) r ON r.want = o.want
         WHERE c.want IS NOT NULL OR r.want IS NOT NULL
     ), acct_spend AS (
         UPDATE user_spend s SET
             spent_micros = s.spent_micros + a.cost_micros,
             reserved_micros = s.reserved_micros - a.released_micros
         FROM (SELECT owner_id, period_start, sum(cost_micros)::bigint AS cost_micros,
                      sum(released_micros)::bigint AS released_micros
               FROM acct_owed GROUP BY owner_id, period_start) a
         WHERE s.user_id = a.owner_id AND s.period_start = a.period_start
     )"
    )
}
