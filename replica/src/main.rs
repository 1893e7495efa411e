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
            eprintln!("chatd: {}", one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole cause chain on one line. Causes already spelled out by the
/// error above them (some libraries print their source in their own message)
/// are not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
