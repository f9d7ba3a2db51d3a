//! Managed Kafka: the four services through TLS against a private nisshi broker, with the
//! broker's certificate verified against a CA of the test's own, with mutual TLS (stunnel in
//! front of the broker, requiring a client certificate), and with SASL/SCRAM over TLS (nisshi's
//! own `--authentication`); a wrong CA, a missing client certificate and a wrong password are
//! refused with errors naming the cause; the SASL password never reaches a log line, /metrics
//! or `--check-config`.
//!
//! Every broker here advertises the address the clients reach it through (stunnel's port with
//! mutual TLS), so every connection after the bootstrap goes through TLS too.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DurationRound, Utc};
use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use vigil_e2e::{try_start_detector_from, Running, Topics};
use vigil_ops_tests::tools;
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Codec, Severity};
use vigil_testkit::tls::{kafka_config, kafka_flags, TestPki, TlsBroker, TlsMode};
use vigil_testkit::{eventually, fresh_database, unique, TestDb};

const OUTBOUND_SECRET: &str = "kafka-tls-outbound-secret-0001";

/// Bodies a local webhook receiver got (answering 200 to each).
#[derive(Clone, Default)]
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver { url: format!("http://{}/hook", listener.local_addr().unwrap()), ..Default::default() };
        let bodies = r.bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let bodies = bodies.clone();
                tokio::spawn(async move {
                    // One request per connection is enough for the forwarder's POSTs.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                bodies.lock().unwrap().push(String::from_utf8_lossy(&buf[end + 4..]).into_owned());
                                let _ = sock
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                    .await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        r
    }
}

/// The detector's, sink's, producer's and webhook's flags for `topics` on a broker given by
/// `kafka` (its `--kafka-*` flags), each service in-process.
struct Services {
    producer: Running,
    detector: Running,
    sink: Running,
    webhook: Running,
}

fn without_brokers(flags: Vec<String>) -> impl Iterator<Item = String> {
    flags.into_iter().filter(|f| !f.starts_with("--kafka-brokers="))
}

async fn start_services(kafka: &[String], topics: &Topics, db: &TestDb, receiver: &Receiver) -> Services {
    let mut args: Vec<String> = vec![
        "producer".into(),
        format!("--database-url={}", db.url),
        "--bind=127.0.0.1:0".into(),
        format!("--topic={}", topics.transactions),
        format!("--verdicts-topic={}", topics.verdicts),
        "--max-event-age=30d".into(),
        "--rate-limit-per-second=0".into(),
    ];
    args.extend(kafka.iter().cloned());
    let config = vigil_producer::Config::from_args(vigil_producer::Args::parse_from(args)).unwrap();
    let app = vigil_producer::Application::build(config).await.unwrap();
    let (port, stop) = (app.port(), CancellationToken::new());
    let producer = Running::new(port, stop.clone(), tokio::spawn(app.run(stop)));

    let mut args: Vec<String> = vec!["detector".into(), "--bind=127.0.0.1:0".into()];
    args.extend(without_brokers(topics.detector_flags()));
    args.extend([
        format!("--consumer-group={}", unique("detector")),
        "--idle-timeout=3s".into(),
        "--commit-interval=200ms".into(),
        "--checkpoint-interval=2s".into(),
    ]);
    args.extend(kafka.iter().cloned());
    let detector = try_start_detector_from(args).await.unwrap();

    let mut args: Vec<String> = vec!["sink".into(), "--bind=127.0.0.1:0".into(), format!("--database-url={}", db.url)];
    args.extend(without_brokers(topics.sink_flags()));
    args.extend([format!("--consumer-group={}", unique("sink")), "--linger=100ms".into()]);
    args.extend(kafka.iter().cloned());
    let config = vigil_sink::Config::from_args(&vigil_sink::Args::parse_from(args)).unwrap();
    let app = vigil_sink::Application::build(config).await.unwrap();
    let (port, stop) = (app.port(), CancellationToken::new());
    let sink = Running::new(port, stop.clone(), tokio::spawn(app.run(stop)));

    let webhook_db = fresh_database().await;
    let mut args: Vec<String> = vec![
        "webhook".into(),
        "--bind=127.0.0.1:0".into(),
        format!("--database-url={}", webhook_db.url),
        "--database-max-connections=5".into(),
        "--tokens=kafka-tls-write-token-0001".into(),
        "--read-tokens=kafka-tls-read-token-00001".into(),
        format!("--anomalies-topic={}", topics.anomalies),
        format!("--consumer-group={}", unique("webhook")),
        format!("--outbound-urls={}", receiver.url),
        format!("--outbound-hmac-secret={OUTBOUND_SECRET}"),
        "--outbound-retry-initial=100ms".into(),
        "--outbound-retry-max=400ms".into(),
    ];
    args.extend(kafka.iter().cloned());
    let config = vigil_webhook::Config::from_args(vigil_webhook::Args::parse_from(args)).unwrap();
    let app = vigil_webhook::Application::build(config).await.unwrap();
    let (port, stop) = (app.port(), CancellationToken::new());
    // The webhook's database lives as long as the task that uses it.
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let r = app.run(token).await;
        drop(webhook_db);
        r
    });
    let webhook = Running::new(port, stop, task);
    Services { producer, detector, sink, webhook }
}

