//! chatd-replica: one chatd replica process.
//!
//! - [`runtime`]: shares work with the other replicas through PostgreSQL
//!   (lease, acquire, recovery, fencing, shutdown).
//! - [`llm`]: streaming model providers behind one trait.
//! - [`tools`]: what the model can call.
//! - [`hub`]: the per-replica stream hub (parts of running chats, local subscribers).

pub mod hub;
pub mod llm;
pub mod runtime;
pub mod tools;
