//! Every setting of the webhook service, read from the environment (a flag overrides it), checked
//! at start-up with every bad value named at once.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderName;
use clap::Parser;
use vigil_common::kafka::{KafkaArgs, KafkaConfig};
use vigil_common::{ConfigErrors, Secret, Validator};
use vigil_schemas::Severity;

use crate::auth::AuthConfig;
use crate::outbound::retry::RetryPolicy;

/// Shortest token or secret accepted: anything shorter is guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// Vigil webhook: receives Grafana and Alertmanager notifications, lists alerts and anomalies,
/// and forwards critical anomalies to external webhooks, signed and retried.
///
/// Every option is read from the environment variable shown; a command-line flag overrides it.
/// All values are checked at start-up and every bad one is reported. Tokens and secrets are never
/// printed or logged.
#[derive(Parser, Debug, Clone)]
#[command(name = "webhook", version)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "WEBHOOK_BIND", default_value = "0.0.0.0:3001")]
    pub bind: String,
    /// PostgreSQL URL, e.g. postgres://vigil:secret@127.0.0.1:5432/vigil. Required.
    #[arg(long, env = "DATABASE_URL", default_value = "", hide_env_values = true)]
    pub database_url: String,
    /// Most database connections the service holds at once.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "10")]
    pub database_max_connections: String,

    /// Comma-separated bearer tokens accepted on the inbound webhooks (and the read routes).
    /// Several at once let a token be rotated without downtime. In Grafana's webhook contact
    /// point set `authorization_scheme: Bearer` and `authorization_credentials: <token>`; in
    /// Alertmanager `http_config.authorization.credentials`. At least 16 characters each.
    #[arg(long, env = "WEBHOOK_TOKENS", default_value = "", hide_env_values = true)]
    pub tokens: String,
    /// One more accepted bearer token (the single-token form of WEBHOOK_TOKENS).
    #[arg(long, env = "WEBHOOK_TOKEN", default_value = "", hide_env_values = true)]
    pub token: String,
    /// Comma-separated `user:token` pairs: people who triage anomalies (POST /alerts/{id}/triage),
    /// each token naming its user in the audit trail (users 1 to 64 letters, digits, . _ - @).
    /// These tokens may also read.
    #[arg(long, env = "TRIAGE_USERS", default_value = "", hide_env_values = true)]
    pub triage_users: String,
    /// How long a critical anomaly may wait for an acknowledgement before it counts in
    /// vigil_webhook_overdue_critical_anomalies (and the VigilCriticalAnomalyUnacknowledged alert).
    #[arg(long, env = "TRIAGE_ACK_DEADLINE", default_value = "15m")]
    pub triage_ack_deadline: String,
    /// How far back the triage queue's gauges look (first seen within it).
    #[arg(long, env = "TRIAGE_QUEUE_WINDOW", default_value = "7d")]
    pub triage_queue_window: String,
    /// Comma-separated bearer tokens that may only read (GET /alerts, GET /grafana/alerts).
    #[arg(long, env = "WEBHOOK_READ_TOKENS", default_value = "", hide_env_values = true)]
    pub read_tokens: String,
    /// Comma-separated HMAC secrets (Grafana's contact point "HMAC Signature" secret). When set,
    /// every POST /grafana/webhook must carry a valid signature made with one of them.
    #[arg(long, env = "WEBHOOK_HMAC_SECRETS", default_value = "", hide_env_values = true)]
    pub hmac_secrets: String,
    /// Header holding Grafana's signature (hex HMAC-SHA256).
    #[arg(long, env = "WEBHOOK_HMAC_HEADER", default_value = "X-Grafana-Alerting-Signature")]
    pub hmac_header: String,
    /// Header holding the Unix-seconds timestamp Grafana signs with the body ("timestamp:body").
    /// Set the same name as the contact point's "Timestamp Header".
    #[arg(long, env = "WEBHOOK_HMAC_TIMESTAMP_HEADER", default_value = "X-Grafana-Alerting-Signature-Timestamp")]
    pub hmac_timestamp_header: String,
    /// Refuse signed requests without a timestamp header (no replay protection without one).
    #[arg(long, env = "WEBHOOK_HMAC_REQUIRE_TIMESTAMP", default_value = "false")]
    pub hmac_require_timestamp: String,
    /// How far a signature timestamp may be from our clock, either way, before the request is
    /// refused as a replay.
    #[arg(long, env = "WEBHOOK_MAX_CLOCK_SKEW", default_value = "5m")]
    pub max_clock_skew: String,
    /// Largest inbound request body, in bytes; larger ones get 413.
    #[arg(long, env = "WEBHOOK_MAX_BODY_BYTES", default_value = "2097152")]
    pub max_body_bytes: String,
    /// Time limit for a whole request.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s")]
    pub request_timeout: String,

    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub shutdown: vigil_common::shutdown::ShutdownArgs,
    /// Topic the detector publishes Avro anomalies to.
    #[arg(long, env = "ANOMALIES_TOPIC", default_value = "anomalies")]
    pub anomalies_topic: String,
    /// Where POST /settings publishes the detector's rule settings (one partition, compacted).
    #[arg(long, env = "SETTINGS_TOPIC", default_value = "detector-settings")]
    pub settings_topic: String,
    /// How far after the wall clock a settings record may take effect at the earliest: more than
    /// the producer's MAX_FUTURE_SKEW (5m), so every detector has read it before any transaction
    /// of its first minute can reach it.
    #[arg(long, env = "SETTINGS_LEAD", default_value = "6m")]
    pub settings_lead: String,
    /// Consumer group of the outbound forwarder (its own, so it sees every anomaly).
    #[arg(long, env = "WEBHOOK_CONSUMER_GROUP", default_value = "vigil-webhook")]
    pub consumer_group: String,
    /// Comma-separated URLs that receive anomalies as signed JSON POSTs. Empty: the forwarder
    /// (and its Kafka consumer) does not run.
    #[arg(long, env = "OUTBOUND_WEBHOOK_URLS", default_value = "")]
    pub outbound_urls: String,
    /// Secret for the X-Vigil-Signature header: sha256=<hex HMAC-SHA256 of "<X-Vigil-Timestamp>.<body>">.
    /// Required with OUTBOUND_WEBHOOK_URLS.
    #[arg(long, env = "OUTBOUND_HMAC_SECRET", default_value = "", hide_env_values = true)]
    pub outbound_hmac_secret: String,
    /// Lowest severity forwarded: medium, high or critical. An anomaly is pushed when it first
    /// reaches it (opening at it, or escalating to it), and again at each higher severity it reaches.
    #[arg(long, env = "OUTBOUND_MIN_SEVERITY", default_value = "critical")]
    pub outbound_min_severity: String,
    /// Time limit for one delivery attempt.
    #[arg(long, env = "OUTBOUND_TIMEOUT", default_value = "10s")]
    pub outbound_timeout: String,
    /// Wait before the first retry; it doubles per attempt (with jitter) up to OUTBOUND_RETRY_MAX.
    #[arg(long, env = "OUTBOUND_RETRY_INITIAL", default_value = "1s")]
    pub outbound_retry_initial: String,
    /// Longest wait between two attempts.
    #[arg(long, env = "OUTBOUND_RETRY_MAX", default_value = "5m")]
    pub outbound_retry_max: String,
    /// How long a delivery is retried before it is marked failed.
    #[arg(long, env = "OUTBOUND_GIVE_UP_AFTER", default_value = "24h")]
    pub outbound_give_up_after: String,

    /// Confluent schema registry, to decode Confluent-framed anomalies (when the detector
    /// publishes through a registry).
    #[arg(long, env = "SCHEMA_REGISTRY_URL", default_value = "")]
    pub schema_registry_url: String,

    /// Check the configuration, print the verdict and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// Where anomalies go, and how hard we try.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    pub urls: Vec<reqwest::Url>,
    pub hmac_secret: Secret,
    pub min_severity: Severity,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// The webhook service's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub auth: AuthConfig,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub triage_ack_deadline: Duration,
    pub triage_queue_window: Duration,
    pub kafka: KafkaConfig,
    pub anomalies_topic: String,
    pub settings_topic: String,
    pub settings_lead: Duration,
    pub consumer_group: String,
    /// `None` when no URL is configured: the forwarder does not run.
    pub outbound: Option<OutboundConfig>,
    pub schema_registry_url: Option<String>,
    /// `SHUTDOWN_TIMEOUT`: how long stopping may take before the process exits with status 1.
    pub shutdown_timeout: Duration,
}

