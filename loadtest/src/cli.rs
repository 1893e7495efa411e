//! The command line (ARCHITECTURE.md §10, §13, §18): `chatd-loadtest run`,
//! `chatd-loadtest bench` and `chatd-loadtest chaos`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    chaos::faults::FaultKind,
    config::{DEFAULT_MESSAGE, RunConfig, StreamTransport},
    summary::FIELDS_HELP,
};

/// What the exit status means, for `--help`.
const EXIT_HELP: &str = "\
Exit status: 0 when every turn completed, 1 when anything failed during the
load (the summary says which stage and how often), 2 when the run could not
start (bad arguments, an unreachable target, a refused token).";

/// The chatd scaletest harness: drives chats through a chatd cluster and
/// reports turns per second, latency percentiles, failures and database cost.
#[derive(Debug, Parser)]
#[command(name = "chatd-loadtest", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive load against running replicas.
    #[command(after_help = "The fields of --out are listed in --help.", after_long_help = run_long_help())]
    Run(RunArgs),
    /// Run the standard scenario on this machine: a private PostgreSQL,
    /// 3 replicas with the in-process mock model, then `run` against them,
    /// with the budgets of ARCHITECTURE.md §15.
    #[command(after_long_help = EXIT_HELP)]
    Bench(BenchArgs),
    /// Run load while injecting faults (ARCHITECTURE.md §18): replicas killed,
    /// replaced in a rolling restart, PostgreSQL restarted, relay links cut,
    /// a replica partitioned from PostgreSQL; check every invariant as
    /// clients go and against the database at the end; report failover
    /// times. Starts its own cluster (like bench) unless given --target.
    #[command(after_long_help = chaos_long_help())]
    Chaos(Box<ChaosArgs>),
}

fn chaos_long_help() -> String {
    format!(
        "Exit status: 0 when every turn completed and no invariant was broken, 1 when\n\
         a turn failed or an invariant was broken (each violation names its chat),\n\
         2 when the run could not start.\n\n{}",
        crate::chaos::summary::FIELDS_HELP
    )
}

fn run_long_help() -> String {
    format!("{EXIT_HELP}\n\n{FIELDS_HELP}")
}

