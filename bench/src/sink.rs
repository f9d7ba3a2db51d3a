//! Sink figures: rows/s written from a prepared topic of minute aggregates and anomalies,
//! beside rows/s of a bare COPY of the same rows into the same tables, in the same run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use vigil_schemas::*;

use crate::report::{publish, rate};

fn aggregate(m: i64) -> MinuteAggregate {
    let denied = 3 + m % 5;
    MinuteAggregate {
        minute_start: 1_700_000_000_000 + m * 60_000,
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
                amount_sum: 60_000,
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
        expected_total: None,
        expected_low: None,
        expected_high: None,
    }
}

/// Rows one aggregate becomes: 4 statuses + 3 auth codes + 2 categories.
const ROWS_PER_MINUTE: usize = 9;

pub async fn run(minutes: usize) -> anyhow::Result<()> {
    let aggs: Vec<MinuteAggregate> = (0..minutes as i64).map(aggregate).collect();
    let rows = minutes * ROWS_PER_MINUTE;

    // The sink.
    let topics = vigil_testkit::fresh_topics(&[("bench-minute", 3), ("bench-anomalies", 3), ("bench-dead", 1)]).await;
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(60)).create()?;
    let codec = Codec::single_object();
    let mut pending = Vec::new();
    for a in &aggs {
        let payload = codec.encode(a)?;
        let key = a.minute_start.to_string();
        pending
            .push(producer.send_result(FutureRecord::to(&topics[0]).key(&key).payload(&payload)).map_err(|(e, _)| e)?);
    }
    for r in futures::future::join_all(pending).await {
        r?.map_err(|(e, _)| e)?;
    }
    let db = vigil_testkit::fresh_database().await;
    let args = vec![
        "sink".to_string(),
        "--bind=127.0.0.1:0".into(),
        format!("--database-url={}", db.url),
        format!("--kafka-brokers={}", vigil_testkit::brokers()),
        format!("--minutes-topic={}", topics[0]),
        format!("--anomalies-topic={}", topics[1]),
        format!("--dead-letter-topic={}", topics[2]),
        format!("--consumer-group={}", vigil_testkit::unique("bench")),
        "--batch-size=500".into(),
        // Measures the minute tables alone, as before transactions were stored.
        "--store-transactions=false".into(),
    ];
    let config =
        vigil_sink::Config::from_args(&vigil_sink::Args::parse_from(args)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = vigil_sink::Application::build(config).await?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    let count = || async {
        let n: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM transactions) + (SELECT count(*) FROM transactions_auth_codes) + (SELECT count(*) FROM transactions_categories)")
            .fetch_one(&db.pool)
            .await
            .unwrap_or(0);
        n as usize
    };
    let mut first = None;
    loop {
        let n = count().await;
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t, n0) = first.unwrap_or((Instant::now(), 0));
    let sink = rate(rows - n0, t.elapsed().as_secs_f64());
    stop.cancel();
    let _ = task.await;

    // A bare COPY of the same rows into a fresh database's tables.
    let db = vigil_testkit::fresh_database().await;
    let mut status = String::new();
    let mut codes = String::new();
    let mut cats = String::new();
    for a in &aggs {
        let m = chrono::DateTime::from_timestamp_millis(a.minute_start).unwrap_or_default().to_rfc3339();
        for s in TransactionStatus::ALL {
            status.push_str(&format!("{m}\t{}\t{}\n", s.as_str(), a.count(s)));
        }
        for (k, v) in &a.auth_codes {
            codes.push_str(&format!("{m}\t{k}\t{v}\n"));
        }
        for c in &a.categories {
            cats.push_str(&format!(
                "{m}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                c.category, c.currency, c.count, c.amount_sum, c.amount_min, c.amount_max
            ));
        }
    }
    let mut conn = db.pool.acquire().await?;
    let t = Instant::now();
    for (sql, data) in [
        ("COPY transactions (minute, status, count) FROM STDIN", &status),
        ("COPY transactions_auth_codes (minute, auth_code, count) FROM STDIN", &codes),
        ("COPY transactions_categories (minute, category, currency, count, amount_sum, amount_min, amount_max) FROM STDIN", &cats),
    ] {
        let mut copy = conn.copy_in_raw(sql).await?;
        copy.send(data.as_bytes()).await?;
        copy.finish().await?;
    }
    let copy = rate(rows, t.elapsed().as_secs_f64());
    publish(
        "sink",
        &[
            format!("{minutes} minute aggregates = {rows} rows (4 statuses + 3 auth codes + 2 categories each)"),
            format!("  sink (Kafka -> batched upserts, 500 messages/transaction): {sink:>9.0} rows/s"),
            format!("  bare COPY of the same rows into the same tables:           {copy:>9.0} rows/s"),
            format!("  ratio sink/COPY = {:.2}", sink / copy),
        ],
    );
    Ok(())
}
