//! Sink test harness: fresh topics, messages written straight to them, a sink in-process, and
//! the tables read back as comparable snapshots.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_schemas::*;

pub const T0: i64 = 1_765_713_600_000;
pub const MINUTE: i64 = 60_000;

pub struct Topics {
    pub minutes: String,
    pub anomalies: String,
    pub dead_letter: String,
}

impl Topics {
    pub async fn fresh() -> Topics {
        let n = vigil_testkit::fresh_topics(&[("tx-minute", 3), ("anomalies", 3), ("dead-letter", 1)]).await;
        Topics { minutes: n[0].clone(), anomalies: n[1].clone(), dead_letter: n[2].clone() }
    }
}

pub struct Sink {
    pub port: u16,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Sink {
    pub async fn start(topics: &Topics, database_url: &str, group: &str, extra: &[&str]) -> Sink {
        let mut args = vec![
            "sink".to_string(),
            "--bind=127.0.0.1:0".into(),
            format!("--database-url={database_url}"),
            format!("--kafka-brokers={}", vigil_testkit::brokers()),
            format!("--minutes-topic={}", topics.minutes),
            format!("--anomalies-topic={}", topics.anomalies),
            format!("--dead-letter-topic={}", topics.dead_letter),
            format!("--consumer-group={group}"),
            "--linger=50ms".into(),
            "--max-backoff=500ms".into(),
            // The fixtures' minutes are at a fixed date (T0, 2025-12-14): the default retention
            // (90 days, first run at start) would delete what an earlier sink of the test wrote.
            "--retention-minutes=0".into(),
            "--retention-anomalies=0".into(),
        ];
        // Transactions are stored only by the tests that give their topics (transactions.rs).
        if !extra.iter().any(|a| a.starts_with("--transactions-topic")) {
            args.push("--store-transactions=false".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = vigil_sink::Config::from_args(&vigil_sink::Args::parse_from(args)).unwrap();
        let app = vigil_sink::Application::build(config).await.unwrap();
        let port = app.port();
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone()));
        Sink { port, stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn aggregate(m: i64) -> MinuteAggregate {
    let denied = 3 + m % 5;
    MinuteAggregate {
        minute_start: T0 + m * MINUTE,
        total: 100,
        approved: 100 - denied - 2,
        denied,
        failed: 1,
        reversed: 1,
        auth_codes: BTreeMap::from([("00".into(), 100 - denied - 1), ("05".into(), denied), ("91".into(), 1)]),
        categories: vec![
            CategoryMinute {
                category: "food".into(),
                currency: "EUR".into(),
                count: 60,
                amount_sum: 60_000 + m,
                amount_min: 10,
                amount_max: 9000,
            },
            CategoryMinute {
                category: "travel".into(),
                currency: "EUR".into(),
                count: 40,
                amount_sum: 90_000,
                amount_min: 500,
                amount_max: 12000,
            },
        ],
        source_partitions: 2,
        // The global volume baseline warms up over the first minutes.
        expected_total: (m >= WARMUP_MINUTES).then_some(100.0 + 0.5 * m as f64),
        expected_low: (m >= WARMUP_MINUTES).then_some(70.0 + 0.5 * m as f64),
        expected_high: (m >= WARMUP_MINUTES).then_some(130.0 + 0.5 * m as f64),
    }
}

/// Minutes without a volume expectation at the start of [`messages`].
pub const WARMUP_MINUTES: i64 = 3;

/// A final minute without any transaction, as the detector closes it: every count 0, no auth
/// code or category, no contributing partition, and the baseline's expectation all the same.
pub fn empty_aggregate(m: i64) -> MinuteAggregate {
    MinuteAggregate {
        minute_start: T0 + m * MINUTE,
        total: 0,
        approved: 0,
        denied: 0,
        failed: 0,
        reversed: 0,
        auth_codes: BTreeMap::new(),
        categories: Vec::new(),
        source_partitions: 0,
        expected_total: Some(100.0),
        expected_low: Some(70.0),
        expected_high: Some(130.0),
    }
}

/// Merchant `k`'s counts in `category` for minute `m`, as stage 1 sends them.
pub fn merchant_minute(m: i64, k: i64, category: &str) -> MerchantMinute {
    let total = 20 + k + m % 7;
    let (denied, failed, reversed) = (1 + k % 3, m % 2, 1);
    MerchantMinute {
        minute_start: T0 + m * MINUTE,
        category: category.into(),
        merchant_id: format!("m-{k:03}"),
        total,
        approved: total - denied - failed - reversed,
        denied,
        failed,
        reversed,
    }
}

/// Per minute: three merchants in food, the first also in travel.
pub const MERCHANT_ROWS_PER_MINUTE: i64 = 4;

pub fn anomaly(n: i64, sequence: i64, state: AnomalyState) -> Anomaly {
    let start = T0 + n * MINUTE;
    Anomaly {
        id: format!("denied_rate:global:all:{n}"),
        sequence,
        rule: AnomalyRule::DeniedRate,
        dimension: AnomalyDimension::Global,
        dimension_value: "all".into(),
        window_start: Some(start + sequence * MINUTE),
        window_end: Some(start + (sequence + 1) * MINUTE),
        transaction_id: None,
        category: None,
        merchant_id: None,
        observed: 0.3,
        observed_count: 30 + sequence,
        observed_total: 100,
        baseline_mean: 0.05,
        baseline_stddev: 0.02,
        baseline_n: 30,
        scored_on: "rate".into(),
        score: 12.5,
        p_value: Some(1e-12),
        threshold: 4.0,
        severity: Severity::High,
        state,
        message: format!("state {sequence}"),
        first_seen: start,
        last_updated: start + (sequence + 1) * MINUTE,
        resolved_at: (state == AnomalyState::Resolved).then_some(start + (sequence + 1) * MINUTE),
    }
}

/// What the detector would send for `minutes` minutes and `incidents` anomalies (each firing,
/// two updates, resolved), late bookings, and the watched merchants' minutes
/// ([`MERCHANT_ROWS_PER_MINUTE`] a minute).
pub fn messages(minutes: i64, incidents: i64) -> Vec<Decoded> {
    let mut out: Vec<Decoded> = (0..minutes).map(|m| Decoded::MinuteAggregate(aggregate(m))).collect();
    for m in 0..minutes {
        for k in 0..3 {
            out.push(Decoded::MerchantMinute(merchant_minute(m, k, "food")));
        }
        out.push(Decoded::MerchantMinute(merchant_minute(m, 0, "travel")));
    }
    for n in 0..incidents {
        out.push(Decoded::Anomaly(anomaly(n * 10, 0, AnomalyState::Firing)));
        out.push(Decoded::Anomaly(anomaly(n * 10, 1, AnomalyState::Updated)));
        out.push(Decoded::Anomaly(anomaly(n * 10, 2, AnomalyState::Updated)));
        out.push(Decoded::Anomaly(anomaly(n * 10, 3, AnomalyState::Resolved)));
    }
    for c in 1..=3 {
        out.push(Decoded::LateEvents(LateEvents { minute_start: T0, source: "p1".into(), late_count: c }));
    }
    out
}

/// Sends messages in the given order, each to its topic, keyed as the detector keys them.
pub async fn send(topics: &Topics, msgs: &[Decoded]) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    let codec = Codec::single_object();
    for m in msgs {
        let (topic, key, payload) = match m {
            Decoded::MinuteAggregate(a) => (&topics.minutes, a.minute_start.to_string(), codec.encode(a).unwrap()),
            Decoded::LateEvents(l) => {
                (&topics.minutes, format!("late:{}:{}", l.minute_start, l.source), codec.encode(l).unwrap())
            }
            Decoded::MerchantMinute(r) => (
                &topics.minutes,
                format!("merchant:{}:{}:{}", r.minute_start, r.merchant_id, r.category),
                codec.encode(r).unwrap(),
            ),
            Decoded::Anomaly(a) => (&topics.anomalies, a.id.clone(), codec.encode(a).unwrap()),
            other => panic!("not a sink input: {other:?}"),
        };
        producer.send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(10)).await.unwrap();
    }
}

pub async fn send_raw(topic: &str, payload: &[u8]) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    producer.send(FutureRecord::<str, [u8]>::to(topic).payload(payload), Duration::from_secs(10)).await.unwrap();
}

/// Every row of every table the sink writes, as text (write timestamps left out).
pub async fn snapshot(pool: &PgPool) -> Vec<String> {
    let queries = [
        "SELECT format('%s %s %s', minute, status, count) FROM transactions ORDER BY 1",
        "SELECT format('%s %s %s', minute, auth_code, count) FROM transactions_auth_codes ORDER BY 1",
        "SELECT format('%s %s %s %s %s %s %s', minute, category, currency, count, amount_sum, amount_min, amount_max) FROM transactions_categories ORDER BY 1",
        "SELECT format('%s %s %s', minute, source, late_count) FROM transactions_late ORDER BY 1",
        "SELECT format('%s %s %s %s %s %s %s %s', minute, merchant_id, category, total, approved, denied, failed, reversed) FROM merchant_minutes ORDER BY 1",
        "SELECT format('%s %s %s %s %s', minute, total, expected, expected_low, expected_high) FROM volume_minutes ORDER BY 1",
        "SELECT format('%s %s %s %s %s %s %s %s %s %s', id, sequence, state, window_start, observed_count, first_seen, last_updated, resolved_at, first_sequence, first_message) FROM anomalies ORDER BY 1",
    ];
    let mut out = Vec::new();
    for q in queries {
        let rows: Vec<(String,)> = sqlx::query_as(q).fetch_all(pool).await.unwrap();
        out.extend(rows.into_iter().map(|r| r.0));
    }
    out
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1)
}

/// Waits until the tables hold `minutes` minutes (their statuses, volume rows and merchant
/// rows) and `incidents` resolved anomalies.
pub async fn wait_written(pool: &PgPool, minutes: i64, incidents: i64) {
    let ok = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let m = count(pool, "SELECT count(DISTINCT minute) FROM transactions").await;
        let r = count(pool, "SELECT count(*) FROM anomalies WHERE state = 'resolved'").await;
        let l = count(pool, "SELECT coalesce(max(late_count), 0) FROM transactions_late").await;
        let mm = count(pool, "SELECT count(*) FROM merchant_minutes").await;
        let v = count(pool, "SELECT count(*) FROM volume_minutes").await;
        (m == minutes && v == minutes && r == incidents && l == 3 && mm == minutes * MERCHANT_ROWS_PER_MINUTE)
            .then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "the sink did not write {minutes} minutes and {incidents} resolved anomalies: {:?}",
        snapshot(pool).await.len()
    );
}
