//! The amount tiers through the whole pipeline with the detector's default configuration:
//! HTTP -> producer -> broker -> detector -> broker -> sink -> PostgreSQL. A medium amount
//! anomaly (2.5σ to 3σ) is emitted and stored by default, and counted once by the detector's
//! `vigil_detector_anomalies_opened_total`; each transaction once by
//! `vigil_detector_transactions_total`. With a minimum of high the same amount is counted in
//! `vigil_detector_amount_scores_below_min_total` and not stored.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::json;
use vigil_detector::core::amount::predictive_score;
use vigil_detector::core::stats::RunningStats;
use vigil_e2e::Pipeline;

/// Normal amounts before the outlier: more than the 100 a baseline needs before it judges.
const NORMAL: usize = 160;

/// A stored anomaly: id, rule, dimension, dimension value, severity, state, score, threshold.
type Row = (String, String, String, String, String, String, f64, f64);

async fn send(p: &Pipeline, at: DateTime<Utc>, amount: i64) -> String {
    let body = json!({
        "occurred_at": at.to_rfc3339(),
        "status": "approved",
        "auth_code": "00",
        "amount_minor": amount,
        "currency": "EUR",
        "category": "food",
        "merchant_id": "m-1",
    });
    let r = p.http.post(format!("{}/ingest/transaction", p.producer.url())).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let v: serde_json::Value = r.json().await.unwrap();
    v["transaction_id"].as_str().unwrap().to_owned()
}

/// Sends [`NORMAL`] normal amounts then one outlier at a prediction score of about 2.75;
/// returns the outlier's transaction id and its expected score.
async fn send_baseline_and_a_medium_outlier(p: &Pipeline) -> (String, f64) {
    // Normal amounts alternate between two values one spread either side of e^8 (about 30 EUR),
    // so the baseline's mean and spread are known exactly; the outlier is placed at a prediction
    // score of about 2.75, in the middle of the medium tier (2.5 to 3), far from both its edges.
    let (lo, hi) = ((8.0f64 - 0.3).exp_m1().round() as i64, (8.0f64 + 0.3).exp_m1().round() as i64);
    let amounts: Vec<i64> = (0..NORMAL).map(|i| if i % 2 == 0 { lo } else { hi }).collect();
    let base = RunningStats::of(amounts.iter().map(|a| (*a as f64).ln_1p()));
    let n = base.n as f64;
    let x = base.mean + 2.75 * base.stddev() * (1.0 + 1.0 / n).sqrt();
    let outlier = x.exp_m1().round() as i64;
    let (expected, _) = predictive_score((outlier as f64).ln_1p(), &base);
    assert!((2.65..2.85).contains(&expected), "the outlier scores {expected}");

    let start = Utc::now().duration_trunc(ChronoDuration::minutes(1)).unwrap() - ChronoDuration::minutes(4);
    for (i, a) in amounts.iter().enumerate() {
        send(p, start + ChronoDuration::milliseconds(i as i64 * 250), *a).await;
    }
    (send(p, start + ChronoDuration::seconds(50), outlier).await, expected)
}

/// The value of one series on the detector's /metrics.
async fn detector_metric(p: &Pipeline, series: &str) -> Option<f64> {
    let text = p.http.get(format!("{}/metrics", p.detector.url())).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_medium_amount_anomaly_is_stored_with_the_default_configuration() {
    let p = Pipeline::start(1).await;
    let (id, expected) = send_baseline_and_a_medium_outlier(&p).await;

    let pool = p.db.pool.clone();
    let rows: Vec<Row> = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, rule, dimension, dimension_value, severity, state, score, threshold
             FROM anomalies ORDER BY dimension",
        )
        .fetch_all(&pool)
        .await
        .ok()?;
        (rows.len() >= 2).then_some(rows)
    })
    .await
    .expect("the outlier's anomalies stored");
    // One anomaly per baseline (the category's and the merchant's hold the same amounts), both
    // medium, and nothing for the normal amounts.
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for (row, (dimension, value)) in rows.iter().zip([("category", "food"), ("merchant", "m-1")]) {
        assert_eq!(row.0, format!("amount_zscore:{dimension}:{value}:{id}"));
        assert_eq!((row.1.as_str(), row.2.as_str(), row.3.as_str()), ("amount_zscore", dimension, value));
        assert_eq!((row.4.as_str(), row.5.as_str()), ("medium", "firing"), "{row:?}");
        assert!((row.6 - expected).abs() < 1e-6, "stored score {} vs {expected}", row.6);
        assert_eq!(row.7, 2.5, "the firing bar is the medium tier's");
    }

    // The detector counted each anomaly once, at its opening severity.
    let value = |series: &'static str| detector_metric(&p, series);
    assert_eq!(
        value("vigil_detector_anomalies_opened_total{rule=\"amount_zscore\",severity=\"medium\"}").await,
        Some(2.0)
    );
    assert_eq!(value("vigil_detector_amount_scores_below_min_total{severity=\"medium\"}").await, Some(0.0));
    // And every transaction once, under its category and status.
    let total = (NORMAL + 1) as f64;
    assert_eq!(value("vigil_detector_transactions_total{category=\"food\",status=\"approved\"}").await, Some(total));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_minimum_of_high_a_medium_amount_is_counted_and_not_stored() {
    let p = Pipeline::start_configured(1, "3s", &[], &["--amount-min-severity=high"]).await;
    let (id, _) = send_baseline_and_a_medium_outlier(&p).await;
    // Both baselines judged it medium; neither emitted it.
    let below = r#"vigil_detector_amount_scores_below_min_total{severity="medium"}"#;
    let counted = vigil_testkit::eventually(Duration::from_secs(60), || async {
        (detector_metric(&p, below).await == Some(2.0)).then_some(())
    })
    .await;
    assert!(counted.is_some(), "{below} never reached 2: {:?}", detector_metric(&p, below).await);
    assert_eq!(
        detector_metric(&p, r#"vigil_detector_anomalies_opened_total{rule="amount_zscore",severity="medium"}"#).await,
        Some(0.0)
    );
    // The minute closes after the outlier (the partition goes idle), so once the sink has stored
    // it, an anomaly sent before would be stored too.
    let pool = p.db.pool.clone();
    let minute = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT coalesce(sum(count), 0)::bigint FROM transactions")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == (NORMAL + 1) as i64).then_some(())
    })
    .await;
    assert!(minute.is_some(), "the minute was never stored");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM anomalies WHERE transaction_id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "a medium amount is not stored with AMOUNT_MIN_SEVERITY=high");
    p.stop().await;
}
