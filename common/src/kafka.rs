//! Kafka client settings shared by every service, security included.
//!
//! Every client (producer, consumers, admin) is built from one [`KafkaConfig`], so SASL and TLS
//! settings given once reach all of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};

use crate::config::{Secret, Validator};

/// Broker address and security settings, as environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Comma-separated bootstrap servers (host:port).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl (TLS: ssl and sasl_ssl, e.g. Confluent Cloud, MSK, Aiven).
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", default_value = "plaintext")]
    pub kafka_security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a sasl_* protocol).
    #[arg(long, env = "KAFKA_SASL_MECHANISM", default_value = "")]
    pub kafka_sasl_mechanism: String,
    /// SASL user name (with a sasl_* protocol).
    #[arg(long, env = "KAFKA_SASL_USERNAME", default_value = "")]
    pub kafka_sasl_username: String,
    /// SASL password (with a sasl_* protocol); never printed.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", default_value = "", hide_env_values = true, hide_default_value = true)]
    pub kafka_sasl_password: String,
    /// CA bundle (PEM) to verify the brokers' certificates (ssl, sasl_ssl); empty: the system's CAs.
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION", default_value = "")]
    pub kafka_ssl_ca_location: String,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "KAFKA_SSL_CERTIFICATE_LOCATION", default_value = "")]
    pub kafka_ssl_certificate_location: String,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "KAFKA_SSL_KEY_LOCATION", default_value = "")]
    pub kafka_ssl_key_location: String,
    /// Password of an encrypted client private key; never printed.
    #[arg(long, env = "KAFKA_SSL_KEY_PASSWORD", default_value = "", hide_env_values = true, hide_default_value = true)]
    pub kafka_ssl_key_password: String,
}

/// Validated Kafka settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// rdkafka properties; secrets wrapped so `Debug` never shows them.
    security: Vec<(&'static str, Secret)>,
}

impl KafkaArgs {
    pub fn validate(&self, v: &mut Validator) -> KafkaConfig {
        let brokers = v.required("KAFKA_BROKERS", &self.kafka_brokers);
        for b in brokers.split(',').filter(|b| !b.trim().is_empty()) {
            let ok = b.trim().rsplit_once(':').map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()).unwrap_or(false);
            v.check(ok, "KAFKA_BROKERS", format_args!("{b:?} is not host:port"));
        }
        let protocol = self.kafka_security_protocol.trim().to_ascii_lowercase();
        let mut security = Vec::new();
        match protocol.as_str() {
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl" => {
                security.push(("security.protocol", Secret::new(&protocol)))
            }
            _ => v.error(
                "KAFKA_SECURITY_PROTOCOL",
                format_args!("{protocol:?} is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"),
            ),
        }
        // A setting this build of librdkafka cannot honour makes every client fail at start,
        // with an error that quotes the setting's value (a password included): refuse it here,
        // naming the variable only.
        let features = builtin_features();
        let tls = matches!(protocol.as_str(), "ssl" | "sasl_ssl");
        if tls && !features.iter().any(|f| f == "ssl") {
            v.error(
                "KAFKA_SECURITY_PROTOCOL",
                format_args!(
                    "{protocol} needs TLS, which this build's librdkafka lacks (builtin features: {}); build rdkafka with its ssl feature",
                    features.join(",")
                ),
            );
        }
        if protocol.starts_with("sasl") {
            let mech = self.kafka_sasl_mechanism.trim().to_ascii_uppercase();
            v.check(
                matches!(mech.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"),
                "KAFKA_SASL_MECHANISM",
                format_args!("{mech:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
            );
            let needed = if mech.starts_with("SCRAM") { "sasl_scram" } else { "sasl_plain" };
            v.check(
                features.iter().any(|f| f == needed),
                "KAFKA_SASL_MECHANISM",
                format_args!(
                    "{mech} needs the {needed} feature, which this build's librdkafka lacks (builtin features: {})",
                    features.join(",")
                ),
            );
            v.check(!self.kafka_sasl_username.is_empty(), "KAFKA_SASL_USERNAME", "is required with SASL");
            v.check(!self.kafka_sasl_password.is_empty(), "KAFKA_SASL_PASSWORD", "is required with SASL");
            security.push(("sasl.mechanism", Secret::new(mech)));
            security.push(("sasl.username", Secret::new(&self.kafka_sasl_username)));
            security.push(("sasl.password", Secret::new(&self.kafka_sasl_password)));
        }
        // TLS settings mean something only with a TLS protocol; with plaintext they are left
        // out rather than handed to a client that may not even support them.
        if tls {
            let files = [
                ("ssl.ca.location", "KAFKA_SSL_CA_LOCATION", &self.kafka_ssl_ca_location),
                ("ssl.certificate.location", "KAFKA_SSL_CERTIFICATE_LOCATION", &self.kafka_ssl_certificate_location),
                ("ssl.key.location", "KAFKA_SSL_KEY_LOCATION", &self.kafka_ssl_key_location),
            ];
            for (prop, var, value) in files {
                if !value.is_empty() {
                    v.check(std::path::Path::new(value).exists(), var, format_args!("file {value:?} does not exist"));
                    security.push((prop, Secret::new(value.as_str())));
                }
            }
            let (cert, key) = (&self.kafka_ssl_certificate_location, &self.kafka_ssl_key_location);
            v.check(
                cert.is_empty() == key.is_empty(),
                if cert.is_empty() { "KAFKA_SSL_CERTIFICATE_LOCATION" } else { "KAFKA_SSL_KEY_LOCATION" },
                "is required with the other (mutual TLS takes a client certificate and its key)",
            );
            if !self.kafka_ssl_key_password.is_empty() {
                security.push(("ssl.key.password", Secret::new(&self.kafka_ssl_key_password)));
            }
        }
        KafkaConfig { brokers, security }
    }
}

