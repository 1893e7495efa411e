//! chatd-replica: one chatd replica process.
//!
//! - [`runtime`]: shares work with the other replicas through PostgreSQL
//!   (lease, acquire, recovery, fencing, shutdown).
//! - [`llm`]: streaming model providers behind one trait.

pub mod llm;
pub mod runtime;