/// `chatd-loadtest run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Replica API base URLs, comma-separated or repeated. Chat i is
    /// created on target i % n and streamed from target (i + 1) % n.
    #[arg(long = "target", value_name = "URL[,URL…]", required = true, value_delimiter = ',', value_parser = parse_target)]
    pub targets: Vec<String>,
    /// The bearer token (`chatd_…`) of the user the chats belong to.
    #[arg(long, env = "CHATD_LOADTEST_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Chats (virtual users).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub chats: u32,
    /// Turns per chat.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub turns: u32,
    /// Chats in flight (being set up or taking turns) at most; default: all.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Spread chat starts evenly over this long (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Start each chat's turns as soon as it is set up, instead of creating
    /// every chat first and starting the first turns together.
    #[arg(long)]
    pub no_barrier: bool,
    /// PostgreSQL URL of chatd's database: report statements, NOTIFY
    /// statements and transactions per turn (pg_stat_statements,
    /// pg_stat_database). Adds about 22 s: transaction counts are read
    /// once PostgreSQL has flushed them, before and after the turns.
    #[arg(
        long,
        value_name = "URL",
        env = "CHATD_LOADTEST_PG_URL",
        hide_env_values = true
    )]
    pub pg_url: Option<String>,
    /// What the two commands share.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags `run` and `bench` share.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The user message of every turn (the default asks the mock model for
    /// 20 words at once; `@mock {"tokens": 40, "token_delay_ms": 20}`
    /// streams like a model).
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_MESSAGE)]
    pub message: String,
    /// How streams are carried.
    #[arg(long, value_enum, default_value_t = StreamTransport::Ws)]
    pub transport: StreamTransport,
    /// How long one turn (send → waiting) may take; also bounds each
    /// request and stream connection.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Share of chats also streamed from every other target to measure
    /// relay staleness: a fraction (0.1) or a percentage (10%).
    #[arg(long, value_name = "FRACTION", default_value = "10%", value_parser = parse_fraction)]
    pub staleness_sample: f64,
    /// Write the summary as JSON here (fields: see `run --help`).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `chatd-loadtest bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Chats (virtual users).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub chats: u32,
    /// Turns per chat.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub turns: u32,
    /// Replicas to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: u32,
    /// The chatd binary (default: `chatd` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub chatd_bin: Option<PathBuf>,
    /// Keep PostgreSQL durable (fsync and synchronous commit on). By default
    /// they are off, as in the test harness: the data is thrown away.
    #[arg(long)]
    pub durable: bool,
    /// Switch on the chat features of ARCHITECTURE.md §17 first: a deployment system
    /// prompt and the user's own, prices on the model (cost accounting), and
    /// titles by a second, cheap model.
    #[arg(long)]
    pub features: bool,
    /// With `--features`: a default spend limit per month, in micro-dollars
    /// (high enough never to refuse), so every model call reserves first.
    #[arg(long, value_name = "MICROS", requires = "features")]
    pub spend_limit: Option<i64>,
    /// A PostgreSQL setting for the bench's server, after chatd's own
    /// (repeatable), to look inside a run: `--pg-setting
    /// session_preload_libraries=auto_explain --pg-setting
    /// auto_explain.log_min_duration=5ms --pg-setting logging_collector=on
    /// --pg-setting log_directory=/tmp/pglog` logs the plans of slow
    /// statements. Settings change what is measured: compare like with like.
    #[arg(long = "pg-setting", value_name = "NAME=VALUE", value_parser = parse_pg_setting)]
    pub pg_settings: Vec<(String, String)>,
    /// Skip the database-only ceiling measured before the load (10 s in a
    /// database of its own; the run is then judged without a ratio).
    #[arg(long)]
    pub no_ceiling: bool,
    /// What the two commands share.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `chatd-loadtest chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Chats (virtual users), each taking turns until the end.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub chats: u32,
    /// How long the load and the faults go on (a soak: 10m).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time between the starts of two faults (one that lasts longer delays
    /// the next).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub every: Duration,
    /// Fault kinds, injected in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,rolling,pg-restart,relay-cut,partition"
    )]
    pub faults: Vec<FaultKind>,
    /// Replicas to start (without --target).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub replicas: u32,
    /// The replicas' CHATD_LEASE_TTL (without --target); with --target,
    /// what the targets use (bounds how long disruptions are put down to a
    /// fault).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// The replicas' CHATD_HEARTBEAT_INTERVAL (without --target).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// The replicas' CHATD_DRAIN_TIMEOUT (without --target).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long a killed replica stays down.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub kill_pause: Duration,
    /// How long PostgreSQL stays down in a pg-restart.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub pg_down: Duration,
    /// How long relay connections are refused after a cut.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub relay_cut_for: Duration,
    /// How long a partition lasts (longer than the lease, so the replica
    /// must fence itself and its chats move).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub partition_for: Duration,
    /// Clients reopen a running chat's stream on another replica after this
    /// long without an event (a replica cut from PostgreSQL stays silent).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// How long one request (or stream opening) may take before the next
    /// replica is tried (a healthy replica answers in milliseconds; one cut
    /// from PostgreSQL never does).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub attempt_timeout: Duration,
    /// How long one turn may take.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The user message of every turn (the default streams like a model:
    /// first token after 150 ms, then one every 20 ms).
    #[arg(long, value_name = "TEXT", default_value = CHAOS_MESSAGE)]
    pub message: String,
    /// How streams are carried.
    #[arg(long, value_enum, default_value_t = StreamTransport::Ws)]
    pub transport: StreamTransport,
    /// Share of chats also streamed from every other replica (relay staleness).
    #[arg(long, value_name = "FRACTION", default_value = "10%", value_parser = parse_fraction)]
    pub staleness_sample: f64,
    /// Seed of the random choices (which replica a fault hits).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replicas someone else runs (instead of starting a cluster):
    /// comma-separated or repeated API base URLs.
    #[arg(long = "target", value_name = "URL[,URL…]", value_delimiter = ',', value_parser = parse_target)]
    pub targets: Vec<String>,
    /// The bearer token, with --target.
    #[arg(long, env = "CHATD_LOADTEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With --target: stops replica {index} (from 1; also {url}) with
    /// signal {signal} (KILL or TERM), e.g. `kill -{signal} $(cat /run/chatd-{index}.pid)`.
    #[arg(long, value_name = "TEMPLATE")]
    pub kill_command: Option<String>,
    /// With --target: starts replica {index} again.
    #[arg(long, value_name = "TEMPLATE")]
    pub start_command: Option<String>,
    /// With --target: chatd's database, for the checks against it.
    #[arg(
        long,
        value_name = "URL",
        env = "CHATD_LOADTEST_PG_URL",
        hide_env_values = true
    )]
    pub pg_url: Option<String>,
    /// The chatd binary (default: `chatd` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub chatd_bin: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Copy the replicas' and PostgreSQL's logs into this directory before
    /// the cluster is removed (without --target).
    #[arg(long, value_name = "DIR")]
    pub keep_logs: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The default message of `chaos`: a reply streamed at a model's pace.
