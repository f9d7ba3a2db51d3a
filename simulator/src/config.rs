//! Command lines of `simulator` and `vigil-check`, and their checked settings.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use vigil_common::config::parse_duration;
use vigil_common::kafka::{KafkaArgs, KafkaConfig};
use vigil_common::{ConfigErrors, Secret, Validator};

use crate::run::{RunOptions, Speed};
use crate::scenario::{builtin_names, fmt_duration, Scenario, DEFAULT_SCENARIO};

/// Vigil's traffic simulator: seeded transaction traffic from a scenario (baseline volume,
/// status and auth-code mix, amounts per merchant, a daily cycle) with injected incidents
/// (rate spikes, auth-code surges, amount outliers, merchants going dark), sent through the
/// producer's HTTP API or straight to the broker. Every run can write its ground truth, which
/// `vigil-check` grades the detector's anomalies against.
///
/// Examples:
///
///   simulator run --scenario seed-validation --speed max --ground-truth gt.json
///
///   simulator run --start now-30m --speed 1 --loop          (history at once, then live)
///
///   simulator run --scenario my.toml --target kafka --speed max --report report.json
///
///   simulator run --scenario normal-day --target stdout --speed max | detector replay
///
///   simulator scenarios ; simulator show mixed
#[derive(Parser, Debug)]
#[command(name = "simulator", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate a scenario's traffic and send it.
    Run(Box<RunArgs>),
    /// List the built-in scenarios.
    Scenarios,
    /// Print a built-in scenario's TOML (a commented example of the format), or check a
    /// scenario file and print it.
    Show {
        /// A built-in scenario's name, or a path to a scenario file.
        name: String,
    },
}

