//! chatd-relay: token-level parts of a running chat travel from the replica
//! that runs it ("B") to replicas whose clients watch it ("A"), over one
//! multiplexed WebSocket per pair of replicas (ARCHITECTURE.md §7). Parts are never
//! durable and never pass through PostgreSQL.
//!
//! - [`server`]: B's side. `GET /relay/v1` on the relay listener, bearer
//!   secret checked in constant time; serves `sub`/`unsub` from its
//!   [`PartSource`] (the replica's stream hub).
//! - [`peers`]: A's side. [`PeerManager`] keeps at most one connection per
//!   peer, follows chats on the replica that runs them, reconnects with
//!   backoff and resubscribes from the last seq seen, and hands parts to its
//!   [`PartSink`] (the same hub), discarding anything of a stale generation.
//! - [`protocol`]: the frames.
//! - `pulse`: the ping / idle rule both ends apply to a connection.

pub mod metrics;
pub mod peers;
pub mod protocol;
mod pulse;
pub mod server;
mod source;

pub use metrics::RelayMetrics;
pub use peers::{PeerConfig, PeerManager};
pub use server::{RelayServerConfig, router};
pub use source::{PartSink, PartSource, PeerDirectory, SourceItem, Watch, WatchItems};
