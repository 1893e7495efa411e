//! `chatd-loadtest bench`: the standard scenario of ARCHITECTURE.md §13 and §15 on
//! this machine, end to end. A private PostgreSQL in a temporary directory
//! (`pg_stat_statements` preloaded), `chatd migrate`, an admin token from
//! `chatd token create`, replicas as child processes of `chatd serve` with
//! the zero-delay in-process mock model, then a [`run`](crate::run::run)
//! against them with `--pg-url`; the summary is printed next to the
//! budgets, with the CPU each process used.
//!
//! Whatever happens (success, an error, Ctrl-C or SIGTERM) everything
//! started is stopped and the directory removed; see [`cluster`].
//!
//! This is the command's top level, so it reports errors with `anyhow`.

pub mod budgets;
pub mod ceiling;
pub mod cluster;
pub mod features;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::{
    RunConfig,
    cli::BenchArgs,
    report::{self, render_failures},
};
use cluster::{Cluster, ReplicaSettings, chatd_command};

/// Runs the scenario; `Ok(false)` when the load ran and something failed.
pub async fn bench(args: BenchArgs) -> anyhow::Result<bool> {
    let chatd = chatd_binary(args.chatd_bin.as_deref())?;
    let mut cluster = Cluster::create()?;
    let outcome = tokio::select! {
        outcome = scenario(&mut cluster, &chatd, &args) => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    eprintln!("bench: stopping the replicas and PostgreSQL");
    let stopped = cluster.stop().await;
    match (outcome, stopped) {
        (Ok(succeeded), Ok(())) => Ok(succeeded),
        (Ok(_), Err(error)) => Err(error),
        (Err(error), Ok(())) => Err(error),
        (Err(error), Err(stop_error)) => Err(error.context(format!("{stop_error:#}"))),
    }
}

/// `--chatd-bin`, or `chatd` next to this executable.
pub(crate) fn chatd_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("chatd"),
    };
    if !path.is_file() {
        bail!(
            "no chatd binary at {}: build it (cargo build --release -p chatd-replica) or pass --chatd-bin",
            path.display()
        );
    }
    Ok(path)
}

async fn scenario(cluster: &mut Cluster, chatd: &Path, args: &BenchArgs) -> anyhow::Result<bool> {
    let replicas = args.replicas as usize;
    eprintln!("bench: starting PostgreSQL in {}", cluster.root().display());
    let (database_url, version) = cluster
        .start_postgres(args.durable, replicas, &args.pg_settings)
        .await?;
    run_chatd(chatd, Some(&database_url), &["migrate"]).await?;
    let token = admin_token(chatd, &database_url).await?;
    let ceiling = if args.no_ceiling {
        None
    } else {
        eprintln!("bench: measuring the database-only ceiling");
        let postgres = cluster.postgres_probe();
        let url_of = cluster.url_of().context("PostgreSQL is not running")?;
        let plan = ceiling::Plan {
            chats: args.chats as usize,
            ..ceiling::Plan::default()
        };
        Some(ceiling::measure(chatd, plan, url_of, postgres).await?)
    };
    eprintln!("bench: starting {replicas} replicas of {}", chatd.display());
    let settings = ReplicaSettings {
        max_running_chats: (args.chats as usize).max(512),
        relay_secret: uuid::Uuid::new_v4().simple().to_string(),
    };
    cluster
        .start_replicas(chatd, replicas, &database_url, &settings)
        .await?;

    let urls: Vec<String> = cluster.replicas().iter().map(|r| r.url.clone()).collect();
    if args.features {
        eprintln!("bench: switching on system prompts, titles and cost accounting");
        let admin = chatd_shared::client::Client::new(&urls[0], &token)
            .context("a client of the first replica")?;
        features::switch_on(&admin, args.spend_limit).await?;
    }
    let mut config = RunConfig::new(urls, token, args.chats as usize, args.turns);
    config.pg_url = Some(database_url);
    config.cpu_probes = cluster.cpu_probes();
    args.common.apply(&mut config);
    let mut summary = crate::run(config).await?;
    summary.ceiling = ceiling;
    summary.budgets = Some(budgets::check(&summary));

    println!(
        "bench: {replicas} replicas of {} with the in-process mock model, message {:?}; PostgreSQL {version} (private, {}){}",
        chatd.display(),
        args.common.message,
        if args.durable { "durable" } else { "fsync off" },
        match (args.features, args.spend_limit) {
            (false, _) => "",
            (true, None) => "; features on (prompts, titles, cost)",
            (true, Some(_)) => "; features on (prompts, titles, cost, spend limit)",
        },
    );
    print!("{}", report::render(&summary));
    if let Some(path) = &args.common.out {
        summary
            .write_json(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !summary.succeeded() {
        eprint!("chatd-loadtest: {}", render_failures(&summary));
    }
    Ok(summary.succeeded())
}

/// Runs `chatd ARGS` to its end; its stdout on success.
pub(crate) async fn run_chatd(
    chatd: &Path,
    database_url: Option<&str>,
    args: &[&str],
) -> anyhow::Result<String> {
    let output = chatd_command(chatd, database_url)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running chatd {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "chatd {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `chatd token create --username loadtest --admin`: the token is the last
/// line of stdout.
pub(crate) async fn admin_token(chatd: &Path, database_url: &str) -> anyhow::Result<String> {
    let args = ["token", "create", "--username", "loadtest", "--admin"];
    let stdout = run_chatd(chatd, Some(database_url), &args).await?;
    match stdout.lines().rev().find(|line| !line.trim().is_empty()) {
        Some(token) => Ok(token.trim().to_owned()),
        None => bail!("chatd token create printed no token"),
    }
}

/// Resolves on SIGINT or SIGTERM, naming it; never when neither can be
/// listened for.
pub(crate) async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
