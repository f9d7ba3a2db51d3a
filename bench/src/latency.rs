//! End-to-end latency through the whole stack (producer -> broker -> detector -> broker ->
//! sink -> PostgreSQL) under a steady 5 000 events/s stream stamped in real time:
//! * amount anomalies: from the producer's 2xx for an outlier to its row in `anomalies`;
//! * rate anomalies: from the spike minute's close (its end + the allowed lateness, when the
//!   watermark passes it) to the row.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::report::publish;
use crate::workload;

pub(crate) async fn start_all(topics: &vigil_testkit::PipelineTopics, db_url: &str) -> Vec<CancellationToken> {
    let brokers = vigil_testkit::brokers();
    let mut stops = Vec::new();
    let producer = vigil_producer::Config::from_args(vigil_producer::Args::parse_from([
        "producer".to_string(),
        "--bind=127.0.0.1:39502".into(),
        format!("--database-url={db_url}"),
        format!("--kafka-brokers={brokers}"),
        format!("--topic={}", topics.transactions),
        format!("--verdicts-topic={}", topics.verdicts),
        "--rate-limit-per-second=0".into(),
    ]))
    .unwrap();
    let app = vigil_producer::Application::build(producer).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    stops.push(stop);
    let mut argv = vec!["detector".to_string(), "--bind=127.0.0.1:0".into()];
    argv.extend(topics.detector_flags());
    argv.push(format!("--consumer-group={}", vigil_testkit::unique("lat")));
    let detector = vigil_detector::Config::from_args(&vigil_detector::Args::parse_from(argv)).unwrap();
    let app = vigil_detector::Application::build(detector).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    stops.push(stop);
    let mut argv = vec!["sink".to_string(), "--bind=127.0.0.1:0".into(), format!("--database-url={db_url}")];
    argv.extend(topics.sink_flags());
    argv.push(format!("--consumer-group={}", vigil_testkit::unique("lat")));
    let sink = vigil_sink::Config::from_args(&vigil_sink::Args::parse_from(argv)).unwrap();
    let app = vigil_sink::Application::build(sink).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    stops.push(stop);
    stops
}

/// Outlier transaction ids with the time their batch was acknowledged.
type Acks = Vec<(String, DateTime<Utc>)>;

pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(rate: u64, live_seconds: u64) -> anyhow::Result<()> {
    let topics = vigil_testkit::PipelineTopics::fresh(6).await;
    let db = vigil_testkit::fresh_database().await;
    let stops = start_all(&topics, &db.url).await;
    let url = "http://127.0.0.1:39502/ingest/transactions";
    let http = reqwest::Client::new();
    vigil_testkit::eventually(Duration::from_secs(60), || async {
        http.get("http://127.0.0.1:39502/ready").send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("producer not ready"))?;

    // History: 12 minutes before now at 1 000 events/s of event time, sent as fast as possible,
    // so the rate baselines (10 minutes minimum) and the amount baselines are warm.
    let now = Utc::now();
    let history_start = now.duration_trunc(chrono::Duration::minutes(1))?.timestamp_millis() - 12 * 60_000;
    let history_n = ((now.timestamp_millis() - history_start) as u64 * 1000 / 1000) as usize;
    let history: Vec<_> = workload::transactions(10, history_n, 1000, history_start, 200).collect();
    for chunk in history.chunks(500) {
        let body: Vec<_> = chunk.iter().map(workload::json).collect();
        let r = http.post(url).json(&body).send().await?;
        anyhow::ensure!(r.status() == 202, "history batch refused: {}", r.status());
    }

    // Live: `rate` events/s stamped with the wall clock, 10 batches a second; an outlier in
    // every other batch; a denied spike during the second full minute.
    let live_start = Utc::now();
    let spike_minute = live_start.duration_trunc(chrono::Duration::minutes(1))? + chrono::Duration::minutes(2);
    let acks: Arc<Mutex<Acks>> = Arc::default();
    let stop_sending = Arc::new(AtomicBool::new(false));
    let per_batch = (rate / 10).max(1) as usize;
    let mut seq: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // The spike's minute closes when the watermark (newest event time - 30 s lateness) passes
    // its end: the stream goes on until then and a little longer, wherever in its minute it
    // started (a fixed 200 s fell short of that when it started in a minute's first 10 s).
    let spike_closed = spike_minute + chrono::Duration::minutes(1) + chrono::Duration::seconds(30 + 10);
    let until_closed = (spike_closed - live_start).to_std().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(live_seconds).max(until_closed);
    let mut inflight = tokio::task::JoinSet::new();
    while Instant::now() < deadline && !stop_sending.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Utc::now();
        seq += 1;
        let mut batch: Vec<_> =
            workload::transactions(1000 + seq, per_batch, 100_000, t.timestamp_millis(), 200).collect();
        let in_spike = t >= spike_minute && t < spike_minute + chrono::Duration::minutes(1);
        for (i, tx) in batch.iter_mut().enumerate() {
            tx.transaction_id = uuid::Uuid::new_v4().to_string();
            if in_spike && i % 4 == 0 {
                tx.status = vigil_schemas::TransactionStatus::Denied;
                tx.auth_code = "05".into();
            }
        }
        let outlier = if seq % 2 == 0 {
            batch[0].amount_minor *= 500;
            Some(batch[0].transaction_id.clone())
        } else {
            None
        };
        let body: Vec<_> = batch.iter().map(workload::json).collect();
        let (http, acks) = (http.clone(), acks.clone());
        inflight.spawn(async move {
            if let Ok(r) = http.post(url).json(&body).send().await {
                if r.status() == 202 {
                    if let Some(id) = outlier {
                        acks.lock().unwrap().push((id, Utc::now()));
                    }
                }
            }
        });
        while inflight.len() > 20 {
            inflight.join_next().await;
        }
    }
    while inflight.join_next().await.is_some() {}
    let sent_live = seq as usize * per_batch;
    let live_secs = (Utc::now() - live_start).num_milliseconds() as f64 / 1000.0;

    // Wait for the rows.
    let acks = acks.lock().unwrap().clone();
    let ids: Vec<String> = acks.iter().map(|(id, _)| id.clone()).collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT transaction_id, min(created_at) FROM anomalies WHERE transaction_id = ANY($1) GROUP BY transaction_id",
    )
    .bind(&ids)
    .fetch_all(&db.pool)
    .await?;
    let by_id: std::collections::HashMap<String, DateTime<Utc>> = rows.into_iter().collect();
    let mut amount_ms: Vec<f64> = acks
        .iter()
        .filter_map(|(id, ack)| by_id.get(id).map(|c| (*c - *ack).num_microseconds().unwrap_or(0) as f64 / 1000.0))
        .collect();
    amount_ms.sort_by(f64::total_cmp);

    let rate_rows: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT window_start, created_at FROM anomalies WHERE rule = 'denied_rate' AND first_seen = $1")
            .bind(spike_minute)
            .fetch_all(&db.pool)
            .await?;
    let lateness = chrono::Duration::seconds(30);
    let rate_line = match rate_rows.first() {
        Some((_, created)) => {
            let close = spike_minute + chrono::Duration::minutes(1) + lateness;
            format!("{:.2} s", (*created - close).num_milliseconds() as f64 / 1000.0)
        }
        None => "not detected".to_string(),
    };

    for s in stops {
        s.cancel();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish(
        "latency",
        &[
            format!("live stream: {sent_live} events in {live_secs:.0} s = {:.0} events/s, real-time event stamps, {} outliers acknowledged", sent_live as f64 / live_secs, acks.len()),
            format!(
                "amount anomaly, producer 2xx -> row in PostgreSQL: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} rows (target p99 <= 500 ms)",
                pct(&amount_ms, 0.5),
                pct(&amount_ms, 0.99),
                amount_ms.last().copied().unwrap_or(f64::NAN),
                amount_ms.len()
            ),
            format!("rate anomaly (denied spike {}), window close (end + 30 s lateness) -> row: {rate_line} (target <= 2 s)", spike_minute.format("%H:%M")),
        ],
    );
    Ok(())
}