/// Every option of `simulator run`; each can also come from the environment variable shown.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// A built-in scenario (see `simulator scenarios`) or the path of a scenario TOML file.
    #[arg(long, env = "SIMULATOR_SCENARIO", default_value = DEFAULT_SCENARIO)]
    pub scenario: String,
    /// `max` (as fast as the target takes it) or a factor: 1 is real time, 60 a minute per
    /// second. A simulated clock starts at the real time of launch and runs this many times as
    /// fast; every transaction whose occurred_at it has reached is sent at once (so with
    /// --start in the past, that history goes immediately, then the rest at the given pace).
    #[arg(long, env = "SIMULATOR_SPEED", default_value = "1")]
    pub speed: String,
    /// Send each transaction this long after the simulated clock reaches its occurred_at (with a
    /// factor speed): a feed that trails the wall clock, as a back-fill or a delayed upstream
    /// does. With --start now-<delay> and --speed 1, the stream runs in real time, <delay>
    /// behind the clock, instead of catching up at once. Not with --speed max.
    #[arg(long, env = "SIMULATOR_DELAY", default_value = "0s")]
    pub delay: String,
    /// Event time of the scenario's start: `now`, `now-<duration>` (e.g. now-30m, now-24h) or
    /// an RFC 3339 time; rounded down to the minute. Default: `now`, or with --speed max
    /// `now-<scenario duration>` so that event time ends now (the producer refuses events
    /// more than 5 minutes in the future).
    #[arg(long, env = "SIMULATOR_START")]
    pub start: Option<String>,
    /// `http` (the producer's batch route), `kafka` (straight to the broker, for benchmarks:
    /// the producer's Avro encoding, key = category, acks=all, idempotent) or `stdout`
    /// (NDJSON in the producer's JSON form, e.g. for `detector replay`).
    #[arg(long, env = "SIMULATOR_TARGET", default_value = "http")]
    pub target: String,
    /// The producer's base URL (target http).
    #[arg(long, env = "PRODUCER_URL", default_value = "http://127.0.0.1:3002")]
    pub producer_url: String,
    /// API key sent as `Authorization: Bearer <key>` (target http), when the producer requires one.
    #[arg(long, env = "PRODUCER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to publish to (target kafka).
    #[arg(long, env = "TRANSACTIONS_TOPIC", default_value = "transactions")]
    pub topic: String,
    /// Transactions per request (target http; the producer takes at most MAX_BATCH_ITEMS,
    /// 1000 by default) or per group of records awaited together (target kafka).
    #[arg(long, env = "SIMULATOR_BATCH_SIZE", default_value = "500")]
    pub batch_size: String,
    /// Batches in flight at once. Batches are only sent together while their event times lie
    /// within --max-skew of each other, so concurrency never makes the detector see an event late.
    #[arg(long, env = "SIMULATOR_CONCURRENCY", default_value = "4")]
    pub concurrency: String,
    /// Largest event-time spread of the batches in flight at once; keep it below the
    /// detector's ALLOWED_LATENESS (30 s by default).
    #[arg(long, env = "SIMULATOR_MAX_SKEW", default_value = "20s")]
    pub max_skew: String,
    /// Seed of every random choice: the same seed, scenario and --start give the same
    /// transactions, ids included.
    #[arg(long, env = "SIMULATOR_SEED", default_value = "1")]
    pub seed: String,
    /// Write the ground truth (JSON) here: scenario, seed, event-time span and every incident
    /// with its expected rules, span and, for amount outliers, each transaction id with its
    /// expected severity. Rewritten as each --loop iteration begins.
    #[arg(long, env = "SIMULATOR_GROUND_TRUTH")]
    pub ground_truth: Option<PathBuf>,
    /// Write the counts (JSON) here at the end: sent = accepted + refused + unavailable,
    /// responses by HTTP status code, retries, timings.
    #[arg(long, env = "SIMULATOR_REPORT")]
    pub report: Option<PathBuf>,
    /// Times an item the producer could not take (503, 429, 5xx, a broken connection, or an
    /// item marked unavailable) is sent again with the same transaction id before it is
    /// reported as unavailable. Refused (invalid) items are never retried.
    #[arg(long, env = "SIMULATOR_RETRIES", default_value = "5")]
    pub retries: String,
    /// Time limit of one HTTP request (target http), or of one broker acknowledgement (kafka).
    #[arg(long, env = "SIMULATOR_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,
    /// How often progress (sent, event time reached, rate) is logged to stderr.
    #[arg(long, env = "SIMULATOR_PROGRESS_INTERVAL", default_value = "5s")]
    pub progress_interval: String,
    /// Override the scenario's average events per minute (incidents scale with it).
    #[arg(long, env = "SIMULATOR_EVENTS_PER_MINUTE")]
    pub events_per_minute: Option<String>,
    /// Repeat the scenario forever, event time continuing (incidents recur each iteration).
    /// Not with --speed max.
    #[arg(long = "loop", env = "SIMULATOR_LOOP")]
    pub repeat: bool,
}

#[derive(Debug, Clone)]
pub enum TargetConfig {
    Http { producer_url: String, api_key: Option<Secret> },
    Kafka { kafka: KafkaConfig, topic: String },
    Stdout,
}

/// Checked settings of `simulator run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub seed: u64,
    pub start: DateTime<Utc>,
    pub repeat: bool,
    pub target: TargetConfig,
    pub retries: u32,
    pub request_timeout: Duration,
    pub options: RunOptions,
    /// Things worth saying before the run (e.g. event time will run ahead of the clock).
    pub warnings: Vec<String>,
}

/// Parses `now`, `now-<duration>` or an RFC 3339 time.
pub fn parse_start(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rest) = s.strip_prefix("now-") {
        let d = parse_duration(rest).map_err(|e| format!("{raw:?}: {e}"))?;
        let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return Ok(now - d);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{raw:?} is not now, now-<duration> (e.g. now-30m) or an RFC 3339 time"))
}

