//! `chatd`: one binary for every role of a replica (DESIGN §10): `serve`,
//! `migrate`, `token create` and `dev`.

mod cli;
mod dev;
mod logging;
mod migrate;
mod serve;
mod token;

use clap::Parser;

use crate::cli::{Cli, Command, TokenCommand};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            // One line naming what is wrong (the flag shows its CHATD_ variable).
            let text = err.render().to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("chatd: {line}");
            return std::process::ExitCode::from(2);
        }
        Err(err) => {
            let _ = err.print();
            return std::process::ExitCode::SUCCESS;
        }
    };
    logging::init(&cli.log);
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Token(TokenCommand::Create(args)) => token::create(args).await,
        Command::Dev(args) => dev::run(args).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatd: {}", chatd_shared::error_chain::Chain(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
