//! Vigil's simulator: seeded transaction traffic with injected incidents and their ground truth,
//! and `vigil-check`, which grades the detector's anomalies against that truth.
//!
//! * [`scenario`]: the TOML scenario format, checked, and the built-in scenarios.
//! * [`amounts`]: clipped log-normal amounts and outlier placement on the detector's scale.
//! * [`generator`]: transactions in event-time order, and the [`truth::GroundTruth`].
//! * [`send`]: the targets (the producer's HTTP batch route, the broker, stdout).
//! * [`run`]: pacing, batching, bounded concurrency, progress, counts ([`report`]).
//! * [`check`]: grading the `anomalies` table against a ground truth.
//! * [`config`]: the two command lines and their checked settings.
//!
//! In-process use (as the end-to-end tests do):
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> vigil_simulator::Result<()> {
//! use vigil_simulator::{check, run, send, Generator, Scenario};
//! let scenario = Scenario::builtin("seed-validation")?;
//! let start = chrono::Utc::now() - chrono::Duration::milliseconds(scenario.duration_ms);
//! let gen = Generator::new(scenario, 42, start);
//! let target = send::Target::Http(send::HttpTarget::new("http://127.0.0.1:3002", None, 5, std::time::Duration::from_secs(30))
//!     .map_err(|e| vigil_simulator::Error::Fatal(e.to_string()))?);
//! let out = run::run(gen, &target, &run::RunOptions::default(), Default::default()).await?;
//! let report = check::check(&out.truth, &pool, &check::CheckOptions::default()).await?;
//! assert!(report.passed, "{}", report.human());
//! # Ok(()) }
//! ```

pub mod amounts;
pub mod check;
pub mod config;
pub mod error;
pub mod generator;
pub mod report;
pub mod run;
pub mod scenario;
pub mod send;
pub mod truth;

pub use error::{Error, Result};
pub use generator::{Generator, SimTransaction};
pub use scenario::Scenario;
pub use truth::GroundTruth;

use config::{RunConfig, TargetConfig};
use send::{HttpTarget, KafkaTarget, StdoutTarget, Target};

/// Builds the target a run's settings name.
pub fn build_target(c: &RunConfig) -> Result<Target> {
    Ok(match &c.target {
        TargetConfig::Http { producer_url, api_key } => Target::Http(
            HttpTarget::new(producer_url, api_key.clone(), c.retries, c.request_timeout)
                .map_err(|e| Error::Fatal(format!("cannot build the HTTP client: {e}")))?,
        ),
        TargetConfig::Kafka { kafka, topic } => {
            Target::Kafka(KafkaTarget::new(kafka, topic, c.request_timeout, c.retries)?)
        }
        TargetConfig::Stdout => Target::Stdout(StdoutTarget::new()),
    })
}

/// Logs to stderr (stdout carries the summary, or the NDJSON of `--target stdout`).
/// `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).try_init();
}
