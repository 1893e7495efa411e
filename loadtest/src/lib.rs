//! chatd-loadtest: the scaletest harness of chatd (ARCHITECTURE.md §13).
//!
//! - [`run`](run::run) drives virtual users (`user`) through the public
//!   API of a running cluster: each creates a chat on one replica, streams it
//!   from another and takes its turns (`turn`; a sample also from every other
//!   replica, `staleness`), while [`stats`] records latencies and failures
//!   and [`database`] reads what the run cost PostgreSQL. The result is a
//!   [`Summary`], printed by [`report`] and written as
//!   JSON.
//! - [`bench`](bench::bench) runs the standard scenario on this machine: a
//!   private PostgreSQL, replicas as child processes of the `chatd` binary,
//!   and a run against them, checked against the budgets of ARCHITECTURE.md §15.
//! - [`cli`] is the command line of the `chatd-loadtest` binary.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod database;
mod progress;
pub mod report;
pub mod run;
mod staleness;
pub mod stats;
pub mod summary;
mod turn;
pub mod user;

pub use config::RunConfig;
pub use run::{Hooks, RunError, run, run_with};
pub use summary::Summary;
