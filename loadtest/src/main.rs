//! `chatd-loadtest`: the scaletest harness (ARCHITECTURE.md §13, §18). `run` drives
//! load against running replicas; `bench` runs the standard scenario on
//! this machine; `chaos` breaks a cluster under load and checks what
//! clients see. See `chatd-loadtest <command> --help`.

use std::process::ExitCode;

use chatd_loadtest::{
    bench, chaos,
    cli::{Cli, Command, RunArgs},
    report,
};
use clap::Parser;

/// mimalloc instead of glibc's allocator: a turn allocates many small,
/// short-lived buffers on several threads (parts, JSON, frames), where
/// glibc's malloc showed as ~20 % of the replicas' CPU in a profile of the
/// bench; see the issue 19 note for the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status when the load ran and something failed.
const LOAD_FAILED: u8 = 1;
/// Exit status when the run could not start.
const NOT_STARTED: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Bench(args) => exit_code(bench::bench(args).await),
        Command::Chaos(args) => exit_code(chaos::chaos(*args).await),
    }
}

/// The exit status of a command that starts its own cluster.
fn exit_code(outcome: anyhow::Result<bool>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(LOAD_FAILED),
        Err(error) => {
            eprintln!("chatd-loadtest: {error:#}");
            ExitCode::from(NOT_STARTED)
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let summary = match chatd_loadtest::run(args.config()).await {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("chatd-loadtest: {error}");
            return ExitCode::from(NOT_STARTED);
        }
    };
    print!("{}", report::render(&summary));
    if let Some(path) = &args.common.out
        && let Err(error) = summary.write_json(path)
    {
        eprintln!("chatd-loadtest: writing {}: {error}", path.display());
        return ExitCode::from(LOAD_FAILED);
    }
    if summary.succeeded() {
        return ExitCode::SUCCESS;
    }
    eprint!("chatd-loadtest: {}", failure_report(&summary));
    ExitCode::from(LOAD_FAILED)
}

/// What went wrong, for stderr: the turn counts, then each failed stage.
fn failure_report(summary: &chatd_loadtest::Summary) -> String {
    let turns = &summary.turns;
    format!(
        "{} of {} turns did not complete ({} failed, {} not run)\n{}",
        turns.planned - turns.completed,
        turns.planned,
        turns.failed,
        turns.not_run,
        report::render_failures(summary)
    )
}
