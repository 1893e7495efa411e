//! `chatd serve`: one replica until SIGTERM or SIGINT, then a graceful
//! shutdown (ARCHITECTURE.md §4).

use anyhow::{Context, bail};
use chatd_replica::{
    api::ApiConfig,
    bootstrap::ProviderBootstrap,
    runtime::RuntimeConfig,
    server::{RelayConfig, Replica, ReplicaConfig},
    tools::mcp::McpConfig,
    turn::TurnConfig,
};
use chatd_shared::{
    db::{DbConfig, agents::AgentLimits},
    ids::ReplicaId,
    pubsub::PubSubConfig,
};

use crate::cli::{ProviderArgs, ServeArgs};

/// Runs a replica until a signal asks it to stop.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    let deadline = config.runtime.drain_timeout + SHUTDOWN_MARGIN;
    let replica = Replica::start(config).await?;
    let span = replica.span().clone();
    wait_for_signal().await?;
    span.in_scope(|| tracing::info!("shutting down"));
    // Kubernetes kills the process when its grace period ends; the manifests
    // size that period as the drain timeout plus this margin (plus the
    // preStop pause), so stopping on our own by then leaves a clean exit.
    if tokio::time::timeout(deadline, replica.shutdown())
        .await
        .is_err()
    {
        bail!(
            "shutdown took longer than CHATD_DRAIN_TIMEOUT + {}s; stopped anyway (other replicas recover what was left once its lease lapses)",
            SHUTDOWN_MARGIN.as_secs()
        );
    }
    span.in_scope(|| tracing::info!("stopped"));
    Ok(())
}

/// How long a shutdown may take beyond the drain timeout: handing back what
/// did not finish, closing streams, the relay and the database (ARCHITECTURE.md §12
/// sizes the grace period as drain timeout + 5 s).
pub const SHUTDOWN_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The replica's configuration from the flags, checked.
pub fn config(args: ServeArgs) -> anyhow::Result<ReplicaConfig> {
    if args.heartbeat_interval.is_zero() || args.heartbeat_interval >= args.lease_ttl {
        bail!("CHATD_HEARTBEAT_INTERVAL must be above zero and below CHATD_LEASE_TTL");
    }
    // CHATD_MAX_RUNNING_CHATS=0 is allowed: a replica that serves the API and
    // streams but runs no chats.
    if args.acquire_batch == 0 || args.db_pool_size == 0 {
        bail!("CHATD_ACQUIRE_BATCH and CHATD_DB_POOL_SIZE must be above zero");
    }
    let mut database = DbConfig::new(args.database_url);
    database.pg_config().context("CHATD_DATABASE_URL")?;
    database.pool_size = args.db_pool_size;
    let mut runtime = RuntimeConfig::new(args.replica_id.unwrap_or_else(ReplicaId::new_random));
    runtime.max_running_chats = args.max_running_chats;
    runtime.acquire_batch = args.acquire_batch;
    runtime.poll_interval = args.poll_interval;
    runtime.heartbeat_interval = args.heartbeat_interval;
    runtime.lease_ttl = args.lease_ttl;
    runtime.drain_timeout = args.drain_timeout;
    runtime.webhooks.allow_private = args.webhook_allow_private;
    if args.max_file_size == 0 {
        bail!("CHATD_MAX_FILE_SIZE must be above zero");
    }
    if args
        .relay_secret
        .as_deref()
        .is_some_and(|secret| secret.len() < 16)
    {
        bail!("CHATD_RELAY_SECRET must have at least 16 characters");
    }
    if let Some(url) = &args.relay_advertise_url {
        check_advertise_url(url)?;
    }
    let relay = RelayConfig {
        addr: args.relay_addr,
        advertise_url: args.relay_advertise_url,
        insecure: args.insecure_relay,
        server: chatd_relay::RelayServerConfig {
            secret: args.relay_secret,
            ..Default::default()
        },
    };
    relay.check()?;
    let defaults = TurnConfig::default();
    let turn = TurnConfig {
        max_steps: args.max_steps.max(1),
        agents: AgentLimits {
            children_per_chat: args.agents_per_chat,
            busy_children_per_user: args.busy_agents_per_user,
        },
        mcp: McpConfig {
            connect_timeout: args.mcp_connect_timeout,
            call_timeout: args.mcp_call_timeout,
            ..defaults.mcp
        },
        ..defaults
    };
    Ok(ReplicaConfig {
        database,
        http_addr: args.http_addr,
        migrate: !args.no_migrate,
        bootstrap: bootstrap(args.provider)?,
        runtime,
        turn,
        api: ApiConfig {
            max_file_size: args.max_file_size,
            ..ApiConfig::default()
        },
        test_tools: args.test_tools,
        pubsub: PubSubConfig::default(),
        relay: Some(relay),
    })
}

/// Refuses an advertised relay URL peers could not dial. In Kubernetes it
/// is built from the pod IP (`ws://$(POD_IP):7081`); a `$(VAR)` left in it
/// means the variable was not defined before it in the pod's `env`.
fn check_advertise_url(url: &str) -> anyhow::Result<()> {
    if url.contains("$(") {
        bail!(
            "CHATD_RELAY_ADVERTISE_URL={url} has an unexpanded $(VAR): define that variable before it in the container's env"
        );
    }
    let parsed = reqwest::Url::parse(url)
        .with_context(|| format!("CHATD_RELAY_ADVERTISE_URL={url} is not a URL"))?;
    if parsed.scheme() != "ws" || parsed.host().is_none() {
        bail!("CHATD_RELAY_ADVERTISE_URL={url} must be a ws://HOST:PORT URL");
    }
    Ok(())
}

/// The provider `CHATD_PROVIDER_*` asks for, if any.
pub(crate) fn bootstrap(args: ProviderArgs) -> anyhow::Result<Option<ProviderBootstrap>> {
    let Some(kind) = args.provider_kind else {
        if args.model.is_some() || args.provider_base_url.is_some() {
            bail!(
                "CHATD_MODEL and CHATD_PROVIDER_BASE_URL need CHATD_PROVIDER_KIND (openai, anthropic or mock)"
            );
        }
        return Ok(None);
    };
    let model = match args.model {
        Some(model) => model,
        None if kind == chatd_shared::status::ProviderKind::Mock => "mock".to_owned(),
        None => bail!("CHATD_PROVIDER_KIND is set: CHATD_MODEL must name the model"),
    };
    if args.context_limit <= 0 {
        bail!("CHATD_CONTEXT_LIMIT must be above zero");
    }
    let api_key_env = match (args.provider_api_key, args.provider_api_key_env) {
        (Some(_), Some(_)) => {
            bail!("set CHATD_PROVIDER_API_KEY or CHATD_PROVIDER_API_KEY_ENV, not both")
        }
        (Some(_), None) => Some("CHATD_PROVIDER_API_KEY".to_owned()),
        (None, named) => named,
    };
    // The key is read from this variable at every call; missing at start
    // means every turn would fail later with a provider's 401.
    if let Some(name) = &api_key_env
        && std::env::var_os(name).is_none_or(|value| value.is_empty())
    {
        bail!("{name} (the provider's API key) is missing or empty");
    }
    Ok(Some(ProviderBootstrap {
        name: args.provider_name.unwrap_or_else(|| kind.to_string()),
        kind,
        base_url: args
            .provider_base_url
            .unwrap_or_else(|| ProviderBootstrap::default_base_url(kind).to_owned()),
        api_key_env,
        model,
        context_limit: args.context_limit,
        make_default: false,
    }))
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("listening for SIGINT")?,
    }
    Ok(())
}
