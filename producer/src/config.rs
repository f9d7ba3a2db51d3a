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
    #[command(flatten)]
    pub shutdown: vigil_common::shutdown::ShutdownArgs,
    /// Topic transactions are published to.
    #[arg(long, env = "TRANSACTIONS_TOPIC", default_value = "transactions")]
    pub topic: String,
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
    pub topic: String,
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
        let topic = v.required("TRANSACTIONS_TOPIC", &a.topic);
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
            shutdown_timeout,
            topic,
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

    /// Defaults with the given broker and an ephemeral port (tests).
    pub fn for_tests(brokers: &str, topic: &str) -> Self {
        let args = Args::parse_from([
            "producer",
            "--bind=127.0.0.1:0",
            &format!("--kafka-brokers={brokers}"),
            &format!("--topic={topic}"),
        ]);
        match Config::from_args(args) {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        }
    }
}
