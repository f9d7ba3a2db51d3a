use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vigil_common::kafka::{KafkaArgs, KafkaConfig};
use vigil_common::{ConfigErrors, Secret, Validator};

/// Vigil sink: writes minute aggregates and anomalies to PostgreSQL, idempotently.
///
/// Every option reads the environment variable shown; a flag overrides it. All values are
/// checked at start-up and every bad one is reported.
#[derive(Parser, Debug, Clone)]
#[command(name = "sink", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address of /health, /ready and /metrics.
    #[arg(long, env = "SINK_BIND", default_value = "0.0.0.0:3004")]
    pub bind: String,
    /// PostgreSQL URL, e.g. postgres://vigil:secret@db:5432/vigil.
    #[arg(long, env = "DATABASE_URL", default_value = "", hide_env_values = true)]
    pub database_url: String,
    /// Largest number of database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "5")]
    pub database_max_connections: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub shutdown: vigil_common::shutdown::ShutdownArgs,
    /// Topic of minute aggregates and late bookings.
    #[arg(long, env = "MINUTES_TOPIC", default_value = "tx-minute")]
    pub minutes_topic: String,
    #[arg(long, env = "ANOMALIES_TOPIC", default_value = "anomalies")]
    pub anomalies_topic: String,
    /// Transactions, stored one row each in transaction_records (with STORE_TRANSACTIONS).
    #[arg(long, env = "TRANSACTIONS_TOPIC", default_value = "transactions")]
    pub transactions_topic: String,
    /// The detector's verdicts, stored in transaction_verdicts (with STORE_TRANSACTIONS).
    #[arg(long, env = "VERDICTS_TOPIC", default_value = "transaction-verdicts")]
    pub verdicts_topic: String,
    /// Store every transaction and verdict, for GET /transactions/{id}, reversals and Grafana's
    /// drill-downs (true or false).
    #[arg(long, env = "STORE_TRANSACTIONS", default_value = "true")]
    pub store_transactions: String,
    /// Keep stored transactions and verdicts this long (event time, whole UTC days); 0 keeps them
    /// forever.
    #[arg(long, env = "RETENTION_TRANSACTIONS", default_value = "30d")]
    pub retention_transactions: String,
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "vigil-dead-letter")]
    pub dead_letter_topic: String,
    #[arg(long, env = "CONSUMER_GROUP", default_value = "vigil-sink")]
    pub consumer_group: String,
    /// Static group membership (`group.instance.id`): a stable, unique id per instance lets a
    /// restarted sink take its partitions back at once. Empty: dynamic membership.
    #[arg(long, env = "CONSUMER_INSTANCE_ID", default_value = "")]
    pub consumer_instance_id: String,
    /// Most messages written in one database transaction.
    #[arg(long, env = "SINK_BATCH_SIZE", default_value = "500")]
    pub batch_size: String,
    /// Longest a message waits for its batch to fill.
    #[arg(long, env = "SINK_LINGER", default_value = "50ms")]
    pub linger: String,
    /// Longest wait between retries of a failed write.
    #[arg(long, env = "SINK_MAX_BACKOFF", default_value = "10s")]
    pub max_backoff: String,
    /// Keep minute aggregates this long (event time); 0 keeps them forever.
    #[arg(long, env = "RETENTION_MINUTES_DATA", default_value = "90d")]
    pub retention_minutes: String,
    /// Keep resolved anomalies this long after they resolved, and amount anomalies (complete when
    /// emitted, never resolved) this long after their transaction; 0 keeps them forever.
    #[arg(long, env = "RETENTION_RESOLVED_ANOMALIES", default_value = "365d")]
    pub retention_anomalies: String,
    /// How often retention runs.
    #[arg(long, env = "RETENTION_INTERVAL", default_value = "1h")]
    pub retention_interval: String,
    /// Confluent schema registry, to resolve schema ids of Confluent-framed messages.
    #[arg(long, env = "SCHEMA_REGISTRY_URL", default_value = "")]
    pub schema_registry_url: String,
    /// Check the configuration, print the verdict and exit.
    #[arg(long, global = true)]
    pub check_config: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Consume and write (the default).
    Run,
    /// Apply the database migrations and exit.
    Migrate,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub kafka: KafkaConfig,
    pub minutes_topic: String,
    pub anomalies_topic: String,
    pub transactions_topic: String,
    pub verdicts_topic: String,
    pub store_transactions: bool,
    pub retention_transactions: Option<Duration>,
    pub dead_letter_topic: String,
    pub consumer_group: String,
    pub consumer_instance_id: Option<String>,
    pub batch_size: usize,
    pub linger: Duration,
    pub max_backoff: Duration,
    pub retention_minutes: Option<Duration>,
    pub retention_anomalies: Option<Duration>,
    pub retention_interval: Duration,
    pub schema_registry_url: Option<String>,
    /// `SHUTDOWN_TIMEOUT`: how long stopping may take before the process exits with status 1.
    pub shutdown_timeout: Duration,
}

