//! `transaction_records` and `transaction_verdicts`: every transaction stored once in its day's
//! partition, whatever the redelivery; a verdict kept as the detector first gave it; retention
//! dropping whole days, and not storing again what it dropped.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod support;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use vigil_schemas::{Codec, Transaction, TransactionStatus, TransactionVerdict, VerdictDecision};

const DAY: i64 = 86_400_000;

fn tx(i: i64, at: i64) -> Transaction {
    Transaction {
        transaction_id: format!("00000000-0000-4000-8000-{i:012}"),
        occurred_at: at,
        status: if i % 5 == 0 { TransactionStatus::Denied } else { TransactionStatus::Approved },
        auth_code: if i % 5 == 0 { "05".into() } else { "00".into() },
        amount_minor: 1000 + i,
        currency: "EUR".into(),
        category: "food".into(),
        merchant_id: format!("m-{}", i % 3),
        received_at: at + 10,
    }
}

fn verdict(t: &Transaction, decision: VerdictDecision, ids: &[&str]) -> TransactionVerdict {
    TransactionVerdict {
        transaction_id: t.transaction_id.clone(),
        reply_to: "p-1".into(),
        occurred_at: t.occurred_at,
        decision,
        anomaly: !ids.is_empty(),
        severity: (!ids.is_empty()).then(|| "high".into()),
        anomaly_ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

async fn send_on(topic: &str, key: &str, payload: Vec<u8>) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    producer.send(FutureRecord::to(topic).key(key).payload(&payload), Duration::from_secs(10)).await.unwrap();
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_land_once_in_their_days_partition_and_retention_drops_whole_days() {
    let topics = Topics::fresh().await;
    let own = vigil_testkit::fresh_topics(&[("transactions", 3), ("transaction-verdicts", 3)]).await;
    let (tx_topic, verdict_topic) = (own[0].clone(), own[1].clone());
    let db = vigil_testkit::fresh_database().await;
    let codec = Codec::single_object();

    // 20 transactions on T0's day and 10 on the next, every record sent twice.
    let txs: Vec<Transaction> =
        (0..30).map(|i| tx(i, if i < 20 { T0 + i * MINUTE } else { T0 + DAY + i * MINUTE })).collect();
    for t in txs.iter().chain(txs.iter()) {
        send_on(&tx_topic, &t.category, codec.encode(t).unwrap()).await;
    }
    // Verdicts: a counted one sent after a duplicate's answer for the same id, and an anomalous one.
    let dup = verdict(&txs[1], VerdictDecision::Duplicate, &[]);
    let first = verdict(&txs[1], VerdictDecision::Counted, &[]);
    let anomalous =
        verdict(&txs[2], VerdictDecision::Counted, &["amount_zscore:merchant:m-2:x", "amount_zscore:category:food:x"]);
    for v in [&dup, &first, &anomalous, &dup] {
        send_on(&verdict_topic, &v.transaction_id, codec.encode(v).unwrap()).await;
    }

    let flags = [
        format!("--transactions-topic={tx_topic}"),
        format!("--verdicts-topic={verdict_topic}"),
        "--retention-transactions=0".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &flags).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&db.pool, "SELECT count(*) FROM transaction_records").await == 30
            && count(&db.pool, "SELECT count(*) FROM transaction_verdicts").await == 2)
            .then_some(())
    })
    .await
    .expect("30 transactions and 2 verdicts stored");
    // Nothing more arrives from the repeats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM transaction_records").await, 30);

    let partitions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, (SELECT count(*) FROM transaction_records r WHERE r.tableoid = c.oid)
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'transaction_records'::regclass ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        partitions,
        vec![("transaction_records_p20251214".to_string(), 20), ("transaction_records_p20251215".to_string(), 10)]
    );
    let row: (String, String, String, i64, String, String, String) = sqlx::query_as(
        "SELECT status, auth_code, currency, amount_minor, category, merchant_id,
                to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
         FROM transaction_records WHERE transaction_id = $1",
    )
    .bind(&txs[5].transaction_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        ("denied".into(), "05".into(), "EUR".into(), 1005, "food".into(), "m-2".into(), "2025-12-14 12:05:00".into())
    );

    let verdicts: Vec<(String, String, bool, Option<String>, Vec<String>)> = sqlx::query_as(
        "SELECT transaction_id, decision, anomaly, severity, anomaly_ids FROM transaction_verdicts ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        verdicts,
        vec![
            (txs[1].transaction_id.clone(), "counted".into(), false, None, vec![]),
            (txs[2].transaction_id.clone(), "counted".into(), true, Some("high".into()), anomalous.anomaly_ids.clone()),
        ],
        "the first verdict stands, whatever duplicate's answer comes before or after it"
    );

    // Retention of one day, run on the second day's evening: T0's day goes, whole.
    let now = Utc.timestamp_millis_opt(T0 + 2 * DAY - 3_600_000).unwrap();
    let report = vigil_sink::transactions::run_retention(&db.pool, Duration::from_secs(86_400), now).await.unwrap();
    assert_eq!(report, vec![("transaction_records", 20), ("transaction_verdicts", 2)]);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM transaction_records").await, 10);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'transaction_records'::regclass").await,
        1
    );
    sink.stop().await;

    // A sink whose retention (30 days, by the wall clock) has passed T0's days stores nothing of
    // them again, and stores a transaction of today.
    let today = tx(99, Utc::now().timestamp_millis());
    for t in txs.iter().take(3).chain([&today]) {
        send_on(&tx_topic, &t.category, codec.encode(t).unwrap()).await;
    }
    let flags = [format!("--transactions-topic={tx_topic}"), format!("--verdicts-topic={verdict_topic}")];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &flags).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&db.pool, "SELECT count(*) FROM transaction_records").await == 1).then_some(())
    })
    .await
    .expect("only today's transaction is stored: the sink's first retention run dropped the day kept above");
    let id: String =
        sqlx::query_scalar("SELECT transaction_id FROM transaction_records").fetch_one(&db.pool).await.unwrap();
    assert_eq!(id, today.transaction_id);
    sink.stop().await;
}