fn secrets(list: &str) -> Vec<Secret> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(Secret::new).collect()
}

fn check_secrets(v: &mut Validator, var: &str, list: &[Secret]) {
    for s in list {
        v.check(
            s.expose().len() >= MIN_SECRET_LEN,
            var,
            format_args!("every value must be at least {MIN_SECRET_LEN} characters"),
        );
        v.check(!s.expose().chars().any(char::is_whitespace), var, "values must not contain whitespace");
    }
}

fn header_name(v: &mut Validator, var: &str, raw: &str) -> HeaderName {
    match HeaderName::try_from(raw.trim()) {
        Ok(h) => h,
        Err(_) => {
            v.error(var, format_args!("{raw:?} is not a valid HTTP header name"));
            HeaderName::from_static("x-invalid")
        }
    }
}

impl Config {
    pub fn from_args(a: Args) -> Result<Self, ConfigErrors> {
        let mut v = Validator::new();
        let bind = v.parse_addr("WEBHOOK_BIND", &a.bind);
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

        let mut write_tokens = secrets(&a.tokens);
        check_secrets(&mut v, "WEBHOOK_TOKENS", &write_tokens);
        let single = secrets(&a.token);
        check_secrets(&mut v, "WEBHOOK_TOKEN", &single);
        v.check(single.len() <= 1, "WEBHOOK_TOKEN", "holds one token; list several in WEBHOOK_TOKENS");
        write_tokens.extend(single);
        let read_tokens = secrets(&a.read_tokens);
        check_secrets(&mut v, "WEBHOOK_READ_TOKENS", &read_tokens);
        let mut users = Vec::new();
        for pair in a.triage_users.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once(':') {
                Some((user, token))
                    if !user.is_empty()
                        && user.len() <= 64
                        && user.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')) =>
                {
                    users.push((user.to_owned(), Secret::new(token.to_owned())));
                }
                _ => v.error("TRIAGE_USERS", "each entry is user:token, the user 1 to 64 letters, digits or . _ - @"),
            }
        }
        let user_tokens: Vec<Secret> = users.iter().map(|(_, t)| t.clone()).collect();
        check_secrets(&mut v, "TRIAGE_USERS", &user_tokens);
        let hmac_secrets = secrets(&a.hmac_secrets);
        check_secrets(&mut v, "WEBHOOK_HMAC_SECRETS", &hmac_secrets);
        v.check(
            !write_tokens.is_empty() || !hmac_secrets.is_empty(),
            "WEBHOOK_TOKENS",
            "set WEBHOOK_TOKENS (or WEBHOOK_TOKEN) or WEBHOOK_HMAC_SECRETS: the webhooks never run unauthenticated",
        );
        let hmac_header = header_name(&mut v, "WEBHOOK_HMAC_HEADER", &a.hmac_header);
        let hmac_timestamp_header = header_name(&mut v, "WEBHOOK_HMAC_TIMESTAMP_HEADER", &a.hmac_timestamp_header);
        let require_timestamp = v.parse_bool("WEBHOOK_HMAC_REQUIRE_TIMESTAMP", &a.hmac_require_timestamp);
        let max_clock_skew = v.parse_positive_duration("WEBHOOK_MAX_CLOCK_SKEW", &a.max_clock_skew);
        let max_body_bytes = v.parse_in("WEBHOOK_MAX_BODY_BYTES", &a.max_body_bytes, 1024usize, 1 << 30);
        let request_timeout = v.parse_positive_duration("REQUEST_TIMEOUT", &a.request_timeout);
        let triage_ack_deadline = v.parse_positive_duration("TRIAGE_ACK_DEADLINE", &a.triage_ack_deadline);
        let triage_queue_window = v.parse_positive_duration("TRIAGE_QUEUE_WINDOW", &a.triage_queue_window);
        v.check(
            triage_ack_deadline < triage_queue_window,
            "TRIAGE_ACK_DEADLINE",
            "must be shorter than TRIAGE_QUEUE_WINDOW",
        );

