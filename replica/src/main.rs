//! `chatd`: one binary for every role of a replica (DESIGN §10).
//!
//! `chatd migrate` applies the schema and exits; later issues add `serve`,
//! `token` and `dev`.

mod cli;
mod logging;
mod migrate;

use clap::Parser;

use crate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    let outcome = match cli.command {
        Command::Migrate(args) => migrate::run(args).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatd: {}", chatd_shared::error_chain::Chain(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
