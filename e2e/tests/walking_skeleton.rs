//! The thinnest complete path: HTTP -> producer -> broker -> detector -> broker -> sink ->
//! PostgreSQL, with exact counts.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::json;
use vigil_e2e::Pipeline;

/// A row of v_tx_minute: minute, total, approved, denied, failed, reversed and the three rates.
type MinuteRow = (DateTime<Utc>, i64, i64, i64, i64, i64, Option<f64>, Option<f64>, Option<f64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_over_three_minutes_arrive_as_exact_per_minute_counts_and_rates() {
    let p = Pipeline::start(6).await;
    // Three whole minutes of event time, ending two minutes ago.
    let base: DateTime<Utc> =
        Utc::now().duration_trunc(ChronoDuration::minutes(1)).unwrap() - ChronoDuration::minutes(5);
    // (minute index, status, auth code, how many)
    let plan: &[(i64, &str, &str, usize)] = &[
        (0, "approved", "00", 7),
        (0, "denied", "05", 2),
        (0, "failed", "91", 1),
        (1, "approved", "00", 4),
        (1, "denied", "51", 3),
        (1, "reversed", "00", 1),
        (2, "approved", "00", 10),
        (2, "denied", "05", 5),
        (2, "failed", "96", 3),
        (2, "reversed", "00", 2),
    ];
    let categories = ["food", "travel", "fuel", "grocery", "electronics"];
    let mut n = 0;
    for (minute, status, code, count) in plan {
        for i in 0..*count {
            n += 1;
            let at = base + ChronoDuration::minutes(*minute) + ChronoDuration::seconds((i as i64 * 7) % 60);
            let body = json!({
                "occurred_at": at.to_rfc3339(),
                "status": status,
                "auth_code": code,
                "amount_minor": 1000 + n,
                "currency": "EUR",
                "category": categories[n % categories.len()],
                "merchant_id": format!("m-{}", n % 4),
            });
            let r = p.http.post(format!("{}/ingest/transaction", p.producer.url())).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
            let v: serde_json::Value = r.json().await.unwrap();
            assert!(uuid_like(v["transaction_id"].as_str().unwrap()));
        }
    }

    // The minutes are final once every partition has gone idle (1 s in tests).
    let pool = p.db.pool.clone();
    let rows = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let rows: Vec<MinuteRow> = sqlx::query_as(
            "SELECT minute, total, approved, denied, failed, reversed, denied_rate, failed_rate, reversed_rate
             FROM v_tx_minute ORDER BY minute",
        )
        .fetch_all(&pool)
        .await
        .ok()?;
        (rows.len() == 3 && rows.iter().map(|r| r.1).sum::<i64>() == 38).then_some(rows)
    })
    .await
    .expect("three minutes with 38 events in v_tx_minute");

    let expect = [(0, 10, 7, 2, 1, 0), (1, 8, 4, 3, 0, 1), (2, 20, 10, 5, 3, 2)];
    for (row, (m, total, a, d, f, r)) in rows.iter().zip(expect) {
        assert_eq!(row.0, base + ChronoDuration::minutes(m));
        assert_eq!((row.1, row.2, row.3, row.4, row.5), (total, a, d, f, r), "minute {m}");
        let rate = |x: i64| x as f64 / total as f64;
        assert!((row.6.unwrap() - rate(d)).abs() < 1e-12);
        assert!((row.7.unwrap() - rate(f)).abs() < 1e-12);
        assert!((row.8.unwrap() - rate(r)).abs() < 1e-12);
    }

    let codes: Vec<(DateTime<Utc>, String, i64)> =
        sqlx::query_as("SELECT minute, auth_code, count FROM transactions_auth_codes ORDER BY minute, auth_code")
            .fetch_all(&pool)
            .await
            .unwrap();
    let got: BTreeMap<(i64, String), i64> =
        codes.into_iter().map(|(m, c, n)| (((m - base).num_minutes(), c), n)).collect();
    let want: BTreeMap<(i64, String), i64> = [
        ((0, "00"), 7),
        ((0, "05"), 2),
        ((0, "91"), 1),
        ((1, "00"), 5),
        ((1, "51"), 3),
        ((2, "00"), 12),
        ((2, "05"), 5),
        ((2, "96"), 3),
    ]
    .into_iter()
    .map(|((m, c), n)| ((m, c.to_string()), n))
    .collect();
    assert_eq!(got, want);
    p.stop().await;
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
