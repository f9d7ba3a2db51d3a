use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vigil_common::kafka::{KafkaArgs, KafkaConfig};
use vigil_common::{ConfigErrors, Secret, Validator};

/// Vigil producer: validates transaction events and publishes them as Avro to the broker.
///
/// Every option is read from the environment variable shown; a command-line flag overrides it.
/// All values are checked at start-up and every bad one is reported.
#[derive(Parser, Debug, Clone)]
#[command(name = "producer", version)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "PRODUCER_BIND", default_value = "0.0.0.0:3002")]
    pub bind: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// PostgreSQL URL, e.g. postgres://vigil:secret@127.0.0.1:5432/vigil. Required: it holds the
    /// Idempotency-Keys (shared by every producer instance, kept across restarts). Requests
    /// without a key never touch it.
    #[arg(long, env = "DATABASE_URL", default_value = "", hide_env_values = true)]
    pub database_url: String,
    /// Most database connections the service holds at once.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "10")]
    pub database_max_connections: String,
    /// How long an Idempotency-Key is remembered: within it, the same key and body get the first
    /// answer again and the same key with another body is refused (1 minute to 30 days).
    #[arg(long, env = "IDEMPOTENCY_WINDOW", default_value = "24h")]
    pub idempotency_window: String,
    #[command(flatten)]
    pub shutdown: vigil_common::shutdown::ShutdownArgs,
    /// Topic transactions are published to.
    #[arg(long, env = "TRANSACTIONS_TOPIC", default_value = "transactions")]
    pub topic: String,
    /// The detector's verdicts on the transactions that ask for one (see `verdicts`).
    #[arg(long, env = "VERDICTS_TOPIC", default_value = "transaction-verdicts")]
    pub verdicts_topic: String,
    /// How long `POST /transactions` (the older clients' route) waits for the detector's verdict
    /// before answering 202 with a Location to poll; 0 answers at once, without a verdict.
    #[arg(long, env = "VERDICT_WAIT", default_value = "2s")]
    pub verdict_wait: String,
    /// Longest wait a client may ask for with `Prefer: wait=N` on `POST /ingest/transaction`.
    #[arg(long, env = "VERDICT_MAX_WAIT", default_value = "10s")]
    pub verdict_max_wait: String,
    /// Verdicts kept for polls after a 202, and ids remembered as pending (each bounded).
    #[arg(long, env = "VERDICT_CACHE", default_value = "100000")]
    pub verdict_cache: String,
    /// This instance's name in the `vigil.reply-to` header; unique among the producers sharing
    /// the verdicts topic. Empty: the host name and a random suffix, new at every start.
    #[arg(long, env = "INSTANCE_ID", default_value = "")]
    pub instance_id: String,
    /// How long the broker has to acknowledge an event (acks=all) before the client gets 503.
    #[arg(long, env = "PRODUCE_TIMEOUT", default_value = "5s")]
    pub produce_timeout: String,
    /// Events awaiting acknowledgement at once; beyond it requests get 503 instead of queueing.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value = "50000")]
    pub max_in_flight: String,
    /// Most items in one batch request.
    #[arg(long, env = "MAX_BATCH_ITEMS", default_value = "1000")]
    pub max_batch_items: String,
    /// Largest request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "2097152")]
    pub max_body_bytes: String,
    /// Largest accepted amount, in minor units.
    #[arg(long, env = "MAX_AMOUNT_MINOR", default_value = "100000000000")]
    pub max_amount_minor: String,
    /// How far in the future occurred_at may be (clock skew between client and us).
    #[arg(long, env = "MAX_FUTURE_SKEW", default_value = "5m")]
    pub max_future_skew: String,
    /// How old occurred_at may be. Keep it no longer than the detector's retention of state.
    #[arg(long, env = "MAX_EVENT_AGE", default_value = "7d")]
    pub max_event_age: String,
    /// Time limit for a whole request.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,
    /// Comma-separated API keys; when set, ingest routes require `Authorization: Bearer <key>`.
    #[arg(long, env = "API_KEYS", default_value = "", hide_env_values = true)]
    pub api_keys: String,
    /// Sustained events per second per client (API key, else IP address); 0 disables rate limiting.
    /// The default leaves a client sending a few thousand events a second untouched and stops a
    /// runaway one from taking the whole producer (about 40 000 events/s here). The older
    /// design's 5/s with a burst of 10: RATE_LIMIT_PER_SECOND=5 RATE_LIMIT_BURST=10.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value = "10000")]
    pub rate_limit_per_second: String,
    /// Events a client may send at once above its sustained rate (a batch costs one per item,
    /// so keep it at least MAX_BATCH_ITEMS).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value = "20000")]
    pub rate_limit_burst: String,
    /// Confluent-compatible schema registry; when set, messages use the Confluent wire format,
    /// else Avro single-object encoding.
    #[arg(long, env = "SCHEMA_REGISTRY_URL", default_value = "")]
    pub schema_registry_url: String,
    /// Check the configuration, print the verdict and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// The producer's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub kafka: KafkaConfig,
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub idempotency_window: Duration,
    pub topic: String,
    pub verdicts_topic: String,
    pub verdict_wait: Duration,
    pub verdict_max_wait: Duration,
    pub verdict_cache: usize,
    pub instance_id: String,
    pub produce_timeout: Duration,
    pub max_in_flight: u32,
    pub max_batch_items: usize,
    pub max_body_bytes: usize,
    pub rules: crate::validation::Rules,
    pub request_timeout: Duration,
    pub api_keys: Vec<Secret>,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub schema_registry_url: Option<String>,
    /// `SHUTDOWN_TIMEOUT`: how long stopping may take before the process exits with status 1.
    pub shutdown_timeout: Duration,
}

