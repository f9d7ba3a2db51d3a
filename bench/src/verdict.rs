//! Verdict on create: request to verdict through producer -> broker -> detector -> broker ->
//! producer, at a steady open-loop rate of single `POST /ingest/transaction` requests that ask
//! (`Prefer: wait=5`), with the amount baselines warm. Every request is timed from just before it
//! is sent to its answer; a 201 carries the verdict, a 202 means it did not come within the wait.

use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use tokio::task::JoinSet;

use crate::latency::{pct, start_all};
use crate::report::publish;
use crate::workload;

const PRODUCER: &str = "http://127.0.0.1:39502";

pub async fn run(rate: u64, seconds: u64) -> anyhow::Result<()> {
    let topics = vigil_testkit::PipelineTopics::fresh(6).await;
    let db = vigil_testkit::fresh_database().await;
    let stops = start_all(&topics, &db.url).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(2000).build()?;
    vigil_testkit::eventually(Duration::from_secs(60), || async {
        http.get(format!("{PRODUCER}/ready")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("producer not ready"))?;

    // Warm-up: 5 minutes of event time at 200/s (amount baselines past their 100 samples), in
    // batches, not asking.
    let start = Utc::now().duration_trunc(chrono::Duration::minutes(1))?.timestamp_millis() - 5 * 60_000;
    let history: Vec<_> = workload::transactions(20, 60_000, 200, start, 50).collect();
    for chunk in history.chunks(500) {
        let body: Vec<_> = chunk.iter().map(workload::json).collect();
        let r = http.post(format!("{PRODUCER}/ingest/transactions")).json(&body).send().await?;
        anyhow::ensure!(r.status() == 202, "history batch refused: {}", r.status());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Open loop: `rate` requests a second, sent on schedule whatever the answers do.
    let total = (rate * seconds) as usize;
    let mut live: Vec<_> = workload::transactions(21, total, rate, Utc::now().timestamp_millis(), 50).collect();
    for (i, tx) in live.iter_mut().enumerate() {
        tx.transaction_id = uuid::Uuid::new_v4().to_string();
        tx.occurred_at = Utc::now().timestamp_millis();
        if i % 50 == 0 {
            tx.amount_minor *= 400; // an outlier now and then: some verdicts are anomalous
        }
    }
    let began = Instant::now();
    let mut set = JoinSet::new();
    for (i, tx) in live.into_iter().enumerate() {
        let due = began + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let http = http.clone();
        let mut body = workload::json(&tx);
        body["occurred_at"] = serde_json::Value::String(Utc::now().to_rfc3339());
        set.spawn(async move {
            let t = Instant::now();
            let r =
                http.post(format!("{PRODUCER}/ingest/transaction")).header("Prefer", "wait=5").json(&body).send().await;
            let status = match r {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let anomalous =
                        r.json::<serde_json::Value>().await.ok().is_some_and(|v| v["verdict"]["anomaly"] == true);
                    (s, anomalous)
                }
                Err(_) => (0, false),
            };
            (status, t.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let mut ms = Vec::new();
    let (mut with_verdict, mut without, mut failed, mut anomalous) = (0usize, 0usize, 0usize, 0usize);
    while let Some(r) = set.join_next().await {
        let ((status, is_anomalous), elapsed) = r?;
        match status {
            201 => {
                with_verdict += 1;
                ms.push(elapsed);
                anomalous += usize::from(is_anomalous);
            }
            // Counted as slower than any verdict: the percentiles are over every request.
            202 => {
                without += 1;
                ms.push(f64::INFINITY);
            }
            _ => {
                failed += 1;
                ms.push(f64::INFINITY);
            }
        }
    }
    let sent_secs = began.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    let max_answered = ms.iter().copied().filter(|m| m.is_finite()).fold(f64::NAN, f64::max);
    for s in stops {
        s.cancel();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish(
        "verdict",
        &[
            format!("{total} single POST /ingest/transaction with Prefer: wait=5, open loop at {rate}/s ({sent_secs:.0} s), amount baselines warm"),
            format!("answered with the detector's verdict (201): {with_verdict}, of them anomalous {anomalous}; 202 without it: {without}; failed: {failed}"),
            format!(
                "request -> verdict over every request (a 202 counts as slower than any): p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, slowest verdict {:.0} ms (target p99 <= 1000 ms at 500 requests/s)",
                pct(&ms, 0.5),
                pct(&ms, 0.9),
                pct(&ms, 0.99),
                max_answered
            ),
        ],
    );
    Ok(())
}
