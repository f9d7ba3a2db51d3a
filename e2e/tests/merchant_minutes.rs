//! The merchant drill-down's data through the whole pipeline: HTTP -> producer -> broker ->
//! detector (stage 1's watched merchants) -> tx-minute -> sink -> `merchant_minutes` in
//! PostgreSQL, with exact counts, and nothing for a merchant too quiet to be watched.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::json;
use vigil_e2e::Pipeline;

/// (merchant, category, transactions a minute); the first two are busy enough to be watched
/// (RATE_MERCHANT_MIN_PER_MINUTE is 5), the last is not.
const MERCHANTS: [(&str, &str, usize); 3] =
    [("m-busy-1", "food", 12), ("m-busy-2", "travel", 8), ("m-quiet", "food", 1)];
const MINUTES: i64 = 25;

/// (total, approved, denied, failed, reversed) of a merchant in minute `m`.
fn counts(k: usize, m: i64, n: usize) -> (i64, i64, i64, i64, i64) {
    let n = n as i64;
    let denied = (m + k as i64) % 3;
    let failed = i64::from(m % 4 == 0);
    let reversed = i64::from(m % 5 == k as i64).min(n - denied - failed);
    (n, n - denied - failed - reversed, denied, failed, reversed)
}

/// A stored row: minute, merchant, category, total, approved, denied, failed, reversed.
type Row = (DateTime<Utc>, String, String, i64, i64, i64, i64, i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watched_merchants_minutes_reach_postgresql_with_exact_counts_and_quiet_ones_do_not() {
    let p = Pipeline::start(6).await;
    // Whole minutes of event time in the past: a back-fill, closed as soon as it goes quiet.
    let start = Utc::now().duration_trunc(ChronoDuration::minutes(1)).unwrap() - ChronoDuration::minutes(MINUTES + 5);
    let mut events = Vec::new();
    for m in 0..MINUTES {
        for (k, (merchant, category, n)) in MERCHANTS.iter().enumerate() {
            let (_, approved, denied, failed, _) = counts(k, m, *n);
            for i in 0..*n as i64 {
                let status = if i < denied {
                    "denied"
                } else if i < denied + failed {
                    "failed"
                } else if i < denied + failed + (*n as i64 - approved - denied - failed) {
                    "reversed"
                } else {
                    "approved"
                };
                let at = start + ChronoDuration::minutes(m) + ChronoDuration::milliseconds(i * 59_000 / *n as i64);
                events.push(json!({
                    "occurred_at": at.to_rfc3339(),
                    "status": status,
                    "auth_code": match status { "denied" => "05", "failed" => "91", _ => "00" },
                    "amount_minor": 1000 + i,
                    "currency": "EUR",
                    "category": category,
                    "merchant_id": merchant,
                }));
            }
        }
    }
    for chunk in events.chunks(500) {
        let r = p.http.post(format!("{}/ingest/transactions", p.producer.url())).json(&chunk).send().await.unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    // Every minute is final once the partitions go idle; wait for the last one's rows.
    let pool = p.db.pool.clone();
    let last = start + ChronoDuration::minutes(MINUTES - 1);
    vigil_testkit::eventually(Duration::from_secs(90), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM merchant_minutes WHERE minute = $1")
            .bind(last)
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == 2).then_some(())
    })
    .await
    .expect("both busy merchants' last minute in merchant_minutes");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let rows: Vec<Row> = sqlx::query_as(
        "SELECT minute, merchant_id, category, total, approved, denied, failed, reversed
         FROM merchant_minutes ORDER BY merchant_id, minute",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut by_merchant: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (minute, merchant, category, total, a, d, f, r) in &rows {
        let m = (*minute - start).num_minutes();
        let k = MERCHANTS.iter().position(|(id, _, _)| id == merchant).unwrap();
        assert_eq!(category, MERCHANTS[k].1);
        assert_eq!((*total, *a, *d, *f, *r), counts(k, m, MERCHANTS[k].2), "{merchant} minute {m}");
        by_merchant.entry(MERCHANTS[k].0).or_default().push(m);
    }
    assert_eq!(
        by_merchant.keys().copied().collect::<Vec<_>>(),
        ["m-busy-1", "m-busy-2"],
        "the quiet merchant is not watched"
    );
    for (merchant, minutes) in &by_merchant {
        // Watched once its volume qualifies, then every minute to the end.
        let first = minutes[0];
        assert!(first < MINUTES - 5, "{merchant}: first row in minute {first}");
        assert_eq!(*minutes, (first..MINUTES).collect::<Vec<_>>(), "{merchant}");
    }

    // The detector counts what it sent: every stored row (a re-send would only add to it).
    let metrics = p.http.get(format!("{}/metrics", p.detector.url())).send().await.unwrap().text().await.unwrap();
    let sent: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vigil_detector_merchant_minutes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no vigil_detector_merchant_minutes_total in\n{metrics}"));
    assert!(sent >= rows.len(), "sent {sent}, stored {}", rows.len());

    // The view the drill-down reads gives the same counts and their rates.
    let (total, denied, rate): (i64, i64, f64) = sqlx::query_as(
        "SELECT total, denied, denied_rate FROM v_merchant_minute WHERE merchant_id = 'm-busy-1' AND minute = $1",
    )
    .bind(last)
    .fetch_one(&pool)
    .await
    .unwrap();
    let (t, _, d, _, _) = counts(0, MINUTES - 1, 12);
    assert_eq!((total, denied), (t, d));
    assert!((rate - d as f64 / t as f64).abs() < 1e-12);
    p.stop().await;
}
