//! What the operations files must agree on: ports, topics and credentials of the stack.
//!
//! This table is the written record of the stack's contract: `tests/compose.rs` checks the
//! compose file, `redpanda.yml`, the Prometheus, Alertmanager and Grafana configs,
//! `scripts/stack.sh`, the services' own defaults (their `--help`) and the README against it.

/// A Vigil service: its binary, the variable holding its listen address, its port (the
/// binary's default, the one compose uses, the one Prometheus scrapes).
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub name: &'static str,
    pub bind_var: &'static str,
    pub port: u16,
    /// Published on the host by compose (the seed experience: ingest and webhook).
    pub published: bool,
}

pub const SERVICES: [Service; 4] = [
    Service { name: "webhook", bind_var: "WEBHOOK_BIND", port: 3001, published: true },
    Service { name: "producer", bind_var: "PRODUCER_BIND", port: 3002, published: true },
    Service { name: "detector", bind_var: "DETECTOR_BIND", port: 3003, published: false },
    Service { name: "sink", bind_var: "SINK_BIND", port: 3004, published: false },
];

pub const GRAFANA_PORT: u16 = 3000;
pub const GRAFANA_ADMIN_USER: &str = "admin";
pub const GRAFANA_ADMIN_PASSWORD: &str = "admin";
pub const PROMETHEUS_PORT: u16 = 9090;
pub const ALERTMANAGER_PORT: u16 = 9093;

/// Inside the compose network.
pub const KAFKA_BROKERS: &str = "redpanda:9092";
pub const SCHEMA_REGISTRY_URL: &str = "http://redpanda:8081";
/// Published for Kafka clients on the host.
pub const KAFKA_EXTERNAL_PORT: u16 = 19092;
pub const REDPANDA_ADMIN_PORT: u16 = 9644;

pub const POSTGRES_HOST_PORT: &str = "postgres:5432";
pub const POSTGRES_USER: &str = "vigil";
pub const POSTGRES_DEFAULT_PASSWORD: &str = "vigil";
pub const POSTGRES_DB: &str = "vigil";
/// Grafana's read-only login (deploy/postgres/initdb/10-grafana-reader.sh).
pub const GRAFANA_DB_USER: &str = "grafana_reader";
pub const GRAFANA_DB_DEFAULT_PASSWORD: &str = "grafana";

/// The bearer token the webhook service accepts and Grafana and Alertmanager send, when
/// WEBHOOK_TOKEN is not set.
pub const WEBHOOK_DEFAULT_TOKEN: &str = "vigil-local-webhook-token";
pub const GRAFANA_WEBHOOK_PATH: &str = "/grafana/webhook";
pub const ALERTMANAGER_WEBHOOK_PATH: &str = "/alertmanager/webhook";

/// Every topic and its partition count (scripts/stack.sh TOPICS, deploy/redpanda/create-topics.sh).
pub const TOPICS: [(&str, i32); 9] = [
    ("transactions", 6),
    ("tx-partials", 1),
    ("tx-minute", 3),
    ("anomalies", 3),
    ("detector-checkpoints", 6),
    ("detector-merge-checkpoints", 1),
    ("vigil-dead-letter", 1),
    ("transaction-verdicts", 3),
    ("detector-settings", 1),
];
/// Topics Redpanda compacts (state snapshots keyed by partition).
pub const COMPACTED_TOPICS: [&str; 3] = ["detector-checkpoints", "detector-merge-checkpoints", "detector-settings"];

/// Which topic each service variable names (the services' defaults must agree).
pub const TOPIC_VARS: [(&str, &str); 9] = [
    ("TRANSACTIONS_TOPIC", "transactions"),
    ("PARTIALS_TOPIC", "tx-partials"),
    ("MINUTES_TOPIC", "tx-minute"),
    ("ANOMALIES_TOPIC", "anomalies"),
    ("CHECKPOINT_TOPIC", "detector-checkpoints"),
    ("MERGE_CHECKPOINT_TOPIC", "detector-merge-checkpoints"),
    ("DEAD_LETTER_TOPIC", "vigil-dead-letter"),
    ("VERDICTS_TOPIC", "transaction-verdicts"),
    ("SETTINGS_TOPIC", "detector-settings"),
];

/// Grafana data source UIDs, referenced by the dashboards and alert rules.
pub const PG_DATASOURCE_UID: &str = "vigil-postgres";
pub const PROM_DATASOURCE_UID: &str = "vigil-prometheus";
/// UIDs Grafana defines itself: built-in annotations, mixed and dashboard sources, expressions.
pub const GRAFANA_BUILTIN_UIDS: [&str; 4] = ["-- Grafana --", "-- Mixed --", "-- Dashboard --", "__expr__"];

pub fn service(name: &str) -> Service {
    SERVICES.into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no service {name}"))
}