impl RunConfig {
    /// Checks every option, reporting every bad one at once.
    pub fn from_args(a: &RunArgs, now: DateTime<Utc>) -> Result<RunConfig, ConfigErrors> {
        let mut v = Validator::new();
        let mut scenario = match Scenario::load(&a.scenario) {
            Ok(s) => Some(s),
            Err(e) => {
                v.error("--scenario", e);
                None
            }
        };
        if let (Some(s), Some(raw)) = (&mut scenario, &a.events_per_minute) {
            s.events_per_minute = v.parse_in("--events-per-minute", raw, 0.01, 10_000_000.0);
        }
        let speed = match Speed::parse(&a.speed) {
            Ok(s) => s,
            Err(e) => {
                v.error("--speed", e);
                Speed::Max
            }
        };
        let duration_ms = scenario.as_ref().map_or(0, |s| s.duration_ms);
        let start = match (&a.start, speed) {
            (Some(raw), _) => parse_start(raw, now).unwrap_or_else(|e| {
                v.error("--start", e);
                now
            }),
            (None, Speed::Max) => now - chrono::Duration::milliseconds(duration_ms),
            (None, Speed::Factor(_)) => now,
        };
        v.check(
            !(a.repeat && speed == Speed::Max),
            "--loop",
            "cannot go with --speed max: event time would run into the future without bound",
        );
        let target = match a.target.trim() {
            "http" => {
                let url = a.producer_url.trim().to_owned();
                v.check(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "--producer-url",
                    format_args!("{url:?} is not an http(s) URL"),
                );
                let api_key = a.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(Secret::new);
                TargetConfig::Http { producer_url: url, api_key }
            }
            "kafka" => {
                let kafka = a.kafka.validate(&mut v);
                let topic = v.required("--topic", &a.topic);
                TargetConfig::Kafka { kafka, topic }
            }
            "stdout" => TargetConfig::Stdout,
            other => {
                v.error("--target", format_args!("{other:?} is not one of http, kafka, stdout"));
                TargetConfig::Stdout
            }
        };
        let batch_size = v.parse_in("--batch-size", &a.batch_size, 1usize, 100_000);
        let concurrency = v.parse_in("--concurrency", &a.concurrency, 1usize, 256);
        let max_skew = v.parse_duration("--max-skew", &a.max_skew);
        let delay = v.parse_duration("--delay", &a.delay);
        v.check(
            speed != Speed::Max || delay.is_zero(),
            "--delay",
            "cannot go with --speed max: nothing is paced, so nothing can trail the clock",
        );
        let seed: u64 = v.parse("--seed", &a.seed);
        let retries = v.parse_in("--retries", &a.retries, 0u32, 1000);
        let request_timeout = v.parse_positive_duration("--request-timeout", &a.request_timeout);
        let progress_every = v.parse_positive_duration("--progress-interval", &a.progress_interval);
        v.finish()?;
        let scenario = scenario.ok_or_else(|| ConfigErrors(vec!["--scenario: missing".into()]))?;

        // Event time ahead of the wall clock when sent: (t - now)(1 - 1/speed) for t after now.
        let mut warnings = Vec::new();
        let end = start + chrono::Duration::milliseconds(scenario.duration_ms);
        let ahead = match speed {
            Speed::Max => Some(end - now),
            Speed::Factor(f) if f > 1.0 => {
                Some(chrono::Duration::milliseconds(((end - now).num_milliseconds() as f64 * (1.0 - 1.0 / f)) as i64))
            }
            Speed::Factor(_) => None,
        };
        if let Some(ahead) = ahead.filter(|d| *d > chrono::Duration::minutes(5)) {
            warnings.push(format!(
                "event time will run up to {} ahead of the wall clock{}; the producer refuses events more than \
                 MAX_FUTURE_SKEW (5 minutes by default) in the future",
                fmt_duration(ahead.num_milliseconds()),
                if a.repeat { " in the first iteration, and further in later ones" } else { "" }
            ));
        }
        Ok(RunConfig {
            scenario,
            seed,
            start,
            repeat: a.repeat,
            target,
            retries,
            request_timeout,
            options: RunOptions {
                speed,
                batch_size,
                concurrency,
                max_skew,
                delay,
                progress_every,
                ground_truth: a.ground_truth.clone(),
                report: a.report.clone(),
            },
            warnings,
        })
    }
}

