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
             SELECT c.owner_id, (hashtext(c.id::text) & {mask})::smallint AS stripe
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
             ON CONFLICT (day, user_id, model_config_id, stripe) DO UPDATE SET
                 cost_micros = u.cost_micros + EXCLUDED.cost_micros,
                 input_tokens = u.input_tokens + EXCLUDED.input_tokens,
                 output_tokens = u.output_tokens + EXCLUDED.output_tokens,
                 turns = u.turns + EXCLUDED.turns
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
        mask = USAGE_STRIPES - 1,
    )
}
