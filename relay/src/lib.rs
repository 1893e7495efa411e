//! chatd-relay: token-level parts of a running chat travel from the replica
//! that runs it to replicas whose clients watch it, over one multiplexed
//! WebSocket per peer (DESIGN §7). Parts are never durable and never pass
//! through PostgreSQL.
//!
//! Filled in by the relay issue.
