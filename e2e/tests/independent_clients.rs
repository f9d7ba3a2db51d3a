//! Clients we did not write: a Python consumer (confluent-kafka + fastavro) decodes every message
//! type on every topic of a run using only the `.avsc` files, and reads the detector's and the
//! sink's committed group offsets, which after the run equal the log ends.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, DurationRound, Utc};
use serde_json::{json, Value};
use vigil_e2e::Pipeline;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn inspect(topics: &[&str], groups: &[(String, &str)]) -> Value {
    let python = std::env::var("VIGIL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "VIGIL_TEST_PYTHON is not set: run the tests with `make test`, which installs fastavro and confluent-kafka"
        )
    });
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root().join("e2e/tests/python/inspect_pipeline.py"))
        .args(["--brokers", &vigil_testkit::brokers()])
        .arg("--schemas")
        .arg(root().join("schemas"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_client_decodes_every_message_and_every_committed_offset_reaches_the_log_end() {
    let p = Pipeline::start(6).await;
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
        let r = p.http.post(format!("{}/ingest/transactions", p.producer.url())).json(&batch).send().await.unwrap();
        assert_eq!(r.status(), 202);
        sent += batch.len();
    }
    // Every minute stored and every rate anomaly resolved: the pipeline is done.
    let pool = p.db.pool.clone();
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
