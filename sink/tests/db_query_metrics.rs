//! `vigil_sink_db_query_duration_seconds{query}`: every query the sink runs is timed under one of
//! a fixed set of names, each exported from start-up, and no other label value ever appears.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use vigil_schemas::{Codec, Decoded, Transaction, TransactionStatus, TransactionVerdict, VerdictDecision};
use vigil_sink::metrics::{DbQuery, SinkMetrics};

/// `query` label -> observation count of `vigil_sink_db_query_duration_seconds`.
fn counts(exposition: &str) -> BTreeMap<String, u64> {
    let prefix = "vigil_sink_db_query_duration_seconds_count{query=\"";
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|rest| {
            let (label, value) = rest.split_once("\"} ").unwrap_or_else(|| panic!("unexpected line: {rest}"));
            (label.to_owned(), value.trim().parse().unwrap())
        })
        .collect()
}

/// Every name, sorted as the exposition's labels are compared.
fn all_names() -> Vec<String> {
    let mut names: Vec<String> = DbQuery::ALL.iter().map(|q| q.as_str().to_owned()).collect();
    names.sort();
    names
}

async fn send_on(topic: &str, key: &str, payload: Vec<u8>) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    producer.send(FutureRecord::to(topic).key(key).payload(&payload), Duration::from_secs(10)).await.unwrap();
}

async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap()
}

fn tx(i: i64, at: i64) -> Transaction {
    Transaction {
        transaction_id: format!("00000000-0000-4000-8000-{i:012}"),
        occurred_at: at,
        status: TransactionStatus::Approved,
        auth_code: "00".into(),
        amount_minor: 1000 + i,
        currency: "EUR".into(),
        category: "food".into(),
        merchant_id: format!("m-{}", i % 3),
        received_at: at + 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_times_each_of_its_queries_under_its_fixed_name_and_no_other() {
    let topics = Topics::fresh().await;
    let own = vigil_testkit::fresh_topics(&[("transactions", 1), ("transaction-verdicts", 1)]).await;
    let db = vigil_testkit::fresh_database().await;
    let flags = [format!("--transactions-topic={}", own[0]), format!("--verdicts-topic={}", own[1])];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &flags).await;

    // From start-up, every name is exported and nothing else.
    let before = counts(&scrape(sink.port).await);
    assert_eq!(before.keys().cloned().collect::<Vec<_>>(), all_names(), "every name from start-up");

    // Minutes, merchant minutes, anomalies and late bookings; today's transactions (transaction
    // retention, 30 days by default, runs at start and would drop older days) and a verdict.
    send(&topics, &messages(5, 1)).await;
    let codec = Codec::single_object();
    let now = Utc::now().timestamp_millis();
    // All on today (UTC), so on one partition.
    let today = now - now.rem_euclid(86_400_000);
    let txs: Vec<Transaction> = (0..4).map(|i| tx(i, (now - i * 1000).max(today))).collect();
    for t in &txs {
        send_on(&own[0], &t.category, codec.encode(t).unwrap()).await;
    }
    let v = TransactionVerdict {
        transaction_id: txs[0].transaction_id.clone(),
        reply_to: "p-1".into(),
        occurred_at: txs[0].occurred_at,
        decision: VerdictDecision::Counted,
        anomaly: false,
        severity: None,
        anomaly_ids: vec![],
    };
    send_on(&own[1], &v.transaction_id, codec.encode(&v).unwrap()).await;
    wait_written(&db.pool, 5, 1).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&db.pool, "SELECT count(*) FROM transaction_records").await == 4
            && count(&db.pool, "SELECT count(*) FROM transaction_verdicts").await == 1)
            .then_some(())
    })
    .await
    .expect("4 transactions and a verdict stored");

    let after = counts(&scrape(sink.port).await);
    assert_eq!(after.keys().cloned().collect::<Vec<_>>(), all_names(), "only the fixed names");
    let written = [
        "partition_check",
        "partition_create",
        "batch_begin",
        "transaction_records_insert",
        "transaction_verdicts_upsert",
        "statuses_upsert",
        "auth_codes_upsert",
        "categories_upsert",
        "volume_minutes_upsert",
        "late_upsert",
        "merchant_minutes_upsert",
        "anomalies_upsert",
        "anomalies_first_state",
        "batch_commit",
        // Transaction retention's run at start lists the day partitions.
        "retention_partitions_list",
    ];
    for name in written {
        assert!(after[name] >= 1, "{name} was never timed: {after:?}");
    }
    // Every batch that began committed (no failure here), and each committed batch wrote
    // something: as many commits as begins.
    assert_eq!(after["batch_begin"], after["batch_commit"], "{after:?}");
    // One day, one partition: created once, checked by every batch holding transactions.
    assert_eq!(after["partition_create"], 1, "{after:?}");
    assert!(after["partition_check"] >= after["transaction_records_insert"], "{after:?}");
    // Nothing ran that this test did not cause: minute and anomaly retention are off, no day
    // was old enough to drop.
    for name in ["retention_minutes_delete", "retention_anomalies_delete", "retention_partition_drop"] {
        assert_eq!(after[name], 0, "{name}: {after:?}");
    }
    sink.stop().await;
}

#[tokio::test]
async fn retention_times_its_deletes_under_their_own_names() {
    let db = vigil_testkit::fresh_database().await;
    let registry = vigil_common::metrics::Metrics::new("sink");
    let metrics = SinkMetrics::new(&registry);
    // Minutes and a resolved anomaly of T0 (2025-12-14), a year before the ages below.
    let rows: Vec<vigil_sink::writer::Row> = messages(3, 1)
        .into_iter()
        .filter_map(|m| match m {
            Decoded::MinuteAggregate(a) => Some(vigil_sink::writer::Row::Aggregate(a)),
            Decoded::Anomaly(a) => Some(vigil_sink::writer::Row::Anomaly(a)),
            _ => None,
        })
        .collect();
    vigil_sink::writer::write_batch_timed(&db.pool, &rows, None, Some(&metrics.db)).await.unwrap();
    let report = vigil_sink::retention::run_once(
        &db.pool,
        Some(Duration::from_secs(30 * 86_400)),
        Some(Duration::from_secs(30 * 86_400)),
        &metrics,
    )
    .await
    .unwrap();
    assert!(report.iter().any(|(t, n)| *t == "anomalies" && *n == 1), "{report:?}");
    let c = counts(&registry.render());
    // Six minute tables, each one batch short of 10 000 rows; anomalies: resolved ones, then
    // per-transaction ones.
    assert_eq!(c["retention_minutes_delete"], 6, "{c:?}");
    assert_eq!(c["retention_anomalies_delete"], 2, "{c:?}");
    assert_eq!(c["batch_begin"], 1, "{c:?}");
    assert_eq!(c["transaction_records_insert"], 0, "a batch without transactions runs no such query: {c:?}");
    assert_eq!(c.keys().cloned().collect::<Vec<_>>(), all_names());
}
