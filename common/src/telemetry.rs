//! Logging with `tracing`. `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` switches to
//! one JSON object per line for log shippers.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").map(|v| v.eq_ignore_ascii_case("json")).unwrap_or(false);
    let result = if json {
        fmt().with_env_filter(filter).json().with_current_span(false).try_init()
    } else {
        fmt().with_env_filter(filter).with_target(false).try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "Logging initialised.");
    }
}

/// Logs an error with its whole cause chain on one line.
pub fn error_chain(err: &anyhow::Error) -> String {
    format!("{err:#}")
}