/// A failed request's error with the cause librdkafka reported before it, if any. librdkafka
/// queues its logs and errors for the client's poll: they are served here first.
pub fn explain(error: &KafkaError, client: &BaseConsumer<DiagnosingContext>) -> String {
    for _ in 0..100 {
        if client.poll(Duration::ZERO).is_none() {
            break;
        }
    }
    match client.context().last_error() {
        Some(cause) => format!("{error} (last broker error: {cause})"),
        None => error.to_string(),
    }
}

/// The features this build of librdkafka has (`builtin.features`), e.g. `ssl`, `sasl_plain`.
pub fn builtin_features() -> Vec<String> {
    ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .map(|f| f.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

/// A client context that keeps the last error librdkafka reported (a TLS handshake refused, an
/// authentication failed), so a failed request can say why instead of librdkafka's generic
/// "broker transport failure". Errors are logged as rdkafka's default context logs them.
#[derive(Clone, Default)]
pub struct DiagnosingContext {
    last_error: Arc<Mutex<Option<String>>>,
}

impl DiagnosingContext {
    /// The last error reported, e.g. `SSL handshake failed: ... certificate verify failed`.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl DiagnosingContext {
    fn remember(&self, what: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(what.to_owned());
        }
    }
}

impl ClientContext for DiagnosingContext {
    // librdkafka logs a failed connection (`FAIL`: TLS handshake, SASL authentication) from its
    // own threads as it happens; error events reach `error` only when the client is polled,
    // which a metadata-only client never is.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                self.remember(message);
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(error = %error, "librdkafka: {reason}");
        self.remember(reason);
    }
}

impl ConsumerContext for DiagnosingContext {}

