-- Death detection (ARCHITECTURE.md §4): each replica holds a session-level
-- advisory lock keyed `lock_key` on its listener session for its whole
-- life, and registers only while it holds it. A peer that can take that
-- lock knows the session is gone. NULL: a replica that holds no such lock
-- (an older version), judged by its lease alone.
ALTER TABLE replicas ADD COLUMN lock_key bigint;
