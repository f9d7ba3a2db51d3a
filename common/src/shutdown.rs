//! SIGTERM / Ctrl-C handling: one token every task watches, and a bound on how long stopping
//! may take.
//!
//! A service told to stop flushes what it holds to the broker or the database. If one of them is
//! gone, that flush could wait for ever (librdkafka retries a commit, the sink retries its batch).
//! So once the token is cancelled, a watchdog thread gives the process `SHUTDOWN_TIMEOUT`; past
//! it, it logs what was still being flushed ([`holding`]) and exits with status 1. Nothing
//! acknowledged is lost by that: every accepted event is on the broker, and input offsets are
//! committed only after the outputs derived from them are durable, so a restart redoes the work.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Validator;

/// `SHUTDOWN_TIMEOUT`, flattened into every service's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ShutdownArgs {
    /// How long stopping may take after SIGTERM or SIGINT (finishing requests, flushing outputs,
    /// committing offsets). Past it the service logs what it could not flush and exits with
    /// status 1; nothing acknowledged is lost (it is on the broker), a restart redoes the rest.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s")]
    pub shutdown_timeout: String,
}

impl ShutdownArgs {
    /// The limit: more than zero, at most an hour.
    pub fn validate(&self, v: &mut Validator) -> Duration {
        let d = v.parse_positive_duration("SHUTDOWN_TIMEOUT", &self.shutdown_timeout);
        v.check(d <= Duration::from_secs(3600), "SHUTDOWN_TIMEOUT", format_args!("{d:?} is longer than 1h"));
        d
    }
}

/// What is being flushed right now, by name; reported if the limit passes.
static HELD: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Records that `what` is flushing `detail` (e.g. "120 outputs awaiting the broker's
/// acknowledgement"); [`released`] clears it.
pub fn holding(what: impl Into<String>, detail: impl Into<String>) {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).insert(what.into(), detail.into());
}

/// `what` has flushed what [`holding`] recorded.
pub fn released(what: &str) {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).remove(what);
}

/// What is still recorded as being flushed, one line each.
pub fn still_held() -> Vec<String> {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| format!("{k}: {v}")).collect()
}

/// Returns a token cancelled on SIGTERM or SIGINT (no bound: for tests that run a service in
/// process).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown signal received; finishing in-flight work.");
        t.cancel();
    });
    token
}

/// For a service's `main`: [`on_signal`], and once the token is cancelled (by a signal, or by
/// the service stopping on its own after a failure) the process has `limit` to exit; then the
/// watchdog logs what is still held and exits with status 1.
pub fn on_signal_within(limit: Duration) -> CancellationToken {
    let token = on_signal();
    let t = token.clone();
    tokio::spawn(async move {
        t.cancelled().await;
        start_watchdog(limit);
    });
    token
}

/// A thread of its own, so a runtime whose workers are all stuck in blocking calls cannot hold
/// it up.
fn start_watchdog(limit: Duration) {
    let spawned = std::thread::Builder::new().name("shutdown-watchdog".into()).spawn(move || {
        std::thread::sleep(limit);
        let held = still_held();
        let unflushed = if held.is_empty() {
            "no flush in progress (stuck closing a client or a connection)".to_owned()
        } else {
            held.join("; ")
        };
        tracing::error!(
            limit = ?limit,
            %unflushed,
            "Shutdown did not finish within SHUTDOWN_TIMEOUT (is the broker or the database gone?); exiting \
             with status 1. Nothing acknowledged is lost: it is on the broker, and offsets not committed are \
             redone by the next start."
        );
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "Cannot start the shutdown watchdog; stopping is not bounded.");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        shutdown: ShutdownArgs,
    }

    #[test]
    fn the_shutdown_limit_defaults_to_ten_seconds_and_refuses_zero_and_nonsense() {
        let mut v = Validator::new();
        assert_eq!(Cli::parse_from(["x"]).shutdown.validate(&mut v), Duration::from_secs(10));
        assert_eq!(
            Cli::parse_from(["x", "--shutdown-timeout=500ms"]).shutdown.validate(&mut v),
            Duration::from_millis(500)
        );
        v.finish().unwrap();
        for bad in ["0", "soon", "2h"] {
            let mut v = Validator::new();
            Cli::parse_from(["x", &format!("--shutdown-timeout={bad}")]).shutdown.validate(&mut v);
            let err = v.finish().unwrap_err().to_string();
            assert!(err.contains("SHUTDOWN_TIMEOUT"), "{bad}: {err}");
        }
    }

    #[test]
    fn what_is_held_is_reported_until_released() {
        holding("test stage", "3 outputs awaiting the broker's acknowledgement");
        assert!(still_held().iter().any(|l| l == "test stage: 3 outputs awaiting the broker's acknowledgement"));
        released("test stage");
        assert!(!still_held().iter().any(|l| l.starts_with("test stage")));
    }
}
