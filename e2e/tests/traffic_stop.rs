//! Traffic that stops is reported although no event arrives after it: the detector's idle
//! partitions move event time on with the wall clock (less the feed's delay and the allowed
//! lateness), the quiet minutes are final with no transaction, and the volume rule judges them
//! (the README's "Volume: traffic that stops, drops or surges").
//!
//! Live traffic through the producer's HTTP API, every event stamped with the time it is sent:
//! first 30 minutes of history sent at once (stamped in the past, so the detector learns a
//! baseline), then a live feed at 2 events a second until a minute boundary, then nothing. The
//! detector learns its baseline for 10 minutes instead of 60 (`--volume-warmup-minutes`) and
//! allows 5 s of lateness, so the test takes about two minutes of wall-clock time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::json;
use vigil_e2e::Pipeline;

/// Events per second, history and live alike (120 a minute).
const PER_SECOND: i64 = 2;

fn event(at: DateTime<Utc>, i: i64) -> serde_json::Value {
    let category = ["food", "travel", "fuel"][(i % 3) as usize];
    json!({
        "occurred_at": at.to_rfc3339(),
        "status": if i % 25 == 0 { "denied" } else { "approved" },
        "auth_code": if i % 25 == 0 { "05" } else { "00" },
        "amount_minor": 1000 + (i % 97) * 13,
        "currency": "EUR",
        "category": category,
        "merchant_id": format!("m-{}", i % 4),
    })
}

async fn send(p: &Pipeline, events: &[serde_json::Value]) {
    for chunk in events.chunks(1000) {
        let r = p.http.post(format!("{}/ingest/transactions", p.producer.url())).json(&chunk).send().await.unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
}

/// (dimension, state, first message, baseline mean) of every volume drop.
type Row = (String, String, String, f64);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_feed_that_stops_is_reported_as_a_volume_drop_in_postgresql_without_any_further_event() {
    let p = Pipeline::start_configured(2, "3s", &[], &["--volume-warmup-minutes=10", "--allowed-lateness=5s"]).await;

    // History: 30 minutes up to now, sent at once.
    let now = Utc::now();
    let step = ChronoDuration::milliseconds(1000 / PER_SECOND);
    let mut at = now - ChronoDuration::minutes(30);
    let mut history = Vec::new();
    let mut i = 0;
    while at < now {
        history.push(event(at, i));
        (at, i) = (at + step, i + 1);
    }
    send(&p, &history).await;

    // Live: 2 events a second stamped as sent, for at least 15 s and up to the next minute
    // boundary; then the feed stops.
    let stop = (Utc::now() + ChronoDuration::seconds(15)).duration_trunc(ChronoDuration::minutes(1)).unwrap()
        + ChronoDuration::minutes(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / PER_SECOND as u64));
    loop {
        tick.tick().await;
        let t = Utc::now();
        if t >= stop {
            break;
        }
        send(&p, &[event(t, i)]).await;
        i += 1;
    }
    let stopped = Utc::now();

    // The first minute without any event is `stop`: final once the clock is past it by the
    // lateness (and the feed's delay, well under a second here), and judged at once. The anomaly's
    // evidence starts on it and holds nothing but quiet minutes: "... evidence over 1 minute from
    // HH:MM UTC: 0 transactions against 120 expected ...". (Usually that first minute fires; on a
    // loaded machine a baseline with a wider spread can need the next one too.)
    let opening = format!(" from {} UTC: 0 transactions against", stop.format("%H:%M"));
    let pool = p.db.pool.clone();
    let found = vigil_testkit::eventually(Duration::from_secs(150), || async {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT dimension, state, first_message, baseline_mean FROM anomalies
             WHERE rule = 'volume_drop' AND first_message IS NOT NULL ORDER BY first_seen",
        )
        .fetch_all(&pool)
        .await
        .ok()?;
        rows.iter().any(|r| r.0 == "global" && r.2.contains(&opening)).then_some(rows)
    })
    .await;
    let Some(rows) = found else {
        let all: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT rule, dimension, state, message FROM anomalies ORDER BY first_seen")
                .fetch_all(&pool)
                .await
                .unwrap();
        panic!("no global volume drop opening on {stop} (sending stopped at {stopped}); anomalies: {all:#?}");
    };
    let delay = Utc::now() - stopped;

    // No event reached the pipeline after the stop: the quiet minutes are final with zeros.
    let after: Option<i64> = sqlx::query_scalar("SELECT sum(count)::bigint FROM transactions WHERE minute >= $1")
        .bind(stop)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, Some(0), "events counted at or after the stop");
    let volume: i64 = sqlx::query_scalar("SELECT total FROM volume_minutes WHERE minute = $1")
        .bind(stop)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(volume, 0);

    let global = rows.iter().find(|r| r.0 == "global" && r.2.contains(&opening)).unwrap();
    // 120 a minute expected: the baseline learned the feed's rate.
    assert!((100.0..=140.0).contains(&global.3), "expected volume {} in {}", global.3, global.2);
    // Every drop's evidence starts at the stop: the history and the live feed were one steady rate.
    assert!(rows.iter().all(|r| r.2.contains(&opening)), "a volume drop before the stop: {rows:#?}");
    // Within the live target: 3 minutes of wall-clock time after the stop.
    println!("traffic stopped at {stopped}; global volume drop in PostgreSQL {} s later", delay.num_seconds());
    assert!(delay < ChronoDuration::minutes(3), "reported {} s after the stop", delay.num_seconds());
    p.stop().await;
}