impl KafkaConfig {
    /// Plaintext settings for a broker address (tests and tools).
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        KafkaConfig { brokers: brokers.into(), security: Vec::new() }
    }

    /// Settings common to every client.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // tansu listens on IPv4 only; so does a typical compose network. Avoid ::1 attempts.
        c.set("broker.address.family", "v4");
        for (k, v) in &self.security {
            c.set(*k, v.expose());
        }
        c
    }

    /// A durable producer: acks from all in-sync replicas, idempotent (no duplicates or
    /// reordering on retry), retrying until `delivery_timeout`.
    pub fn producer_config(&self, delivery_timeout: Duration) -> ClientConfig {
        let mut c = self.client_config();
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", delivery_timeout.as_millis().max(1).to_string())
            .set("linger.ms", "2")
            .set("queue.buffering.max.messages", "200000");
        c
    }

    /// The consumers' session timeout: Kafka's default (45 s, KIP-735), so a broker that is
    /// unreachable for up to that long costs a pause, not the group. With tansu 0.6.0 a member
    /// whose session expired on the client side is never assigned partitions again (the
    /// coordinator keeps its old member id as the group's leader and answers every SyncGroup
    /// with "rebalance in progress"). A member with `group.instance.id` restarted within the
    /// timeout takes its partitions back at once, and a dynamic member that closes sends
    /// LeaveGroup, so neither waits for it. (A static member returning after the timeout met the
    /// same wedge through tansu's stored membership; nisshi, the local broker now, gives it its
    /// partitions back: ops-tests' local_stack.rs.)
    pub const SESSION_TIMEOUT_MS: &'static str = "45000";

    /// A consumer in `group` that commits explicitly and starts at the beginning when it has
    /// no committed offset.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", Self::SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", "1000")
            // Anomalies are sparse: do not let the broker hold a fetch for the default 500 ms
            // waiting for more data when latency is what we are for.
            .set("fetch.wait.max.ms", "50")
            .set("enable.partition.eof", "false");
        c
    }

    /// A client of its own for high-watermark queries (lag gauges, "anything unread?"), never
    /// the consumer's: a request that times out takes its connection down with it
    /// (librdkafka's `socket.max.fails` = 1), and on a consumer's connection that is the fetch
    /// in flight. Behind a fetch the broker needs longer than the query's timeout for (tansu
    /// serving a few MB, a loaded broker), every query would then cost the fetch, and the
    /// consumer would stand still with lag. On this client a timeout costs only its own
    /// connection.
    pub fn watermark_client(&self) -> KafkaResult<BaseConsumer> {
        self.client_config().create()
    }

    /// A metadata-only client whose context keeps librdkafka's last error (health checks).
    pub fn diagnosing_client(&self) -> KafkaResult<BaseConsumer<DiagnosingContext>> {
        self.client_config().create_with_context(DiagnosingContext::default())
    }

    /// Asks the brokers for metadata once; the error names the cause librdkafka reported (TLS
    /// verification, SASL authentication, connection refused) beside the request's own.
    pub fn check_reachable(&self, timeout: Duration) -> Result<(), String> {
        let client = self.diagnosing_client().map_err(|e| format!("cannot create a Kafka client: {e}"))?;
        client.fetch_metadata(None, timeout).map(|_| ()).map_err(|e| explain(&e, &client))
    }

    /// Creates each topic with its partition count; existing topics are left alone.
    pub async fn ensure_topics(&self, topics: &[(&str, i32)]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new: Vec<NewTopic<'_>> =
            topics.iter().map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1))).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("Failed to create topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn sasl_settings_reach_the_client_config_and_never_debug_print() {
        let cli = Cli::parse_from([
            "x",
            "--kafka-brokers=b1:9093,b2:9093",
            "--kafka-security-protocol=SASL_PLAINTEXT",
            "--kafka-sasl-mechanism=plain",
            "--kafka-sasl-username=vigil",
            "--kafka-sasl-password=s3cret",
        ]);
        let mut v = Validator::new();
        let cfg = cli.kafka.validate(&mut v);
        v.finish().unwrap();
        let c = cfg.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("sasl.username"), Some("vigil"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }

    #[test]
    fn bad_kafka_settings_are_all_reported() {
        let cli = Cli::parse_from(["x", "--kafka-brokers=nohost", "--kafka-security-protocol=sasl_plaintext"]);
        let mut v = Validator::new();
        cli.kafka.validate(&mut v);
        let err = v.finish().unwrap_err().to_string();
        for var in ["KAFKA_BROKERS", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"] {
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn this_build_of_librdkafka_has_tls_and_every_sasl_mechanism_vigil_offers() {
        let features = builtin_features();
        for f in ["ssl", "sasl_plain", "sasl_scram"] {
            assert!(features.iter().any(|x| x == f), "librdkafka lacks {f}: {features:?}");
        }
    }

    #[test]
    fn scram_over_tls_reaches_the_client_config_and_librdkafka_accepts_it() {
        // Any PEM bundle: librdkafka loads it when the client is created.
        let ca = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        let cli = Cli::parse_from([
            "x".to_owned(),
            "--kafka-security-protocol=SASL_SSL".to_owned(),
            "--kafka-sasl-mechanism=scram-sha-512".to_owned(),
            "--kafka-sasl-username=vigil".to_owned(),
            "--kafka-sasl-password=s3cret-password".to_owned(),
            format!("--kafka-ssl-ca-location={}", ca.display()),
            "--kafka-ssl-key-password=s3cret-key-password".to_owned(),
        ]);
        let mut v = Validator::new();
        let cfg = cli.kafka.validate(&mut v);
        v.finish().unwrap();
        let c = cfg.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("ssl.ca.location"), Some(ca.to_str().unwrap()));
        assert_eq!(c.get("ssl.key.password"), Some("s3cret-key-password"));
        // librdkafka validates the whole configuration when a client is created.
        let _: BaseConsumer = cfg.consumer_config("g").create().unwrap();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused_by_variable() {
        let cert = std::env::current_exe().unwrap();
        let cli = Cli::parse_from([
            "x".to_owned(),
            "--kafka-security-protocol=ssl".to_owned(),
            format!("--kafka-ssl-certificate-location={}", cert.display()),
        ]);
        let mut v = Validator::new();
        cli.kafka.validate(&mut v);
        let err = v.finish().unwrap_err().to_string();
        assert!(err.contains("KAFKA_SSL_KEY_LOCATION"), "{err}");
        let cli = Cli::parse_from(["x", "--kafka-security-protocol=sasl_ssl", "--kafka-sasl-mechanism=GSSAPI"]);
        let mut v = Validator::new();
        cli.kafka.validate(&mut v);
        let err = v.finish().unwrap_err().to_string();
        assert!(err.contains("KAFKA_SASL_MECHANISM") && err.contains("\"GSSAPI\" is not one of"), "{err}");
    }

    #[test]
    fn tls_settings_reach_the_client_only_with_a_tls_protocol() {
        let cli = Cli::parse_from(["x", "--kafka-ssl-key-password=unused-with-plaintext"]);
        let mut v = Validator::new();
        let cfg = cli.kafka.validate(&mut v);
        v.finish().unwrap();
        assert_eq!(cfg.client_config().get("ssl.key.password"), None);
        let _: rdkafka::consumer::BaseConsumer = cfg.consumer_config("g").create().unwrap();
    }
}