impl Config {
    pub fn from_args(a: Args) -> Result<Self, ConfigErrors> {
        let mut v = Validator::new();
        let bind = v.parse_addr("PRODUCER_BIND", &a.bind);
        let kafka = a.kafka.validate(&mut v);
        let shutdown_timeout = a.shutdown.validate(&mut v);
        let database_url = v.required("DATABASE_URL", &a.database_url);
        if !database_url.is_empty() {
            v.check(
                database_url.starts_with("postgres://") || database_url.starts_with("postgresql://"),
                "DATABASE_URL",
                "must be a postgres:// URL",
            );
        }
        let database_max_connections = v.parse_in("DATABASE_MAX_CONNECTIONS", &a.database_max_connections, 1u32, 1000);
        let idempotency_window = v.parse_positive_duration("IDEMPOTENCY_WINDOW", &a.idempotency_window);
        v.check(
            idempotency_window.is_zero()
                || (Duration::from_secs(60)..=Duration::from_secs(30 * 86_400)).contains(&idempotency_window),
            "IDEMPOTENCY_WINDOW",
            "must be between 1m and 30d",
        );
        let topic = v.required("TRANSACTIONS_TOPIC", &a.topic);
        let verdicts_topic = v.required("VERDICTS_TOPIC", &a.verdicts_topic);
        let verdict_wait = v.parse_duration("VERDICT_WAIT", &a.verdict_wait);
        let verdict_max_wait = v.parse_duration("VERDICT_MAX_WAIT", &a.verdict_max_wait);
        let verdict_cache = v.parse_in("VERDICT_CACHE", &a.verdict_cache, 1usize, 10_000_000);
        let instance_id = match a.instance_id.trim() {
            "" => format!(
                "{}-{}",
                std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "producer".into()),
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            id => id.to_owned(),
        };
        v.check(
            instance_id.len() <= 200 && instance_id.bytes().all(|b| b.is_ascii_graphic()),
            "INSTANCE_ID",
            "must be at most 200 visible ASCII characters",
        );
        let produce_timeout = v.parse_positive_duration("PRODUCE_TIMEOUT", &a.produce_timeout);
        let max_in_flight = v.parse_in("MAX_IN_FLIGHT", &a.max_in_flight, 1u32, 10_000_000);
        let max_batch_items = v.parse_in("MAX_BATCH_ITEMS", &a.max_batch_items, 1usize, 100_000);
        let max_body_bytes = v.parse_in("MAX_BODY_BYTES", &a.max_body_bytes, 1024usize, 1 << 30);
        let max_amount_minor = v.parse_in("MAX_AMOUNT_MINOR", &a.max_amount_minor, 1i64, i64::MAX);
        let max_future_skew = v.parse_duration("MAX_FUTURE_SKEW", &a.max_future_skew);
        let max_event_age = v.parse_positive_duration("MAX_EVENT_AGE", &a.max_event_age);
        let request_timeout = v.parse_positive_duration("REQUEST_TIMEOUT", &a.request_timeout);
        v.check(
            request_timeout > produce_timeout,
            "REQUEST_TIMEOUT",
            format_args!("must be longer than PRODUCE_TIMEOUT ({produce_timeout:?}) so a slow broker answers 503, not a cut connection"),
        );
        for (name, wait) in [("VERDICT_WAIT", verdict_wait), ("VERDICT_MAX_WAIT", verdict_max_wait)] {
            v.check(
                wait + produce_timeout < request_timeout,
                name,
                format_args!("plus PRODUCE_TIMEOUT must stay under REQUEST_TIMEOUT ({request_timeout:?})"),
            );
        }
        v.check(verdict_wait <= verdict_max_wait, "VERDICT_WAIT", "must not exceed VERDICT_MAX_WAIT");
        let api_keys: Vec<Secret> =
            a.api_keys.split(',').map(str::trim).filter(|k| !k.is_empty()).map(Secret::new).collect();
        for k in &api_keys {
            v.check(k.expose().len() >= 16, "API_KEYS", "every key must be at least 16 characters");
        }
        let rate_limit_per_second = v.parse_in("RATE_LIMIT_PER_SECOND", &a.rate_limit_per_second, 0u32, 10_000_000);
        let rate_limit_burst = v.parse_in("RATE_LIMIT_BURST", &a.rate_limit_burst, 1u32, 10_000_000);
        let schema_registry_url = match a.schema_registry_url.trim() {
            "" => None,
            u if u.starts_with("http://") || u.starts_with("https://") => Some(u.to_owned()),
            u => {
                v.error("SCHEMA_REGISTRY_URL", format_args!("{u:?} is not an http(s) URL"));
                None
            }
        };
        v.finish()?;
        Ok(Config {
            bind,
            kafka,
            database_url: Secret::new(database_url),
            database_max_connections,
            idempotency_window,
            shutdown_timeout,
            topic,
            verdicts_topic,
            verdict_wait,
            verdict_max_wait,
            verdict_cache,
            instance_id,
            produce_timeout,
            max_in_flight,
            max_batch_items,
            max_body_bytes,
            rules: crate::validation::Rules { max_amount_minor, max_future_skew, max_event_age },
            request_timeout,
            api_keys,
            rate_limit_per_second,
            rate_limit_burst,
            schema_registry_url,
        })
    }

