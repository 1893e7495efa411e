//! Chat features, part 1 (ARCHITECTURE.md §17), through the public API against real
//! PostgreSQL and the mock model over both wire formats: system prompts,
//! titles, context compaction, cost and usage, spend limits, and bad input
//! on their routes. One test binary with a module per feature.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod compaction;
mod cost;
mod fixture;
mod prompts;
mod spend;
mod titles;
