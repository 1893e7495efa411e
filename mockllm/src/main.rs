//! `chatd-mockllm`: the mock LLM as a standalone server, for load tests and
//! manual runs. Prints one line with its URLs once listening; stops cleanly
//! on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chatd_mockllm::{Behaviour, MockLlm, ServerConfig};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// How long in-flight responses may take to finish after a signal before
/// they are cut.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(5);

/// An OpenAI- and Anthropic-compatible mock LLM server.
#[derive(Debug, Parser)]
#[command(name = "chatd-mockllm", version, about)]
struct Args {
    /// Address to listen on (IP:PORT; port 0 picks a free one).
    #[arg(long, env = "CHATD_MOCKLLM_ADDR", value_name = "HOST:PORT")]
    addr: SocketAddr,
    /// Words in a random reply.
    #[arg(
        long,
        env = "CHATD_MOCKLLM_TOKENS",
        value_name = "N",
        default_value_t = 20
    )]
    tokens: usize,
    /// Delay between streamed tokens, in milliseconds.
    #[arg(
        long,
        env = "CHATD_MOCKLLM_TOKEN_DELAY_MS",
        value_name = "D",
        default_value_t = 0
    )]
    token_delay_ms: u64,
    /// Time to first token, in milliseconds.
    #[arg(
        long,
        env = "CHATD_MOCKLLM_TTFT_MS",
        value_name = "T",
        default_value_t = 0
    )]
    ttft_ms: u64,
    /// Seed of every random choice.
    #[arg(
        long,
        env = "CHATD_MOCKLLM_SEED",
        value_name = "S",
        default_value_t = 0
    )]
    seed: u64,
    /// Chance (0..=1) that a reply calls one of the offered tools.
    #[arg(long, env = "CHATD_MOCKLLM_TOOL_CALL_PROBABILITY", value_name = "P", default_value_t = 0.0, value_parser = probability)]
    tool_call_probability: f64,
    /// Chance (0..=1) of a 429 answer.
    #[arg(long, env = "CHATD_MOCKLLM_ERROR_RATE_429", value_name = "R", default_value_t = 0.0, value_parser = probability)]
    error_rate_429: f64,
    /// Chance (0..=1) of a 500 answer.
    #[arg(long, env = "CHATD_MOCKLLM_ERROR_RATE_500", value_name = "R", default_value_t = 0.0, value_parser = probability)]
    error_rate_500: f64,
    /// Chance (0..=1) that a reply is cut mid-stream.
    #[arg(long, env = "CHATD_MOCKLLM_CUT_RATE", value_name = "R", default_value_t = 0.0, value_parser = probability)]
    cut_rate: f64,
    /// Require this API key (Authorization: Bearer for OpenAI, x-api-key for Anthropic).
    #[arg(
        long,
        env = "CHATD_MOCKLLM_API_KEY",
        value_name = "K",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Log filter (tracing syntax), logs go to stderr.
    #[arg(
        long,
        env = "CHATD_MOCKLLM_LOG",
        value_name = "FILTER",
        default_value = "warn"
    )]
    log: String,
}

fn probability(value: &str) -> Result<f64, String> {
    let parsed: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if (0.0..=1.0).contains(&parsed) {
        Ok(parsed)
    } else {
        Err(format!("{parsed} is not between 0 and 1"))
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("{}", one_line(&error.to_string()));
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Clap's message without the usage and help hints, on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(args: Args) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log).context("invalid --log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()
        .context("cannot start the tokio runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = ServerConfig {
        addr: args.addr,
        behaviour: Behaviour {
            tokens: args.tokens,
            token_delay: Duration::from_millis(args.token_delay_ms),
            ttft: Duration::from_millis(args.ttft_ms),
            seed: args.seed,
            tool_call_probability: args.tool_call_probability,
            error_rate_429: args.error_rate_429,
            error_rate_500: args.error_rate_500,
            cut_rate: args.cut_rate,
            require_api_key: args.api_key,
        },
        // Nobody reads recordings of a standalone server; keep memory flat.
        record_limit: 0,
    };
    let server = MockLlm::start_with(config).await?;
    println!(
        "chatd-mockllm listening on {} (OpenAI base URL {}, Anthropic base URL {})",
        server.url(),
        server.openai_base_url(),
        server.anthropic_base_url(),
    );

    shutdown_signal().await?;
    tracing::info!("signal received, shutting down");
    match tokio::time::timeout(GRACEFUL_SHUTDOWN, server.shutdown()).await {
        Ok(result) => result.context("the server did not stop cleanly"),
        // Dropping the server cuts the responses still in flight.
        Err(_elapsed) => Ok(()),
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT"),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}
