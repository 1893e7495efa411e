-- What the public API needs beyond wave 1 (DESIGN §9).

-- Creating a chat is idempotent per owner and key: a replay returns the
-- original chat.
ALTER TABLE chats ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX chats_owner_idempotency_idx
    ON chats (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Chat listings page newest-first by id (UUIDv7 ids sort by creation time),
-- which stays stable while chats change.
CREATE INDEX chats_owner_id_idx ON chats (owner_id, id DESC);

-- A promoted queued message runs before the others: the queue is ordered by
-- priority (highest first), then id.
ALTER TABLE chat_queued_messages ADD COLUMN priority bigint NOT NULL DEFAULT 0;
DROP INDEX chat_queued_messages_chat_id_idx;
CREATE INDEX chat_queued_messages_order_idx ON chat_queued_messages (chat_id, priority DESC, id);
