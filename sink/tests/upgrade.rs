//! A database written before volume_minutes and anomalies.first_message existed, upgraded:
//! its minutes get volume rows without an expectation, its open anomalies count their stored
//! state as their opening, and the sink goes on from there.

#![allow(clippy::unwrap_used)]

mod support;

use sqlx::{Connection, PgConnection, PgPool};
use support::*;
use vigil_schemas::AnomalyState;
use vigil_sink::writer::{self, Row};

/// The first migration of the volume work: everything before it is the earlier schema.
const VOLUME_MINUTES: i64 = 20261204000002;

/// A fresh database with the migrations before `until` applied.
async fn database_before(until: i64) -> PgPool {
    let admin = vigil_testkit::admin_url();
    let name = vigil_testkit::unique("vigil_upgrade").replace('-', "_");
    let mut conn = PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let pool = PgPool::connect(&vigil_testkit::replace_db(&admin, &name)).await.unwrap();
    apply(&pool, |v| v < until).await;
    pool
}

async fn apply(pool: &PgPool, which: impl Fn(i64) -> bool) {
    for m in vigil_common::db::MIGRATOR.iter().filter(|m| which(m.version)) {
        sqlx::raw_sql(&m.sql).execute(pool).await.unwrap_or_else(|e| panic!("migration {}: {e}", m.version));
    }
}

#[tokio::test]
async fn an_upgraded_database_keeps_its_minutes_as_volume_rows_and_its_open_anomalies_openings() {
    let pool = database_before(VOLUME_MINUTES).await;
    // Written by the earlier sink: two minutes, an open anomaly at its third state and a
    // resolved one.
    for a in [aggregate(0), aggregate(1)] {
        for (status, n) in
            [("approved", a.approved), ("denied", a.denied), ("failed", a.failed), ("reversed", a.reversed)]
        {
            sqlx::query("INSERT INTO transactions (minute, status, count) VALUES (to_timestamp($1 / 1000.0), $2, $3)")
                .bind(a.minute_start as f64)
                .bind(status)
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let open = anomaly(0, 2, AnomalyState::Updated);
    let resolved = anomaly(10, 3, AnomalyState::Resolved);
    for a in [&open, &resolved] {
        sqlx::query(
            "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, observed, observed_count,
                 observed_total, baseline_mean, baseline_stddev, baseline_n, scored_on, score, threshold, severity,
                 state, message, first_seen, last_updated)
             VALUES ($1, $2, 'denied_rate', 'global', 'all', 0.3, 30, 100, 0.05, 0.02, 30, 'rate', 12.5, 4, 'high',
                 $3, $4, now(), now())",
        )
        .bind(&a.id)
        .bind(a.sequence)
        .bind(a.state.as_str())
        .bind(&a.message)
        .execute(&pool)
        .await
        .unwrap();
    }

    apply(&pool, |v| v >= VOLUME_MINUTES).await;

    // Every stored minute has its volume row: its total, no expectation.
    let volume: Vec<(i64, Option<f64>)> =
        sqlx::query_as("SELECT total, expected FROM volume_minutes ORDER BY minute").fetch_all(&pool).await.unwrap();
    assert_eq!(volume, vec![(100, None), (100, None)]);
    // The open anomaly's stored state is its opening as far as the database knows; the
    // resolved one is left alone.
    let firsts: Vec<(String, Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT id, first_sequence, first_message FROM anomalies ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(firsts, vec![(open.id.clone(), Some(2), Some("state 2".into())), (resolved.id.clone(), None, None)]);

    // The sink goes on: a later state keeps that opening, an earlier one delivered again
    // replaces it, and a state of the resolved one gives it one.
    writer::write_batch(&pool, &[Row::Anomaly(anomaly(0, 3, AnomalyState::Updated))]).await.unwrap();
    writer::write_batch(&pool, &[Row::Anomaly(anomaly(10, 3, AnomalyState::Resolved))]).await.unwrap();
    let firsts: Vec<(String, i64, Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT message, sequence, first_sequence, first_message FROM anomalies ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        firsts,
        vec![
            ("state 3".into(), 3, Some(2), Some("state 2".into())),
            ("state 3".into(), 3, Some(3), Some("state 3".into()))
        ]
    );
    writer::write_batch(&pool, &[Row::Anomaly(anomaly(0, 0, AnomalyState::Firing))]).await.unwrap();
    let first: (i64, String, String) =
        sqlx::query_as("SELECT first_sequence, first_message, message FROM anomalies WHERE id = $1")
            .bind(&open.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(first, (0, "state 0".into(), "state 3".into()));
    // And the minutes go on with their expectation.
    writer::write_batch(&pool, &[Row::Aggregate(aggregate(WARMUP_MINUTES))]).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM volume_minutes WHERE expected IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
