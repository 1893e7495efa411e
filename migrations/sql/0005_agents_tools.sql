-- Agents and tools (DESIGN §17, invariant 16): subagents, MCP servers,
-- client-executed tools and the tool-call ledger.
--
-- The new statuses are only added here, never used: a value added by
-- ALTER TYPE cannot be used in the transaction that adds it, and every
-- migration runs in one.

-- The model called a tool the client runs: the chat waits for the results.
ALTER TYPE chat_status ADD VALUE IF NOT EXISTS 'requires_action';
-- A parent blocked in wait_agent: the chat waits for its subagents.
ALTER TYPE chat_status ADD VALUE IF NOT EXISTS 'waiting_on_agents';

-- A chat's tools beyond the built-in ones: the MCP servers it opted into
-- (by name) and the tools its client runs (name, description, parameters).
ALTER TABLE chats ADD COLUMN mcp_servers text[] NOT NULL DEFAULT '{}';
ALTER TABLE chats ADD COLUMN client_tools jsonb NOT NULL DEFAULT '[]'::jsonb
    CHECK (jsonb_typeof(client_tools) = 'array');

-- A parent's subagents, for limits, waits and interrupts.
CREATE INDEX chats_parent_idx ON chats (parent_chat_id) WHERE parent_chat_id IS NOT NULL;

-- MCP servers an admin registered. Tool names reach the model as
-- `name__tool`, so a name has no `__`. The bearer secret is never shown back.
CREATE TABLE mcp_servers (
    id                uuid PRIMARY KEY,
    name              text NOT NULL UNIQUE
                      CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,31}$' AND position('__' IN name) = 0),
    url               text NOT NULL CHECK (url ~ '^https?://'),
    bearer_token      text,
    -- NULL: every tool the server lists.
    allowed_tools     text[],
    -- Tools safe to run twice (an MCP tool is not, unless listed here).
    idempotent_tools  text[] NOT NULL DEFAULT '{}',
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The tool-call ledger: every call a turn makes, recorded (in the statement
-- that stores the assistant message asking for it) before it runs, and
-- finished in the statement that stores its result. A call whose result is
-- missing after a crash is known to have started; `idempotent` says whether
-- running it again is safe.
--
-- Calls that wait on something outside the chat are rows too: a call the
-- client runs (`runs_on = 'client'`) and a wait for subagents
-- (`runs_on = 'agents'`, `waits_on` the children), each with a deadline
-- while the chat waits (invariant 16: a wait is a row, never a task).
CREATE TABLE tool_calls (
    id           bigserial PRIMARY KEY,
    chat_id      uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    -- The assistant message that made the call.
    message_id   bigint NOT NULL REFERENCES chat_messages (id) ON DELETE CASCADE,
    call_id      text NOT NULL,
    tool         text NOT NULL,
    args         jsonb NOT NULL,
    runs_on      text NOT NULL CHECK (runs_on IN ('replica', 'client', 'agents')),
    idempotent   boolean NOT NULL,
    -- The run that recorded it.
    generation   bigint NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    deadline     timestamptz,
    waits_on     uuid[],
    finished_at  timestamptz,
    is_error     boolean,
    UNIQUE (message_id, call_id)
);
-- A chat's calls without a result (recovery, resuming a wait, tool results).
CREATE INDEX tool_calls_open_idx ON tool_calls (chat_id) WHERE finished_at IS NULL;
-- Waits whose deadline passes (the heartbeat looks).
CREATE INDEX tool_calls_deadline_idx ON tool_calls (deadline)
    WHERE finished_at IS NULL AND deadline IS NOT NULL;
