//! chatd-replica: one chatd replica process. [`runtime`] shares work with
//! the other replicas through PostgreSQL (lease, acquire, recovery, fencing,
//! shutdown).

pub mod runtime;