impl Config {
    pub fn from_args(a: &Args) -> Result<Self, ConfigErrors> {
        let mut v = Validator::new();
        let url = v.required("DATABASE_URL", &a.database_url);
        v.check(
            url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "DATABASE_URL",
            "must start with postgres:// or postgresql://",
        );
        let opt = |v: &mut Validator, var: &str, raw: &str| {
            let d = v.parse_duration(var, raw);
            (!d.is_zero()).then_some(d)
        };
        let c = Config {
            bind: v.parse_addr("SINK_BIND", &a.bind),
            database_url: Secret::new(url),
            database_max_connections: v.parse_in("DATABASE_MAX_CONNECTIONS", &a.database_max_connections, 1u32, 1000),
            kafka: a.kafka.validate(&mut v),
            shutdown_timeout: a.shutdown.validate(&mut v),
            minutes_topic: v.required("MINUTES_TOPIC", &a.minutes_topic),
            anomalies_topic: v.required("ANOMALIES_TOPIC", &a.anomalies_topic),
            transactions_topic: v.required("TRANSACTIONS_TOPIC", &a.transactions_topic),
            verdicts_topic: v.required("VERDICTS_TOPIC", &a.verdicts_topic),
            store_transactions: match a.store_transactions.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    v.error("STORE_TRANSACTIONS", format_args!("{other:?} is not true or false"));
                    false
                }
            },
            retention_transactions: opt(&mut v, "RETENTION_TRANSACTIONS", &a.retention_transactions),
            dead_letter_topic: v.required("DEAD_LETTER_TOPIC", &a.dead_letter_topic),
            consumer_group: v.required("CONSUMER_GROUP", &a.consumer_group),
            consumer_instance_id: Some(a.consumer_instance_id.trim().to_owned()).filter(|s| !s.is_empty()),
            batch_size: v.parse_in("SINK_BATCH_SIZE", &a.batch_size, 1usize, 100_000),
            linger: v.parse_duration("SINK_LINGER", &a.linger),
            max_backoff: v.parse_positive_duration("SINK_MAX_BACKOFF", &a.max_backoff),
            retention_minutes: opt(&mut v, "RETENTION_MINUTES_DATA", &a.retention_minutes),
            retention_anomalies: opt(&mut v, "RETENTION_RESOLVED_ANOMALIES", &a.retention_anomalies),
            retention_interval: v.parse_positive_duration("RETENTION_INTERVAL", &a.retention_interval),
            schema_registry_url: match a.schema_registry_url.trim() {
                "" => None,
                u => Some(u.to_owned()),
            },
        };
        let topics = [&c.minutes_topic, &c.anomalies_topic, &c.transactions_topic, &c.verdicts_topic];
        for (i, a) in topics.iter().enumerate() {
            for b in &topics[i + 1..] {
                v.check(a != b, "TOPICS", format_args!("topic {a:?} is configured for two purposes"));
            }
        }
        v.finish()?;
        Ok(c)
    }
}