pub const CHAOS_MESSAGE: &str = r#"@mock {"tokens": 40, "token_delay_ms": 20, "ttft_ms": 150}"#;

impl RunArgs {
    /// The run these arguments describe.
    pub fn config(&self) -> RunConfig {
        let chats = self.chats as usize;
        let mut config =
            RunConfig::new(self.targets.clone(), self.token.clone(), chats, self.turns);
        config.concurrency = self.concurrency.map_or(chats, |c| c as usize);
        config.ramp = self.ramp;
        config.barrier = !self.no_barrier;
        config.pg_url = self.pg_url.clone();
        self.common.apply(&mut config);
        config
    }
}

impl CommonArgs {
    /// Sets what these flags say on `config`.
    pub fn apply(&self, config: &mut RunConfig) {
        config.message = self.message.clone();
        config.transport = self.transport;
        config.timeout = self.timeout;
        config.staleness_sample = self.staleness_sample;
        config.progress = !self.quiet;
    }
}

pub use chatd_shared::duration::parse as parse_duration;

/// A replica's API base URL: http or https, without a query; a trailing
/// slash is dropped so the same target is always spelt the same.
pub fn parse_target(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url =
        reqwest::Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A share between 0 and 1: `0.1` or `10%`.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('%') {
        Some(number) => (number.trim(), 100.0),
        None => (text, 1.0),
    };
    let value = number
        .parse::<f64>()
        .map_err(|_| format!("{text:?} is not a fraction (like 0.1 or 10%)"))?
        / scale;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{text:?} is not between 0 and 1 (0% and 100%)"));
    }
    Ok(value)
}

