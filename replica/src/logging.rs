//! Process-wide tracing setup: log lines from `CHATD_LOG` /
//! `CHATD_LOG_FORMAT`, and spans over OTLP when the standard `OTEL_*`
//! variables ask for it ([`chatd_replica::traces`]).

use anyhow::Context;
use chatd_replica::traces::{self, OtlpSettings};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{self, FilterExt, LevelFilter},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::cli::{LogArgs, LogFormat};

/// What must outlive the program's work: the span exporter, flushed by
/// [`Tracing::shutdown`].
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Sends the spans not yet exported (waits up to the exporter's
    /// timeout), off the runtime's threads: the gRPC exporter needs them.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("chatd: flushing traces: {err}"),
            Err(err) => eprintln!("chatd: flushing traces: {err}"),
        }
    }
}

/// Installs the global subscriber. A bad filter falls back to `info` with a
/// warning; a bad `OTEL_*` setting is an error naming the variable. Call it
/// inside the Tokio runtime (the gRPC exporter lives on it).
pub fn init(args: &LogArgs) -> anyhow::Result<Tracing> {
    let otlp = OtlpSettings::from_env()?;
    let provider = otlp
        .as_ref()
        .map(traces::provider)
        .transpose()
        .context("starting the trace exporter")?;
    let (filter, bad) = match EnvFilter::try_new(&args.filter) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    // Colours only on a terminal: a log file or collector gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match args.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    // The filter is the log lines' alone: spans are exported whatever
    // CHATD_LOG says, at the cost of the spans the filter would drop.
    let spans = provider.as_ref().map(traces::layer);
    // Whatever level CHATD_LOG asks for, chatd's own spans are on for the
    // log lines: they name the replica (`replica_id`, and a run's
    // `chat_id`), which every line must carry. They are all `info` spans,
    // and saying so keeps the subscriber's level hint: without one, every
    // disabled `debug!`/`trace!` of every library (tungstenite traces each
    // frame, tokio-postgres each message) is built and dispatched to be
    // turned down, a measured ~5 % of a replica's CPU in the bench.
    let ours =
        filter::filter_fn(|metadata| metadata.is_span() && metadata.target().starts_with("chatd_"))
            .with_max_level_hint(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter.or(ours)))
        .with(spans)
        .init();
    if let Some(err) = bad {
        tracing::warn!(filter = %args.filter, error = %err, "invalid CHATD_LOG filter; using info");
    }
    if let Some(otlp) = &otlp {
        tracing::info!(protocol = ?otlp.protocol, endpoint = otlp.endpoint_variable, "exporting traces over OTLP");
    }
    Ok(Tracing { provider })
}