    /// Defaults with the given broker, database and an ephemeral port (tests).
    pub fn for_tests(brokers: &str, topic: &str, database_url: &str) -> Self {
        let args = Args::parse_from([
            "producer",
            "--bind=127.0.0.1:0",
            &format!("--kafka-brokers={brokers}"),
            &format!("--topic={topic}"),
            &format!("--database-url={database_url}"),
        ]);
        match Config::from_args(args) {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults plus `extra`, with a valid database URL (whatever the environment holds).
    fn args(extra: &[&str]) -> Args {
        let mut args = Args::parse_from(std::iter::once("producer").chain(extra.iter().copied()));
        args.database_url = "postgres://u@127.0.0.1/vigil".into();
        args
    }

    #[test]
    fn rate_limiting_is_on_by_default_and_the_older_designs_limit_is_reachable() {
        let c = Config::from_args(args(&[])).unwrap();
        assert_eq!((c.rate_limit_per_second, c.rate_limit_burst), (10_000, 20_000));
        let c = Config::from_args(args(&["--rate-limit-per-second=5", "--rate-limit-burst=10"])).unwrap();
        assert_eq!((c.rate_limit_per_second, c.rate_limit_burst), (5, 10));
        assert_eq!(Config::from_args(args(&["--rate-limit-per-second=0"])).unwrap().rate_limit_per_second, 0);
    }

    #[test]
    fn the_database_is_required_and_the_idempotency_window_bounded() {
        for url in ["", "mysql://x"] {
            let mut a = args(&[]);
            a.database_url = url.into();
            let e = Config::from_args(a).unwrap_err().to_string();
            assert!(e.contains("DATABASE_URL"), "{url:?}: {e}");
        }
        assert_eq!(Config::from_args(args(&[])).unwrap().idempotency_window, Duration::from_secs(86_400));
        for bad in ["30s", "31d", "0s"] {
            let e = Config::from_args(args(&[&format!("--idempotency-window={bad}")])).unwrap_err().to_string();
            assert!(e.contains("IDEMPOTENCY_WINDOW"), "{bad}: {e}");
        }
    }
}
