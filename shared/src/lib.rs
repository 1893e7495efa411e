//! chatd-shared: what every chatd crate agrees on.
//!
//! - [`ids`], [`status`], [`parts`]: the domain vocabulary (typed ids, chat
//!   status and roles, message parts).
//! - [`db`]: the PostgreSQL pool and one function per statement, by table.
//! - [`pubsub`]: LISTEN/NOTIFY with batching, routing and resync.
//! - [`backoff`]: retry and reconnect delays, with full jitter.
//! - [`sync`]: taking a mutex.
//! - [`tools`]: client tools, where recorded tool calls run, tool names.
//! - [`pg_server`]: running a private PostgreSQL from the installed binaries
//!   (used by the test harness and `chatd dev`).
//! - [`testing`] (feature `testing`): the real-PostgreSQL test harness.

pub mod api;
pub mod auth_token;
pub mod backoff;
pub mod db;
pub mod duration;
pub mod error_chain;
pub mod ids;
pub mod parts;
pub mod pg_server;
pub mod pubsub;
pub mod status;
pub mod stream;
pub mod sync;
pub mod tools;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "testing")]
pub mod testing;