fn critical_anomaly(id: &str) -> Anomaly {
    Anomaly {
        id: id.to_owned(),
        sequence: 0,
        rule: AnomalyRule::DeniedRate,
        dimension: AnomalyDimension::Merchant,
        dimension_value: "m-tls".into(),
        window_start: Some(1_795_000_000_000),
        window_end: Some(1_795_000_060_000),
        transaction_id: None,
        category: None,
        merchant_id: Some("m-tls".into()),
        observed: 0.62,
        observed_count: 62,
        observed_total: 100,
        baseline_mean: 0.08,
        baseline_stddev: 0.02,
        baseline_n: 120,
        scored_on: "rate".into(),
        score: 27.0,
        p_value: Some(1e-12),
        threshold: 4.0,
        severity: Severity::Critical,
        state: AnomalyState::Firing,
        message: "Merchant m-tls denied 62% of 100 transactions against a baseline of 8%.".into(),
        first_seen: 1_795_000_000_000,
        last_updated: 1_795_000_060_000,
        resolved_at: None,
    }
}

/// Transactions in through the producer's HTTP API, per-minute rows out of the sink (so the
/// producer produced, the detector consumed and produced, the sink consumed), an anomaly the test
/// produces reaching the webhook's receiver (the webhook consumed): all through `broker`.
async fn the_whole_pipeline_runs_through(broker: &TlsBroker, kafka: Vec<String>) {
    vigil_common::telemetry::init("kafka-tls");
    let cfg = kafka_config(&kafka);
    let topics = Topics::named(&unique("tls"));
    cfg.ensure_topics(&topics.specs(2))
        .await
        .unwrap_or_else(|e| panic!("cannot create topics over TLS: {e:#}\n{}", broker.logs()));
    let db = fresh_database().await;
    let receiver = Receiver::start().await;
    let s = start_services(&kafka, &topics, &db, &receiver).await;
    let http = reqwest::Client::new();
    for (name, svc) in
        [("producer", &s.producer), ("detector", &s.detector), ("sink", &s.sink), ("webhook", &s.webhook)]
    {
        let url = format!("{}/ready", svc.url());
        let ready = eventually(Duration::from_secs(90), || async {
            http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        let health = http.get(format!("{}/health", svc.url())).send().await.unwrap().text().await.unwrap();
        assert!(ready.is_some(), "{name} never became ready over TLS: {health}\n{}", broker.logs());
    }

    let base = Utc::now().duration_trunc(chrono::Duration::minutes(1)).unwrap() - chrono::Duration::minutes(5);
    for i in 0..12i64 {
        let body = json!({
            "occurred_at": (base + chrono::Duration::seconds(i * 5)).to_rfc3339(),
            "status": if i % 3 == 0 { "denied" } else { "approved" },
            "auth_code": if i % 3 == 0 { "05" } else { "00" },
            "amount_minor": 1000 + i,
            "currency": "EUR",
            "category": "food",
            "merchant_id": format!("m-{}", i % 2),
        });
        let r = http.post(format!("{}/ingest/transaction", s.producer.url())).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    let pool = db.pool.clone();
    let counted = eventually(Duration::from_secs(90), || async {
        let (n,): (Option<i64>,) =
            sqlx::query_as("SELECT sum(total)::bigint FROM v_tx_minute").fetch_one(&pool).await.ok()?;
        (n == Some(12)).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the 12 transactions never reached v_tx_minute through TLS\n{}", broker.logs());

    let producer: FutureProducer = cfg.producer_config(Duration::from_secs(10)).create().unwrap();
    let id = unique("anomaly-tls");
    let bytes = Codec::single_object().encode(&critical_anomaly(&id)).unwrap();
    producer
        .send(FutureRecord::to(&topics.anomalies).key(&id).payload(&bytes), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let forwarded = eventually(Duration::from_secs(60), || async {
        receiver.bodies.lock().unwrap().iter().any(|b| b.contains(&id)).then_some(())
    })
    .await;
    assert!(forwarded.is_some(), "the webhook never forwarded the anomaly it consumed over TLS");

    for svc in [s.producer, s.detector, s.sink] {
        svc.stop().await.unwrap();
    }
    s.webhook.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_produces_and_consumes_through_tls_verifying_the_brokers_certificate() {
    let pki = TestPki::generate();
    let broker = TlsBroker::start(&pki, TlsMode::Server, &[]);
    the_whole_pipeline_runs_through(&broker, kafka_flags(&broker, &pki.ca, &pki, None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_produces_and_consumes_through_mutual_tls() {
    let pki = TestPki::generate();
    let broker = TlsBroker::start(&pki, TlsMode::Mutual, &[]);
    the_whole_pipeline_runs_through(&broker, kafka_flags(&broker, &pki.ca, &pki, None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_authenticates_with_scram_sha_512_over_tls() {
    let pki = TestPki::generate();
    let broker = TlsBroker::start(&pki, TlsMode::Scram, &[("vigil", "scram-512-password-for-vigil", "scram512")]);
    let flags = kafka_flags(&broker, &pki.ca, &pki, Some(("SCRAM-SHA-512", "vigil", "scram-512-password-for-vigil")));
    the_whole_pipeline_runs_through(&broker, flags).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_authenticates_and_a_wrong_password_is_refused_naming_sasl() {
    let pki = TestPki::generate();
    let broker = TlsBroker::start(&pki, TlsMode::Scram, &[("vigil256", "scram-256-password", "scram256")]);
    let ok =
        kafka_config(&kafka_flags(&broker, &pki.ca, &pki, Some(("SCRAM-SHA-256", "vigil256", "scram-256-password"))));
    ok.check_reachable(Duration::from_secs(10)).unwrap_or_else(|e| panic!("SCRAM-SHA-256: {e}\n{}", broker.logs()));
    let wrong =
        kafka_config(&kafka_flags(&broker, &pki.ca, &pki, Some(("SCRAM-SHA-256", "vigil256", "not-the-password"))));
    let err = wrong.check_reachable(Duration::from_secs(5)).unwrap_err();
    assert!(err.contains("SASL authentication error"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    // nisshi offers only SCRAM: PLAIN is refused by the broker, by name (Confluent Cloud's PLAIN
    // is configured the same way and validated in common/src/kafka.rs).
    let plain = kafka_config(&kafka_flags(&broker, &pki.ca, &pki, Some(("PLAIN", "vigil256", "scram-256-password"))));
    let err = plain.check_reachable(Duration::from_secs(5)).unwrap_err();
    assert!(err.contains("Unsupported SASL mechanism"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_refused_and_the_service_says_why() {
    let (pki, other) = (TestPki::generate(), TestPki::generate());
    let broker = TlsBroker::start(&pki, TlsMode::Server, &[]);
    let flags = kafka_flags(&broker, &other.ca, &pki, None);
    let err = kafka_config(&flags).check_reachable(Duration::from_secs(5)).unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
    // The broker check behind the detector's, sink's and webhook's /health says the same.
    let dependency = vigil_common::http::Dependency::broker(&kafka_config(&flags), "any-topic");
    let err = (dependency.check)().await.unwrap_err();
    assert!(err.contains("broker unreachable") && err.contains("certificate verify failed"), "{err}");

    // The detector binary configured with the wrong CA: its log names the TLS failure and it
    // never becomes ready.
    let topics = Topics::named(&unique("tls-wrong-ca"));
    let port = vigil_testkit::free_port();
    let dir = std::env::temp_dir().join(unique("vigil-tls-wrong-ca"));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("detector.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(tools::service_binary("detector"))
        .arg(format!("--bind=127.0.0.1:{port}"))
        .args(without_brokers(topics.detector_flags()))
        .arg(format!("--consumer-group={}", unique("detector")))
        .args(&flags)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let named = eventually(Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        text.lines().find(|l| l.contains("certificate verify failed")).map(str::to_owned)
    })
    .await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let ready = http.get(format!("http://127.0.0.1:{port}/ready")).send().await.map(|r| r.status().as_u16()).ok();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let named = named.unwrap_or_else(|| panic!("the detector's log never named the TLS failure:\n{text}"));
    println!("The detector says: {named}");
    assert_ne!(ready, Some(200), "ready with a broker it cannot verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = TestPki::generate();
    let broker = TlsBroker::start(&pki, TlsMode::Mutual, &[]);
    let with_cert = kafka_config(&kafka_flags(&broker, &pki.ca, &pki, None));
    with_cert.check_reachable(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\n{}", broker.logs()));
    let without: Vec<String> = kafka_flags(&broker, &pki.ca, &pki, None)
        .into_iter()
        .filter(|f| !f.starts_with("--kafka-ssl-certificate-location") && !f.starts_with("--kafka-ssl-key-location"))
        .collect();
    let err = kafka_config(&without).check_reachable(Duration::from_secs(5)).unwrap_err();
    let log = broker.logs();
    assert!(log.contains("peer did not return a certificate") || log.contains("certificate required"), "{err}\n{log}");
}

/// The detector binary, as an operator runs it, with the SASL password in its environment at
/// RUST_LOG=debug against the SCRAM broker: ready, and the password in no log line, not in
/// /metrics, not in any service's `--help` or `--check-config` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sasl_password_appears_in_no_log_line_metrics_or_check_config() {
    const PASSWORD: &str = "Sasl-Password-That-Must-Never-Print-7e1";
    let pki = TestPki::generate();
    let broker = TlsBroker::start(&pki, TlsMode::Scram, &[("vigil", PASSWORD, "scram512")]);
    let topics = Topics::named(&unique("tls-secret"));
    let kafka = kafka_flags(&broker, &pki.ca, &pki, Some(("SCRAM-SHA-512", "vigil", PASSWORD)));
    kafka_config(&kafka).ensure_topics(&topics.specs(1)).await.unwrap();
    // Everything but the password as flags; the password only from the environment.
    let flags: Vec<String> = kafka.iter().filter(|f| !f.starts_with("--kafka-sasl-password")).cloned().collect();
    let port = vigil_testkit::free_port();
    let dir = std::env::temp_dir().join(unique("vigil-tls-secret"));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("detector.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(tools::service_binary("detector"))
        .arg(format!("--bind=127.0.0.1:{port}"))
        .args(without_brokers(topics.detector_flags()))
        .arg(format!("--consumer-group={}", unique("detector")))
        .args(&flags)
        .env("KAFKA_SASL_PASSWORD", PASSWORD)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(60), || async {
        http.get(format!("{base}/ready")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let metrics = http.get(format!("{base}/metrics")).send().await.map(|r| r.status()).ok();
    let metrics_text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let health = http.get(format!("{base}/health")).send().await.unwrap().text().await.unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let mut logged = String::new();
    std::fs::File::open(&log_path).unwrap().read_to_string(&mut logged).unwrap();
    assert!(ready.is_some(), "the detector never became ready with SCRAM over TLS: {health}\n{logged}");
    assert_eq!(metrics, Some(reqwest::StatusCode::OK));
    assert!(logged.contains("DEBUG") && logged.contains("Detector running"), "nothing logged at debug:\n{logged}");

    let mut outputs =
        vec![("detector log".to_owned(), logged), ("/metrics".into(), metrics_text), ("/health".into(), health)];
    for bin in ["producer", "detector", "sink", "webhook"] {
        for arg in ["--help", "--check-config"] {
            let out = Command::new(tools::service_binary(bin))
                .arg(arg)
                .envs([
                    ("KAFKA_BROKERS", broker.brokers().as_str()),
                    ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                    ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                    ("KAFKA_SASL_USERNAME", "vigil"),
                    ("KAFKA_SASL_PASSWORD", PASSWORD),
                    ("KAFKA_SSL_KEY_PASSWORD", PASSWORD),
                    ("KAFKA_SSL_CA_LOCATION", pki.ca.to_str().unwrap()),
                ])
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(text.contains("KAFKA_SASL_PASSWORD") || arg == "--check-config", "{bin} {arg}: {text}");
            outputs.push((format!("{bin} {arg}"), text));
        }
    }
    let leaks: Vec<String> = outputs
        .iter()
        .flat_map(|(what, text)| {
            text.lines().filter(|l| l.contains(PASSWORD)).map(move |l| format!("{what}: {l}")).collect::<Vec<_>>()
        })
        .collect();
    assert!(leaks.is_empty(), "the SASL password was printed:\n{}", leaks.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