        let kafka = a.kafka.validate(&mut v);
        let anomalies_topic = v.required("ANOMALIES_TOPIC", &a.anomalies_topic);
        let settings_topic = v.required("SETTINGS_TOPIC", &a.settings_topic);
        let settings_lead = v.parse_positive_duration("SETTINGS_LEAD", &a.settings_lead);
        let consumer_group = v.required("WEBHOOK_CONSUMER_GROUP", &a.consumer_group);

        let mut urls = Vec::new();
        for raw in a.outbound_urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            match reqwest::Url::parse(raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    v.check(!urls.contains(&u), "OUTBOUND_WEBHOOK_URLS", format_args!("{raw:?} is listed twice"));
                    urls.push(u);
                }
                Ok(_) => v.error("OUTBOUND_WEBHOOK_URLS", format_args!("{raw:?} is not an http(s) URL")),
                Err(e) => v.error("OUTBOUND_WEBHOOK_URLS", format_args!("{raw:?} is not a URL: {e}")),
            }
        }
        let outbound_hmac_secret = Secret::new(a.outbound_hmac_secret.trim());
        let min_severity = Severity::parse(a.outbound_min_severity.trim()).unwrap_or_else(|| {
            v.error(
                "OUTBOUND_MIN_SEVERITY",
                format_args!("{:?} is not one of medium, high, critical", a.outbound_min_severity),
            );
            Severity::Critical
        });
        let timeout = v.parse_positive_duration("OUTBOUND_TIMEOUT", &a.outbound_timeout);
        let initial = v.parse_positive_duration("OUTBOUND_RETRY_INITIAL", &a.outbound_retry_initial);
        let max = v.parse_positive_duration("OUTBOUND_RETRY_MAX", &a.outbound_retry_max);
        let give_up_after = v.parse_positive_duration("OUTBOUND_GIVE_UP_AFTER", &a.outbound_give_up_after);
        v.check(initial <= max, "OUTBOUND_RETRY_INITIAL", format_args!("must not exceed OUTBOUND_RETRY_MAX ({max:?})"));
        let outbound = if urls.is_empty() {
            None
        } else {
            v.check(!outbound_hmac_secret.is_empty(), "OUTBOUND_HMAC_SECRET", "is required with OUTBOUND_WEBHOOK_URLS");
            if !outbound_hmac_secret.is_empty() {
                check_secrets(&mut v, "OUTBOUND_HMAC_SECRET", std::slice::from_ref(&outbound_hmac_secret));
            }
            Some(OutboundConfig {
                urls,
                hmac_secret: outbound_hmac_secret,
                min_severity,
                timeout,
                retry: RetryPolicy { initial, max, give_up_after },
            })
        };

        v.finish()?;
        Ok(Config {
            bind,
            database_url: Secret::new(database_url),
            database_max_connections,
            auth: AuthConfig {
                write_tokens,
                read_tokens,
                hmac_secrets,
                hmac_header,
                hmac_timestamp_header,
                require_timestamp,
                max_clock_skew,
                users,
            },
            max_body_bytes,
            request_timeout,
            triage_ack_deadline,
            triage_queue_window,
            kafka,
            anomalies_topic,
            settings_topic,
            settings_lead,
            consumer_group,
            outbound,
            schema_registry_url: Some(a.schema_registry_url.trim().to_owned()).filter(|u| !u.is_empty()),
            shutdown_timeout,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigErrors> {
        let mut all = vec!["webhook"];
        all.extend_from_slice(args);
        Config::from_args(Args::parse_from(all))
    }

    #[test]
    fn defaults_with_a_database_and_a_token_are_valid() {
        let c = parse(&["--database-url=postgres://u@h/db", "--token=0123456789abcdef"]).unwrap();
        assert_eq!(c.bind.port(), 3001);
        assert_eq!(c.auth.write_tokens.len(), 1);
        assert!(c.outbound.is_none());
        assert_eq!(c.anomalies_topic, "anomalies");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn every_bad_value_is_named_at_once() {
        let err = parse(&[
            "--bind=nowhere",
            "--tokens=short",
            "--outbound-urls=ftp://x/,http://ok.example/",
            "--outbound-min-severity=apocalyptic",
            "--outbound-retry-initial=10m",
            "--outbound-retry-max=1m",
            "--max-clock-skew=soon",
        ])
        .unwrap_err()
        .to_string();
        for var in [
            "WEBHOOK_BIND",
            "DATABASE_URL",
            "WEBHOOK_TOKENS",
            "OUTBOUND_WEBHOOK_URLS",
            "OUTBOUND_MIN_SEVERITY",
            "OUTBOUND_RETRY_INITIAL",
            "OUTBOUND_HMAC_SECRET",
            "WEBHOOK_MAX_CLOCK_SKEW",
        ] {
            assert!(err.contains(var), "{var} missing from:\n{err}");
        }
        assert!(!err.contains("short\""), "a secret was printed:\n{err}");
    }

    #[test]
    fn the_service_refuses_to_run_without_any_credential() {
        let err = parse(&["--database-url=postgres://u@h/db"]).unwrap_err().to_string();
        assert!(err.contains("never run unauthenticated"), "{err}");
        parse(&["--database-url=postgres://u@h/db", "--hmac-secrets=0123456789abcdef0123"]).unwrap();
    }

    #[test]
    fn single_and_listed_tokens_are_both_accepted_for_rotation() {
        let c = parse(&[
            "--database-url=postgres://u@h/db",
            "--tokens=aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb",
            "--token=cccccccccccccccc",
        ])
        .unwrap();
        assert_eq!(c.auth.write_tokens.len(), 3);
    }
}
