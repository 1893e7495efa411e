//! Process-wide tracing setup from `CHATD_LOG` / `CHATD_LOG_FORMAT`.

use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber. A bad filter falls back to `info` with a warning.
pub fn init(args: &LogArgs) {
    let (filter, bad) = match EnvFilter::try_new(&args.filter) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    // Colours only on a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(err) = bad {
        tracing::warn!(filter = %args.filter, error = %err, "invalid CHATD_LOG filter; using info");
    }
}
