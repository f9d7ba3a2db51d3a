use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_webhook");

const EVERY_VARIABLE: [&str; 26] = [
    "WEBHOOK_BIND",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "WEBHOOK_TOKENS",
    "WEBHOOK_TOKEN",
    "WEBHOOK_READ_TOKENS",
    "WEBHOOK_HMAC_SECRETS",
    "WEBHOOK_HMAC_HEADER",
    "WEBHOOK_HMAC_TIMESTAMP_HEADER",
    "WEBHOOK_HMAC_REQUIRE_TIMESTAMP",
    "WEBHOOK_MAX_CLOCK_SKEW",
    "WEBHOOK_MAX_BODY_BYTES",
    "REQUEST_TIMEOUT",
    "KAFKA_BROKERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "ANOMALIES_TOPIC",
    "WEBHOOK_CONSUMER_GROUP",
    "OUTBOUND_WEBHOOK_URLS",
    "OUTBOUND_HMAC_SECRET",
    "OUTBOUND_MIN_SEVERITY",
    "OUTBOUND_TIMEOUT",
    "OUTBOUND_RETRY_INITIAL",
    "OUTBOUND_RETRY_MAX",
    "OUTBOUND_GIVE_UP_AFTER",
    "KAFKA_SSL_CA_LOCATION",
];

fn webhook() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if EVERY_VARIABLE.contains(&k.as_str()) || k.starts_with("KAFKA_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_documents_every_environment_variable() {
    let out = webhook().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in EVERY_VARIABLE {
        assert!(
            help.contains(&format!("env: {var}=")) || help.contains(&format!("env: {var}]")),
            "{var} missing:\n{help}"
        );
    }
}

#[test]
fn check_config_names_every_bad_value_and_exits_non_zero() {
    let out = webhook()
        .args(["--check-config", "--bind=everywhere", "--tokens=short", "--outbound-urls=http://receiver.example/hook"])
        .env("OUTBOUND_MIN_SEVERITY", "apocalyptic")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for var in ["WEBHOOK_BIND", "DATABASE_URL", "WEBHOOK_TOKENS", "OUTBOUND_HMAC_SECRET", "OUTBOUND_MIN_SEVERITY"] {
        assert!(err.contains(var), "{var} missing:\n{err}");
    }
    assert!(!err.contains("short"), "a secret was printed:\n{err}");
}

#[test]
fn check_config_accepts_a_valid_configuration_without_connecting() {
    let out = webhook()
        .args(["--check-config"])
        .env("DATABASE_URL", "postgres://vigil@db.invalid:5432/vigil")
        .env("WEBHOOK_TOKEN", "a-token-of-sufficient-length")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "configuration is valid");
}
