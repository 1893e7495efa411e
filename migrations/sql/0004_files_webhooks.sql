-- Attachments and completion webhooks (DESIGN §17, invariant 17).

-- An uploaded file: its facts here, its bytes in `file_chunks`. The type is
-- what chatd sniffed from the content, never the client's claim. Files are
-- immutable and go with their owner.
CREATE TABLE files (
    id          uuid PRIMARY KEY,
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    media_type  text NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0),
    sha256      bytea NOT NULL CHECK (length(sha256) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_owner_idx ON files (owner_id, created_at DESC);

-- A file's bytes, in order, a chunk per row: written and read a chunk at a
-- time, so neither side holds a large file in one statement's buffer.
CREATE TABLE file_chunks (
    file_id  uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq      integer NOT NULL CHECK (seq >= 0),
    data     bytea NOT NULL,
    PRIMARY KEY (file_id, seq)
);
-- Out of line and uncompressed: most attachments (images, PDFs) are
-- compressed already, and compressing them again only costs CPU.
ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- A user's subscription to turn ends (of one chat, or of all their chats).
-- The secret signs every delivery; it is shown once, at creation.
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url         text NOT NULL,
    events      text[] NOT NULL CHECK (cardinality(events) > 0 AND events <@ ARRAY[
                    'turn.completed', 'turn.failed', 'turn.requires_action']),
    chat_id     uuid REFERENCES chats (id) ON DELETE CASCADE,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- The finishing statement looks webhooks up by the chat's owner, every turn.
CREATE INDEX webhooks_owner_idx ON webhooks (owner_id);

-- The outbox: one row per webhook and turn end, written in the transaction
-- that ends the turn, delivered (at least once) by any replica's sender.
-- `payload` is the exact body sent on every attempt; the row's id is the
-- delivery id receivers de-duplicate by.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event            text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    -- When a sender may (next) try it; a claim pushes it out by the claim's
    -- lease, so a sender that dies mid-attempt leaves it due again.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- The senders' queue: due deliveries, oldest first.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- A webhook's recent deliveries.
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC, id);
-- Pruning finished deliveries past their retention.
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (created_at)
    WHERE status <> 'pending';
