//! `chatd`: one binary for every role of a replica (ARCHITECTURE.md §10): `serve`,
//! `migrate`, `token create` and `dev`.

mod cli;
mod dev;
mod logging;
mod migrate;
mod serve;
mod token;

use clap::Parser;

use crate::cli::{Cli, Command, TokenCommand};

/// mimalloc instead of glibc's allocator: a turn allocates many small,
/// short-lived buffers on several threads (parts, JSON, frames), where
/// glibc's malloc showed as ~20 % of the replicas' CPU in a profile of the
/// bench; see the issue 19 note for the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if let Some(name) = cli::empty_secret_variable() {
        eprintln!("chatd: {name} is set but empty (a Secret key without a value?)");
        return std::process::ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            // One line naming what is wrong (the flag shows its CHATD_
            // variable): the message up to the usage, which for a missing
            // argument lists it on the lines after the first.
            let text = err.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = message.join(" ");
            let line = line.trim_start_matches("error: ");
            eprintln!("chatd: {line}");
            return std::process::ExitCode::from(2);
        }
        Err(err) => {
            let _ = err.print();
            return std::process::ExitCode::SUCCESS;
        }
    };
    let traces = match logging::init(&cli.log) {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("chatd: {}", chatd_shared::error_chain::Chain(err.as_ref()));
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Token(TokenCommand::Create(args)) => token::create(args).await,
        Command::Dev(args) => dev::run(args).await,
    };
    traces.shutdown().await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatd: {}", chatd_shared::error_chain::Chain(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
