//! chatd-replica: one chatd replica process.
//!
//! - [`runtime`]: shares work with the other replicas through PostgreSQL
//!   (lease, acquire, recovery, fencing, shutdown).
//! - [`llm`]: streaming model providers behind one trait; [`models`]: the
//!   cached catalog of model configs and their providers.
//! - [`turn`]: the turn loop, the [`runtime::ChatRunner`] of a real replica.
//! - [`tools`]: what the model can call.
//! - [`hub`]: the per-replica stream hub (parts of running chats, local subscribers).

pub mod api;
pub mod bootstrap;
pub mod hub;
pub mod llm;
pub mod models;
pub mod operations;
pub mod peer_directory;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod tools;
pub mod turn;
