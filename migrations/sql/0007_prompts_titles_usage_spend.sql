-- Chat features, part 1 (DESIGN §17): system prompts, titles, context
-- compaction, cost and usage, spend limits.

-- Settings of the whole deployment: exactly one row. Replicas cache it and
-- drop the cache on a `chatd_control` notice.
CREATE TABLE deployment_settings (
    singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The first of the three system prompts every model call gets.
    system_prompt       text NOT NULL DEFAULT '',
    -- Every user's spend limit per period, in micro-dollars, unless the user
    -- has an override; NULL: no limit.
    spend_limit_micros  bigint CHECK (spend_limit_micros >= 0),
    spend_period        text NOT NULL DEFAULT 'month'
                        CHECK (spend_period IN ('day', 'week', 'month')),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
INSERT INTO deployment_settings DEFAULT VALUES;

-- Settings of one user. A turn reads its owner's row with the history, in
-- the one statement that loads the prompt.
CREATE TABLE user_settings (
    user_id             uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- The second system prompt, after the deployment's.
    custom_prompt       text NOT NULL DEFAULT '',
    -- Overrides the deployment's limit; NULL: the deployment's applies.
    spend_limit_micros  bigint CHECK (spend_limit_micros >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The model config titles are generated with (at most one live one);
-- without one, a chat's own model writes its title.
ALTER TABLE model_configs ADD COLUMN use_for_titles boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX model_configs_single_title_idx
    ON model_configs ((true)) WHERE use_for_titles AND deleted_at IS NULL;

-- The stable code of the last turn's failure (`spend_limit_exceeded`, …);
-- NULL for failures older than this column (clients see `turn_failed`).
ALTER TABLE chats ADD COLUMN last_error_code text;

-- Usage per day, user and model, kept by the statements that commit steps,
-- so the usage endpoints read a few rows per day instead of messages. Each
-- (day, user, model) is split into stripes by chat, so one user's
-- concurrent turns do not queue on one row. No foreign keys: usage stays
-- when a chat, model or user goes.
CREATE TABLE usage_daily (
    day              date NOT NULL,
    user_id          uuid NOT NULL,
    model_config_id  uuid NOT NULL,
    stripe           smallint NOT NULL,
    cost_micros      bigint NOT NULL DEFAULT 0,
    input_tokens     bigint NOT NULL DEFAULT 0,
    output_tokens    bigint NOT NULL DEFAULT 0,
    turns            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id, model_config_id, stripe)
);
-- A user's usage over a range of days.
CREATE INDEX usage_daily_user_idx ON usage_daily (user_id, day);

-- What was spent before this table existed; a turn is a model reply
-- without tool calls (the last step of a turn).
INSERT INTO usage_daily (day, user_id, model_config_id, stripe, cost_micros, input_tokens,
                         output_tokens, turns)
SELECT (m.created_at AT TIME ZONE 'UTC')::date, c.owner_id, m.model_config_id, 0,
       coalesce(sum(m.cost_micros), 0), coalesce(sum(m.input_tokens), 0),
       coalesce(sum(m.output_tokens), 0),
       count(*) FILTER (WHERE NOT m.content @> '[{"type": "tool_call"}]'::jsonb)
FROM chat_messages m JOIN chats c ON c.id = m.chat_id
WHERE m.role = 'assistant' AND m.model_config_id IS NOT NULL AND NOT m.deleted
GROUP BY 1, 2, 3;

-- Spend of a user in one period (its start, by the deployment's period),
-- and what turns in flight reserved. Both live in this one row, so a
-- reservation checks and adds in one conditional UPDATE that PostgreSQL
-- re-evaluates on the latest row version: race-free across replicas
-- (invariant 15). Rows exist only for users a limit applied to.
CREATE TABLE user_spend (
    user_id          uuid NOT NULL,
    period_start     timestamptz NOT NULL,
    spent_micros     bigint NOT NULL DEFAULT 0,
    reserved_micros  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, period_start)
);

-- The reservation of the model call a run is about to make (one per chat),
-- counted in its user's `user_spend.reserved_micros` until the step commits.
-- A reservation whose run is gone (the chat no longer runs under that
-- generation, or was deleted) is swept by the owner's next reservation.
CREATE TABLE spend_reservations (
    chat_id        uuid PRIMARY KEY,
    user_id        uuid NOT NULL,
    generation     bigint NOT NULL,
    period_start   timestamptz NOT NULL,
    amount_micros  bigint NOT NULL CHECK (amount_micros >= 0)
);
CREATE INDEX spend_reservations_user_idx ON spend_reservations (user_id);
