-- Operators' answers (DESIGN §11).
--
-- The trace context (a W3C `traceparent`) of the request that last made the
-- chat pending: the run that picks the chat up, on whichever replica, links
-- its span to that request. Written by the pending transition itself, never
-- carried in a notification; NULL when tracing is off.
ALTER TABLE chats ADD COLUMN trace_parent text;

-- Retries of the model call of the step in progress, for the diagnosis
-- endpoint: set by the worker when it retries (fenced), back to 0 when a
-- step is persisted, the turn ends or the chat is claimed.
ALTER TABLE chats ADD COLUMN step_retries integer NOT NULL DEFAULT 0;

-- How many chats the replica runs at most (CHATD_MAX_RUNNING_CHATS), so
-- any replica can tell an operator every replica's free slots.
ALTER TABLE replicas ADD COLUMN max_running_chats integer;
