//! chatd-replica: one chatd replica process.
//!
//! - [`runtime`]: shares work with the other replicas through PostgreSQL
//!   (lease, acquire, recovery, fencing, shutdown).
//! - [`llm`]: streaming model providers behind one trait; [`models`]: the
//!   cached catalog of model configs and their providers.
//! - [`turn`]: the turn loop, the [`runtime::ChatRunner`] of a real replica.
//! - [`tools`]: what the model can call (built-in, MCP, client tools, the
//!   tool-call ledger); [`agents`]: subagents as tools.
//! - [`operations`]: every transition of a chat, each announced (ARCHITECTURE.md §3).
//! - [`streams`]: parts and messages for local subscribers, wherever the
//!   chat runs (hub, feeds, following runs on peers through the relay).
//! - [`api`]: the HTTP API; [`server`]: one replica, assembled.
//! - [`web`]: the web page served at `/`.
//! - [`files`]: attachments (uploads typed by their content, the storage
//!   trait); [`webhooks`]: turn-end webhooks and the sender (ARCHITECTURE.md §17).
//! - [`telemetry`]: metrics on `/metrics`; [`traces`]: spans over OTLP.

pub mod agents;
pub mod api;
pub mod bootstrap;
pub mod files;
pub mod llm;
pub mod models;
pub mod operations;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod streams;
pub mod telemetry;
pub mod titles;
pub mod tools;
pub mod traces;
pub mod turn;
pub mod web;
pub mod webhooks;
