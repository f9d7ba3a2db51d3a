//! Clients we did not write: a Python consumer (confluent-kafka + fastavro) decodes every message
//! type on every topic of a run using only the `.avsc` files, and reads the detector's and the
//! sink's committed group offsets, which after the run equal the log ends; and, with the services
//! configured as in compose (every one with SCHEMA_REGISTRY_URL), decodes the registry-framed
//! records using only the registry.
//!
//! The registry of the second test is a stand-in (e2e/tests/python/registry_standin.py): neither
//! Redpanda's nor Confluent's registry can run on the development machines. The services and the
//! Python client talk to it over HTTP exactly as to a real one (register under a subject, set a
//! subject's compatibility, fetch a schema by id, list subjects); it does not itself refuse
//! incompatible versions.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, DurationRound, Utc};
use serde_json::{json, Value};
use vigil_e2e::Pipeline;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> String {
    std::env::var("VIGIL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "VIGIL_TEST_PYTHON is not set: run the tests with `make test`, which installs fastavro and confluent-kafka"
        )
    })
}

fn inspect(topics: &[&str], groups: &[(String, &str)]) -> Value {
    inspect_with(&["--schemas".to_owned(), root().join("schemas").to_string_lossy().into_owned()], topics, groups)
}

/// The Python client with `source` (`--schemas DIR` or `--registry URL`) as its only schemas.
fn inspect_with(source: &[String], topics: &[&str], groups: &[(String, &str)]) -> Value {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(root().join("e2e/tests/python/inspect_pipeline.py"))
        .args(["--brokers", &vigil_testkit::brokers()])
        .args(source);
    for t in topics {
        cmd.args(["--topic", t]);
    }
    for (g, t) in groups {
        cmd.args(["--group", &format!("{g}={t}")]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 40 minutes of 200 transactions (a denied spike, an amount outlier), until every minute is
/// stored and every rate anomaly resolved; returns how many were sent.
async fn send_the_run_and_wait(http: &reqwest::Client, producer_url: &str, pool: &sqlx::PgPool) -> usize {
    let start = Utc::now().duration_trunc(ChronoDuration::minutes(1)).unwrap() - ChronoDuration::minutes(45);
    let mut sent = 0;
    for m in 0..40i64 {
        let denied = if (32..34).contains(&m) { 70 } else { 8 + (m % 3) as usize };
        let batch: Vec<Value> = (0..200usize)
            .map(|i| {
                let amount = if m == 36 && i == 0 { 5_000_000 } else { 1000 + (i % 37) as i64 * 11 };
                json!({
                    "occurred_at": (start + ChronoDuration::minutes(m) + ChronoDuration::milliseconds(i as i64 * 290)).to_rfc3339(),
                    "status": if i < denied { "denied" } else { "approved" },
                    "auth_code": if i < denied { "05" } else { "00" },
                    "amount_minor": amount,
                    "currency": "EUR",
                    "category": "food",
                    "merchant_id": "m-1",
                })
            })
            .collect();
        let r = http.post(format!("{producer_url}/ingest/transactions")).json(&batch).send().await.unwrap();
        assert_eq!(r.status(), 202);
        sent += batch.len();
    }
    // Every minute stored and every rate anomaly resolved: the pipeline is done.
    let pool = pool.clone();
    vigil_testkit::eventually(Duration::from_secs(90), || async {
        let total: i64 = sqlx::query_scalar("SELECT coalesce(sum(total), 0)::bigint FROM v_tx_minute")
            .fetch_one(&pool)
            .await
            .ok()?;
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM anomalies WHERE state <> 'resolved' AND window_start IS NOT NULL")
                .fetch_one(&pool)
                .await
                .ok()?;
        (total == sent as i64 && open == 0).then_some(())
    })
    .await
    .expect("the run completed");
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_client_decodes_every_message_and_every_committed_offset_reaches_the_log_end() {
    let p = Pipeline::start(6).await;
    let sent = send_the_run_and_wait(&p.http, &p.producer.url(), &p.db.pool).await;
    // Offsets are committed every 200 ms after the outputs are acknowledged; give the last
    // commits a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let t = &p.topics;
    let detector_group = p.detector_group.clone();
    let sink_group = p.sink_group.clone();
    let topics = [t.transactions.as_str(), t.partials.as_str(), t.minutes.as_str(), t.anomalies.as_str()];
    let groups = [
        (detector_group.clone(), t.transactions.as_str()),
        (format!("{detector_group}-merge"), t.partials.as_str()),
        (sink_group.clone(), t.minutes.as_str()),
        (sink_group.clone(), t.anomalies.as_str()),
    ];
    let report = tokio::task::block_in_place(|| inspect(&topics, &groups));

    let count = |topic: &str, record: &str| report["topics"][topic][record].as_u64().unwrap_or(0);
    assert_eq!(count(&t.transactions, "Transaction"), sent as u64);
    assert!(count(&t.partials, "MinutePartial") >= 40, "{report}");
    assert_eq!(count(&t.minutes, "MinuteAggregate"), 40);
    assert!(
        count(&t.anomalies, "Anomaly") >= 3,
        "the spike fires, updates and resolves, and the outlier fires: {report}"
    );
    for (group, topic) in &groups {
        let rows = report["groups"][group][*topic].as_array().unwrap();
        assert!(!rows.is_empty());
        for row in rows {
            let (partition, committed, end) =
                (row[0].as_i64().unwrap(), row[1].as_i64().unwrap(), row[2].as_i64().unwrap());
            // A partition that never held a message has nothing to commit.
            if end > 0 {
                assert_eq!(committed, end, "{group} on {topic}[{partition}]: committed {committed}, log end {end}");
            }
        }
    }
    p.stop().await;
}

/// The registry stand-in, stopped when dropped.
struct Registry {
    child: std::process::Child,
    url: String,
}

impl Registry {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(python())
            .arg(root().join("e2e/tests/python/registry_standin.py"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Registry { child, url: format!("http://127.0.0.1:{}", line.trim()) }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_registry_as_in_compose_a_python_client_decodes_every_record_using_only_the_registry() {
    vigil_common::telemetry::init("e2e");
    let registry = Registry::start();
    let flag = format!("--schema-registry-url={}", registry.url);
    let t = vigil_e2e::Topics::fresh(6).await;
    let db = vigil_testkit::fresh_database().await;
    let (detector_group, sink_group) = (vigil_testkit::unique("detector"), vigil_testkit::unique("sink"));
    let producer = vigil_e2e::start_producer_on(&t, &db.url, &[&flag]).await;
    let detector = vigil_e2e::start_detector(&t, &detector_group, "3s", &[&flag]).await;
    let sink = vigil_e2e::start_sink(&t, &db, &sink_group, &[&flag]).await;
    let http = reqwest::Client::new();
    for svc in [&producer, &detector, &sink] {
        let url = format!("{}/ready", svc.url());
        let ready = vigil_testkit::eventually(Duration::from_secs(60), || async {
            http.get(&url).send().await.ok()?.status().is_success().then_some(())
        })
        .await;
        assert!(ready.is_some(), "{url} never became ready");
    }
    let sent = send_the_run_and_wait(&http, &producer.url(), &db.pool).await;

    let topics = [t.transactions.as_str(), t.partials.as_str(), t.minutes.as_str(), t.anomalies.as_str()];
    let source = ["--registry".to_owned(), registry.url.clone()];
    let report = tokio::task::block_in_place(|| inspect_with(&source, &topics, &[]));

    // Every record decoded with the schema fetched by its id: the same counts as the run
    // without a registry.
    let count = |topic: &str, record: &str| report["topics"][topic][record].as_u64().unwrap_or(0);
    assert_eq!(count(&t.transactions, "Transaction"), sent as u64, "{report}");
    assert!(count(&t.partials, "MinutePartial") >= 40, "{report}");
    assert_eq!(count(&t.minutes, "MinuteAggregate"), 40, "{report}");
    assert!(count(&t.anomalies, "Anomaly") >= 3, "{report}");
    // Each id is found under the subject the topic gives it: TopicNameStrategy, and on the
    // minutes topic (three record types) TopicRecordNameStrategy.
    let subjects = |topic: &str| -> Vec<String> {
        report["subjects"][topic].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(subjects(&t.transactions), [format!("{}-value", t.transactions)], "{report}");
    assert_eq!(subjects(&t.partials), [format!("{}-value", t.partials)], "{report}");
    assert_eq!(subjects(&t.anomalies), [format!("{}-value", t.anomalies)], "{report}");
    let minutes = subjects(&t.minutes);
    assert!(minutes.contains(&format!("{}-io.vigil.v1.MinuteAggregate", t.minutes)), "{report}");
    for s in &minutes {
        let record = s.strip_prefix(&format!("{}-", t.minutes)).unwrap_or("");
        assert!(
            ["io.vigil.v1.MinuteAggregate", "io.vigil.v1.LateEvents", "io.vigil.v1.MerchantMinute"].contains(&record),
            "{s}"
        );
    }
    // Every subject registered (the minutes topic's three, the verdicts topic's too) is BACKWARD.
    let compat = report["compatibility"].as_object().unwrap();
    let mut registered: Vec<&str> = compat.keys().map(String::as_str).collect();
    registered.sort();
    let mut expected = vec![
        format!("{}-value", t.transactions),
        format!("{}-value", t.partials),
        format!("{}-io.vigil.v1.MinuteAggregate", t.minutes),
        format!("{}-io.vigil.v1.LateEvents", t.minutes),
        format!("{}-io.vigil.v1.MerchantMinute", t.minutes),
        format!("{}-value", t.anomalies),
        format!("{}-value", t.verdicts),
    ];
    expected.sort();
    assert_eq!(registered, expected, "{report}");
    for (subject, level) in compat {
        assert_eq!(level, "BACKWARD", "{subject}");
    }

    producer.stop().await.unwrap();
    detector.stop().await.unwrap();
    sink.stop().await.unwrap();
}