/// vigil-check: grades the detector's anomalies against a simulator run's ground truth.
///
/// For each incident: detected or not, how many windows after onset, with what severity,
/// whether it resolved; then every anomaly no incident explains, as a false alarm. Only
/// anomalies whose onset lies in the run's event time are considered.
///
/// Exit status: 0 when every checkable incident is detected as expected and there is no false
/// alarm; 1 when one is missed, late, of the wrong severity, or a false alarm occurred; 2 when
/// the check itself could not run.
#[derive(Parser, Debug, Clone)]
#[command(name = "vigil-check", version, verbatim_doc_comment)]
pub struct CheckArgs {
    /// The ground truth a simulator run wrote (--ground-truth).
    #[arg(long, env = "GROUND_TRUTH")]
    pub ground_truth: PathBuf,
    /// PostgreSQL holding the sink's `anomalies` table.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, required_unless_present = "replay")]
    pub database_url: Option<String>,
    /// Grade the output of `detector replay` (NDJSON, `-` for stdin) instead of the database:
    /// checks a scenario against the detector's rules in seconds, with no broker or database.
    #[arg(long, conflicts_with = "database_url")]
    pub replay: Option<PathBuf>,
    /// Largest accepted delay, in one-minute windows, between an incident's first minute and
    /// the first window of its anomaly.
    #[arg(long, env = "VIGIL_CHECK_MAX_DELAY_WINDOWS", default_value_t = 2)]
    pub max_delay_windows: i64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One line per built-in scenario.
pub fn scenario_list() -> String {
    let mut out = String::new();
    for name in builtin_names() {
        match Scenario::builtin(name) {
            Ok(s) => {
                out += &format!(
                    "{name:<16} {:>6}  {:>5}/min  {} incident{}\n{:<16} {}\n",
                    fmt_duration(s.duration_ms),
                    s.events_per_minute,
                    s.incidents.len(),
                    if s.incidents.len() == 1 { "" } else { "s" },
                    "",
                    s.description
                );
            }
            Err(e) => out += &format!("{name:<16} (invalid: {e})\n"),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T12:00:30Z").map(|t| t.with_timezone(&Utc)).unwrap()
    }

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec!["simulator", "run"];
        v.extend_from_slice(extra);
        match Cli::parse_from(v).command {
            Command::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_times_parse_relative_to_now_or_absolute() {
        assert_eq!(parse_start("now", now()), Ok(now()));
        assert_eq!(parse_start("now-30m", now()), Ok(now() - chrono::Duration::minutes(30)));
        assert_eq!(parse_start("2026-01-01T00:00:00Z", now()).unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert!(parse_start("yesterday", now()).is_err());
    }

    #[test]
    fn at_max_speed_the_default_start_ends_the_scenario_now() {
        let c = RunConfig::from_args(&args(&["--speed", "max"]), now()).unwrap();
        assert_eq!(c.start, now() - chrono::Duration::minutes(60));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = RunConfig::from_args(&args(&["--speed", "max", "--start", "now-10m"]), now()).unwrap();
        assert!(c.warnings[0].contains("ahead of the wall clock"), "{:?}", c.warnings);
    }

    #[test]
    fn every_bad_option_is_reported_at_once() {
        let a = args(&[
            "--scenario",
            "no-such-scenario",
            "--speed",
            "warp",
            "--start",
            "later",
            "--target",
            "pigeon",
            "--batch-size",
            "0",
            "--seed=-1",
        ]);
        let err = RunConfig::from_args(&a, now()).unwrap_err().to_string();
        for opt in ["--scenario", "--speed", "--start", "--target", "--batch-size", "--seed"] {
            assert!(err.contains(opt), "{opt} missing from {err}");
        }
        let a = args(&["--loop", "--speed", "max"]);
        assert!(RunConfig::from_args(&a, now()).unwrap_err().to_string().contains("--loop"));
        let a = args(&["--delay", "3m", "--speed", "max"]);
        assert!(RunConfig::from_args(&a, now()).unwrap_err().to_string().contains("--delay"));
        let a = args(&["--delay", "soon"]);
        assert!(RunConfig::from_args(&a, now()).unwrap_err().to_string().contains("--delay"));
        let c = RunConfig::from_args(&args(&["--delay", "3m", "--start", "now-3m"]), now()).unwrap();
        assert_eq!(c.options.delay, Duration::from_secs(180));
    }

    #[test]
    fn the_scenario_list_names_every_built_in() {
        let list = scenario_list();
        for name in builtin_names() {
            assert!(list.contains(name), "{list}");
        }
        assert!(!list.contains("invalid"), "{list}");
    }
}
