-- Wave 1 of the chatd schema (DESIGN §2): users and tokens, the replica
-- registry, providers and model configs, chats, their messages and queues.
-- Every timestamp is written with the database clock.

CREATE TYPE chat_status AS ENUM ('pending', 'running', 'waiting', 'error');
CREATE TYPE message_role AS ENUM ('system', 'user', 'assistant', 'tool');
CREATE TYPE message_visibility AS ENUM ('user', 'model', 'both');

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    username    text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tokens look like `chatd_<32 base62 chars>`; only their SHA-256 is stored.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL DEFAULT '',
    token_hash    bytea NOT NULL UNIQUE,
    prefix        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    expires_at    timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

-- One row per running replica process; its lease is the liveness signal for
-- every chat it runs.
CREATE TABLE replicas (
    id                uuid PRIMARY KEY,
    hostname          text NOT NULL,
    relay_url         text,
    version           text NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    heartbeat_at      timestamptz NOT NULL DEFAULT now(),
    lease_expires_at  timestamptz NOT NULL,
    draining          boolean NOT NULL DEFAULT false
);
CREATE INDEX replicas_lease_expires_at_idx ON replicas (lease_expires_at);

-- `openai` covers every OpenAI-compatible server (vLLM, Ollama, OpenRouter, LiteLLM).
CREATE TABLE providers (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    kind         text NOT NULL CHECK (kind IN ('openai', 'anthropic', 'mock')),
    base_url     text NOT NULL,
    api_key      text,
    api_key_env  text,
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_configs (
    id                             uuid PRIMARY KEY,
    provider_id                    uuid NOT NULL REFERENCES providers (id),
    model                          text NOT NULL CHECK (length(model) >= 1),
    display_name                   text NOT NULL,
    enabled                        boolean NOT NULL DEFAULT true,
    is_default                     boolean NOT NULL DEFAULT false,
    context_limit                  integer NOT NULL CHECK (context_limit > 0),
    compaction_threshold_pct       smallint NOT NULL DEFAULT 70
                                   CHECK (compaction_threshold_pct BETWEEN 1 AND 100),
    max_output_tokens              integer NOT NULL DEFAULT 4096 CHECK (max_output_tokens > 0),
    price_input_micros_per_mtok    bigint,
    price_output_micros_per_mtok   bigint,
    price_cache_read_micros_per_mtok  bigint,
    price_cache_write_micros_per_mtok bigint,
    options                        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at                     timestamptz NOT NULL DEFAULT now(),
    updated_at                     timestamptz NOT NULL DEFAULT now(),
    deleted_at                     timestamptz
);
CREATE INDEX model_configs_provider_id_idx ON model_configs (provider_id);
-- At most one live default model.
CREATE UNIQUE INDEX model_configs_single_default_idx
    ON model_configs ((true)) WHERE is_default AND deleted_at IS NULL;

CREATE TABLE chats (
    id                   uuid PRIMARY KEY,            -- UUIDv7: creation order
    owner_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    parent_chat_id       uuid REFERENCES chats (id) ON DELETE SET NULL,
    root_chat_id         uuid REFERENCES chats (id) ON DELETE SET NULL,
    title                text NOT NULL DEFAULT '',
    status               chat_status NOT NULL DEFAULT 'waiting',
    model_config_id      uuid REFERENCES model_configs (id),
    system_prompt        text,
    labels               jsonb NOT NULL DEFAULT '{}'::jsonb,
    archived             boolean NOT NULL DEFAULT false,
    last_error           text,
    -- The replica running the chat. Not a foreign key: replica rows vanish,
    -- and recovery treats a missing row like an expired lease.
    worker_id            uuid,
    -- The fencing token: +1 on every change of ownership (DESIGN §3).
    generation           bigint NOT NULL DEFAULT 0,
    interrupt_requested  boolean NOT NULL DEFAULT false,
    started_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'running') = (worker_id IS NOT NULL))
);
-- The acquirer's queue: oldest pending first.
CREATE INDEX chats_pending_idx ON chats (updated_at, id)
    WHERE status = 'pending' AND NOT archived;
-- Lease reconciliation and recovery look chats up by worker.
CREATE INDEX chats_running_worker_idx ON chats (worker_id) WHERE status = 'running';
-- An owner's chat list, newest first.
CREATE INDEX chats_owner_idx ON chats (owner_id, updated_at DESC, id DESC);

CREATE TABLE chat_messages (
    id                  bigserial PRIMARY KEY,
    chat_id             uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role                message_role NOT NULL,
    visibility          message_visibility NOT NULL DEFAULT 'both',
    content             jsonb NOT NULL CHECK (jsonb_typeof(content) = 'array'),
    created_by          uuid,
    model_config_id     uuid,
    generation          bigint,
    step                integer,
    input_tokens        bigint,
    output_tokens       bigint,
    reasoning_tokens    bigint,
    cache_read_tokens   bigint,
    cache_write_tokens  bigint,
    cost_micros         bigint,
    runtime_ms          bigint,
    compacted           boolean NOT NULL DEFAULT false,
    deleted             boolean NOT NULL DEFAULT false,
    idempotency_key     text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_chat_id_idx ON chat_messages (chat_id, id);
CREATE UNIQUE INDEX chat_messages_idempotency_idx
    ON chat_messages (chat_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Messages sent while a chat is busy; FIFO by id, at most 20 per chat
-- (enforced by the insert statement).
CREATE TABLE chat_queued_messages (
    id               bigserial PRIMARY KEY,
    chat_id          uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    content          jsonb NOT NULL CHECK (jsonb_typeof(content) = 'array'),
    created_by       uuid,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_queued_messages_chat_id_idx ON chat_queued_messages (chat_id, id);
CREATE UNIQUE INDEX chat_queued_messages_idempotency_idx
    ON chat_queued_messages (chat_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