/// `NAME=VALUE` of `--pg-setting`: a name PostgreSQL could have (letters,
/// digits, `_` and `.`), so nothing else can be written into its
/// configuration file.
pub fn parse_pg_setting(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(format!("{name:?} is not a PostgreSQL setting name"));
    }
    if value.contains('\n') {
        return Err("a setting's value is one line".into());
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chatd-loadtest").chain(args.iter().copied()))
    }

    fn run_config(args: &[&str]) -> RunConfig {
        match parse(args) {
            Ok(Cli {
                command: Command::Run(run),
            }) => run.config(),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn targets_are_http_urls_spelt_one_way() {
        assert_eq!(
            parse_target("http://127.0.0.1:7080/"),
            Ok("http://127.0.0.1:7080".into())
        );
        assert_eq!(
            parse_target(" https://chatd.example.com/prefix/ "),
            Ok("https://chatd.example.com/prefix".into())
        );
        assert!(parse_target("127.0.0.1:7080").is_err());
        assert!(
            parse_target("ws://127.0.0.1:7080")
                .unwrap_err()
                .contains("http://")
        );
        assert!(parse_target("http://h/?a=1").unwrap_err().contains("query"));
    }

    #[test]
    fn fractions_are_decimals_or_percentages() {
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert_eq!(parse_fraction("10%"), Ok(0.1));
        assert_eq!(parse_fraction("100%"), Ok(1.0));
        assert!(parse_fraction("150%").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("lots").is_err());
    }

    #[test]
    fn pg_settings_are_a_name_and_one_line() {
        assert_eq!(
            parse_pg_setting("auto_explain.log_min_duration = 5ms"),
            Ok(("auto_explain.log_min_duration".into(), "5ms".into()))
        );
        assert_eq!(
            parse_pg_setting("log_line_prefix=%m [%p] "),
            Ok(("log_line_prefix".into(), "%m [%p]".into()))
        );
        assert!(parse_pg_setting("work_mem").is_err());
        assert!(parse_pg_setting("a b=1").is_err());
        assert!(parse_pg_setting("x=1\ny=2").is_err());
    }

    #[test]
    fn run_has_the_documented_defaults() {
        let config = run_config(&["run", "--target", "http://a:1", "--token", "chatd_x"]);
        assert_eq!(config.targets, ["http://a:1"]);
        assert_eq!(config.token, "chatd_x");
        assert_eq!(
            (config.chats, config.turns, config.concurrency),
            (100, 3, 100)
        );
        assert_eq!(config.ramp, Duration::ZERO);
        assert!(config.barrier);
        assert_eq!(config.transport, StreamTransport::Ws);
        assert_eq!(config.message, DEFAULT_MESSAGE);
        assert_eq!(config.timeout, Duration::from_secs(60));
        assert_eq!(config.staleness_sample, 0.1);
        assert_eq!(config.pg_url, None);
        assert!(config.progress);
    }

    #[test]
    fn run_takes_target_lists_and_every_flag() {
        let config = run_config(&[
            "run",
            "--target",
            "http://a:1,http://b:2/",
            "--target",
            "http://c:3",
            "--token",
            "chatd_x",
            "--chats",
            "10",
            "--turns",
            "4",
            "--concurrency",
            "5",
            "--ramp",
            "2s",
            "--no-barrier",
            "--transport",
            "sse",
            "--message",
            "hello",
            "--pg-url",
            "postgres://db/chatd",
            "--timeout",
            "500ms",
            "--staleness-sample",
            "50%",
            "--quiet",
        ]);
        assert_eq!(config.targets, ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!((config.chats, config.turns, config.concurrency), (10, 4, 5));
        assert_eq!(config.ramp, Duration::from_secs(2));
        assert!(!config.barrier);
        assert_eq!(config.transport, StreamTransport::Sse);
        assert_eq!(config.message, "hello");
        assert_eq!(config.pg_url.as_deref(), Some("postgres://db/chatd"));
        assert_eq!(config.timeout, Duration::from_millis(500));
        assert_eq!(config.staleness_sample, 0.5);
        assert!(!config.progress);
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        let error = parse(&["run", "--target", "nope", "--token", "t"]).unwrap_err();
        assert!(error.to_string().contains("--target"), "{error}");
        let error = parse(&[
            "run", "--target", "http://a", "--token", "t", "--chats", "0",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("--chats"), "{error}");
        let error = parse(&[
            "run", "--target", "http://a", "--token", "t", "--ramp", "1d",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("--ramp"), "{error}");
        assert!(
            parse(&["run", "--token", "t"]).is_err(),
            "--target is required"
        );
    }

    #[test]
    fn chaos_breaks_its_own_cluster_with_every_fault_by_default() {
        let Ok(Cli {
            command: Command::Chaos(chaos),
        }) = parse(&["chaos"])
        else {
            panic!("chaos parses");
        };
        assert_eq!((chaos.chats, chaos.replicas), (100, 3));
        assert_eq!(chaos.duration, Duration::from_secs(120));
        assert_eq!(chaos.every, Duration::from_secs(10));
        assert_eq!(chaos.faults, FaultKind::ALL);
        assert_eq!(chaos.lease_ttl, Duration::from_secs(5));
        assert!(chaos.targets.is_empty());
        assert_eq!(chaos.message, CHAOS_MESSAGE);

        let Ok(Cli {
            command: Command::Chaos(chaos),
        }) = parse(&[
            "chaos",
            "--faults",
            "kill,partition",
            "--target",
            "http://a:1,http://b:2",
            "--kill-command",
            "kill -{signal} {index}",
        ])
        else {
            panic!("chaos parses");
        };
        assert_eq!(chaos.faults, [FaultKind::Kill, FaultKind::Partition]);
        assert_eq!(chaos.targets, ["http://a:1", "http://b:2"]);
        assert!(parse(&["chaos", "--faults", "meteor"]).is_err());
    }

    #[test]
    fn bench_has_the_standard_scenario_by_default() {
        let Ok(Cli {
            command: Command::Bench(bench),
        }) = parse(&["bench"])
        else {
            panic!("bench parses");
        };
        assert_eq!((bench.chats, bench.turns, bench.replicas), (5000, 10, 3));
        assert!(!bench.durable);
        assert_eq!(bench.chatd_bin, None);
    }
}
