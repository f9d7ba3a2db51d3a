//! The SQL view `v_tx_anomaly` (the older design's rule, computed by PostgreSQL from the sink's
//! tables) and the detector (computed from the stream) agree on which minutes are anomalous.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::json;
use vigil_e2e::Pipeline;

/// Deterministic per-minute traffic: `n` events with exact counts of each status.
fn minute_events(at: DateTime<Utc>, n: usize, denied: usize, failed: usize, reversed: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let status = if i < denied {
                "denied"
            } else if i < denied + failed {
                "failed"
            } else if i < denied + failed + reversed {
                "reversed"
            } else {
                "approved"
            };
            // Spread over the minute; a pseudo-random but fixed wobble of the counts comes from
            // the minute index in the caller.
            let t = at + ChronoDuration::milliseconds((i as i64 * 59_000) / n as i64);
            let category = ["food", "travel", "fuel", "grocery", "books", "home"][i % 6];
            json!({
                "occurred_at": t.to_rfc3339(),
                "status": status,
                "auth_code": match status { "denied" => "05", "failed" => "91", _ => "00" },
                "amount_minor": 1000 + (i % 97) as i64 * 13,
                "currency": "EUR",
                "category": category,
                "merchant_id": format!("m-{}", i % 9),
            })
        })
        .collect()
}

async fn send_plan(
    p: &Pipeline,
    minutes: i64,
    spike: impl Fn(i64, &mut usize, &mut usize, &mut usize),
) -> (DateTime<Utc>, usize) {
    let start = Utc::now().duration_trunc(ChronoDuration::minutes(1)).unwrap() - ChronoDuration::minutes(minutes + 8);
    // Counts wobble around 5 % / 2 % / 1 % of 200 per minute.
    let wobble = [0i64, 1, -1, 2, 0, -2, 1, 0, -1, 1];
    let mut sent = 0;
    for m in 0..minutes {
        let w = wobble[(m % 10) as usize];
        let (mut d, mut f, mut r) = ((10 + w) as usize, (4 + w.signum()) as usize, (2 + (w % 2)) as usize);
        spike(m, &mut d, &mut f, &mut r);
        let events = minute_events(start + ChronoDuration::minutes(m), 200, d, f, r);
        for chunk in events.chunks(500) {
            let resp =
                p.http.post(format!("{}/ingest/transactions", p.producer.url())).json(&chunk).send().await.unwrap();
            assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
            sent += chunk.len();
        }
    }
    (start, sent)
}

/// Waits for every event to be counted, then returns, per rule, the minutes the view flags and
/// the minutes the detector found anomalous (onset to last anomalous window of each incident).
async fn flagged(
    p: &Pipeline,
    sent: usize,
    resolved: bool,
) -> Vec<(&'static str, BTreeSet<DateTime<Utc>>, BTreeSet<DateTime<Utc>>)> {
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
        (total == sent as i64 && (!resolved || open == 0)).then_some(())
    })
    .await
    .expect("every event counted (and every rate anomaly resolved)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = Vec::new();
    for (rule, flag) in [
        ("denied_rate", "denied_above_normal"),
        ("failed_rate", "failed_above_normal"),
        ("reversed_rate", "reversed_above_normal"),
    ] {
        let view: BTreeSet<DateTime<Utc>> = sqlx::query_scalar::<_, DateTime<Utc>>(&format!(
            "SELECT minute FROM v_tx_anomaly WHERE {flag} ORDER BY minute"
        ))
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let incidents: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as("SELECT first_seen, window_start FROM anomalies WHERE rule = $1 AND dimension = 'global'")
                .bind(rule)
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut detector = BTreeSet::new();
        for (first, last) in incidents {
            let mut m = first;
            while m <= last {
                detector.insert(m);
                m += ChronoDuration::minutes(1);
            }
        }
        out.push((rule, view, detector));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_view_and_the_detector_flag_the_same_minutes() {
    let p = Pipeline::start(6).await;
    // 30 normal minutes, then 2-minute spikes of denied (30), failed (37) and reversed (44).
    let (_, sent) = send_plan(&p, 52, |m, d, f, r| match m {
        30 | 31 => *d = 70,
        37 | 38 => *f = 40,
        44 | 45 => *r = 30,
        _ => {}
    })
    .await;
    for (rule, view, detector) in flagged(&p, sent, true).await {
        assert!(!view.is_empty(), "the view flags the {rule} spike");
        assert_eq!(view, detector, "{rule}: the view and the detector disagree");
    }
    p.stop().await;
}

/// The documented difference: the view's baseline includes earlier anomalous minutes, so during
/// a long incident it stops flagging once the incident fills its baseline; the detector keeps
/// anomalous minutes out of its baseline and flags the whole incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn during_a_long_incident_the_view_stops_flagging_and_the_detector_does_not() {
    let p = Pipeline::start(6).await;
    let (start, sent) = send_plan(&p, 55, |m, d, _, _| {
        if m >= 30 {
            *d = 60;
        }
    })
    .await;
    let results = flagged(&p, sent, false).await;
    let (_, view, detector) = results.into_iter().find(|(r, _, _)| *r == "denied_rate").unwrap();
    let incident: BTreeSet<DateTime<Utc>> = (30..55).map(|m| start + ChronoDuration::minutes(m)).collect();
    assert_eq!(detector, incident, "the detector flags every minute of the 25-minute incident");
    assert!(view.is_subset(&detector), "the view flags nothing the detector does not");
    assert!(view.contains(&(start + ChronoDuration::minutes(30))), "both flag the onset");
    assert!(
        view.len() < detector.len(),
        "the view stops flagging as the incident fills its baseline: {} of {}",
        view.len(),
        detector.len()
    );
    p.stop().await;
}
