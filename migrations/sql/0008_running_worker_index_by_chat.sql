-- A fenced write finds its chat by `id = $1 AND worker_id = $2` (DESIGN §3).
-- With the running chats indexed by worker alone, the planner often took
-- that smaller index over the primary key and read every running chat of
-- the worker to find one (measured: 164 rows read for one chat, and for a
-- batch of 256 turn ends 35,000 buffer reads). With the chat's id as the
-- second key, the same index finds the one row; lease reconciliation and
-- recovery still read it by worker alone.
DROP INDEX chats_running_worker_idx;
CREATE INDEX chats_running_worker_idx ON chats (worker_id, id) WHERE status = 'running';
