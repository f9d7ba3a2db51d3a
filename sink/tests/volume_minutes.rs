//! `volume_minutes`: every minute aggregate's total against the global volume expectation, a
//! minute without any transaction included, written with the aggregate's other rows and set
//! again, unchanged, when the aggregate is delivered again.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use support::*;
use vigil_schemas::{Decoded, MinuteAggregate};

/// (minute in ms, total, expected, expected_low, expected_high)
type VolumeRow = (i64, i64, Option<f64>, Option<f64>, Option<f64>);

async fn volume_rows(pool: &sqlx::PgPool) -> Vec<VolumeRow> {
    sqlx::query_as(
        "SELECT (extract(epoch FROM minute) * 1000)::bigint, total, expected, expected_low, expected_high
         FROM volume_minutes ORDER BY minute",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn row(a: &MinuteAggregate) -> VolumeRow {
    (a.minute_start, a.total, a.expected_total, a.expected_low, a.expected_high)
}

async fn metrics(sink: &Sink) -> String {
    reqwest::get(format!("http://127.0.0.1:{}/metrics", sink.port)).await.unwrap().text().await.unwrap()
}

fn at(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0 + m * MINUTE).unwrap()
}

/// Minutes 0..6, traffic stopped in minutes 3 and 4.
fn with_a_stop() -> Vec<MinuteAggregate> {
    (0..6).map(|m| if m == 3 || m == 4 { empty_aggregate(m) } else { aggregate(m) }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minute_without_transactions_is_stored_as_zeros_and_every_view_reads_it() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let minutes = with_a_stop();
    send(&topics, &minutes.iter().cloned().map(Decoded::MinuteAggregate).collect::<Vec<_>>()).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&db.pool, "SELECT count(*) FROM volume_minutes").await == 6).then_some(())
    })
    .await
    .expect("six volume rows");
    assert_eq!(volume_rows(&db.pool).await, minutes.iter().map(row).collect::<Vec<_>>());
    assert_eq!(count(&db.pool, "SELECT count(*) FROM volume_minutes WHERE total = 0").await, 2);

    // Its four statuses at 0, so a panel of transactions draws the stop as zeros, not a gap;
    // no auth code or category row.
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count FROM transactions WHERE minute = $1 ORDER BY status")
            .bind(at(3))
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let zeros: Vec<(String, i64)> =
        ["approved", "denied", "failed", "reversed"].iter().map(|s| (s.to_string(), 0)).collect();
    assert_eq!(statuses, zeros);
    for table in ["transactions_auth_codes", "transactions_categories"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE minute IN ($1, $2)"))
            .bind(at(3))
            .bind(at(4))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }

    // v_tx_minute: total 0, rates unknown rather than a division by zero.
    let (total, denied, rate): (i64, i64, Option<f64>) =
        sqlx::query_as("SELECT total, denied, denied_rate FROM v_tx_minute WHERE minute = $1")
            .bind(at(3))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((total, denied, rate), (0, 0, None));
    // v_tx_anomaly judges the minutes with traffic only, and the minute after the stop has the
    // minutes with traffic before it as its baseline.
    let judged: Vec<(DateTime<Utc>, i64)> =
        sqlx::query_as("SELECT minute, baseline_n FROM v_tx_anomaly ORDER BY minute")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(judged.iter().map(|r| r.0).collect::<Vec<_>>(), vec![at(0), at(1), at(2), at(5)]);
    assert_eq!(judged[3].1, 3, "minute 5's baseline: minutes 0-2");

    // The books: every aggregate consumed, none dead-lettered, the stop's rows counted as written.
    let m = metrics(&sink).await;
    assert!(m.contains(r#"vigil_sink_messages_total{kind="minute_aggregate"} 6"#), "{m}");
    assert!(m.contains(r#"vigil_sink_rows_written_total{table="volume_minutes"} 6"#), "{m}");
    assert!(m.contains(r#"vigil_sink_rows_written_total{table="transactions"} 24"#), "{m}");
    assert!(!m.contains(r#"vigil_sink_dead_letters_total{kind="rejected"} 1"#), "{m}");
    assert_eq!(
        count(&db.pool, "SELECT sum(count)::bigint FROM transactions").await,
        4 * 100,
        "nothing counted for the stop"
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_expected_count_and_its_normal_range_are_stored_and_null_while_the_baseline_warms_up() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    // Minutes 0-2 without an expectation (warming up), 3-5 with one, 6 with an expectation that
    // is not a number: stored as none rather than refusing the minute.
    let mut minutes: Vec<MinuteAggregate> = (0..6).map(aggregate).collect();
    let mut odd = aggregate(6);
    odd.expected_total = Some(f64::NAN);
    odd.expected_high = Some(f64::INFINITY);
    minutes.push(odd);
    send(&topics, &minutes.iter().cloned().map(Decoded::MinuteAggregate).collect::<Vec<_>>()).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&db.pool, "SELECT count(*) FROM volume_minutes").await == 7).then_some(())
    })
    .await
    .expect("seven volume rows");
    let stored = volume_rows(&db.pool).await;
    assert_eq!(stored[..6], minutes[..6].iter().map(row).collect::<Vec<_>>());
    assert_eq!(stored[0], (T0, 100, None, None, None));
    assert_eq!(stored[4], (T0 + 4 * MINUTE, 100, Some(102.0), Some(72.0), Some(132.0)));
    assert_eq!(stored[6], (T0 + 6 * MINUTE, 100, None, Some(73.0), None));
    // The minute's counts are all there.
    assert_eq!(count(&db.pool, "SELECT count(DISTINCT minute) FROM transactions").await, 7);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_minute_sets_the_same_volume_row_and_changes_nothing() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let minutes = with_a_stop();
    // Newest first, then everything again in order: a replay after a restart.
    let mut twice: Vec<Decoded> = minutes.iter().rev().cloned().map(Decoded::MinuteAggregate).collect();
    twice.extend(minutes.iter().cloned().map(Decoded::MinuteAggregate));
    send(&topics, &twice).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        metrics(&sink).await.contains(r#"vigil_sink_messages_total{kind="minute_aggregate"} 12"#).then_some(())
    })
    .await
    .expect("all twelve consumed");
    tokio::time::sleep(Duration::from_secs(1)).await; // the last batch is written
    let first = snapshot(&db.pool).await;
    assert_eq!(volume_rows(&db.pool).await, minutes.iter().map(row).collect::<Vec<_>>());
    let m = metrics(&sink).await;
    // Six rows inserted; the second delivery of each changed none.
    assert!(m.contains(r#"vigil_sink_rows_written_total{table="volume_minutes"} 6"#), "{m}");
    let written_at: Vec<(DateTime<Utc>,)> =
        sqlx::query_as("SELECT written_at FROM volume_minutes ORDER BY minute").fetch_all(&db.pool).await.unwrap();
    sink.stop().await;

    // A third delivery by a sink of another group: still the same rows, not even rewritten.
    send(&topics, &twice[6..]).await;
    let other = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        metrics(&other).await.contains(r#"vigil_sink_messages_total{kind="minute_aggregate"} 18"#).then_some(())
    })
    .await
    .expect("all eighteen consumed by the second sink");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(snapshot(&db.pool).await, first);
    let again: Vec<(DateTime<Utc>,)> =
        sqlx::query_as("SELECT written_at FROM volume_minutes ORDER BY minute").fetch_all(&db.pool).await.unwrap();
    assert_eq!(again, written_at);
    assert!(!metrics(&other).await.contains(r#"table="volume_minutes""#), "no volume row changed");
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minute_whose_volume_row_is_refused_is_written_nowhere_and_dead_lettered() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    // The database refuses minute 2's volume row (as a CHECK would): its statuses, auth codes
    // and categories, written earlier in the same transaction, must not stay behind.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_minute() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.minute = to_timestamp({}) THEN
             RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'check_violation';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_minute BEFORE INSERT ON volume_minutes FOR EACH ROW EXECUTE FUNCTION refuse_minute();",
        (T0 + 2 * MINUTE) / 1000
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let minutes: Vec<MinuteAggregate> = (0..4).map(aggregate).collect();
    send(&topics, &minutes.iter().cloned().map(Decoded::MinuteAggregate).collect::<Vec<_>>()).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    let dead = vigil_testkit::read_topic(&topics.dead_letter, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    let decoded = vigil_schemas::Codec::single_object().decode::<MinuteAggregate>(&dead[0].payload).unwrap();
    assert_eq!(decoded, minutes[2]);
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&db.pool, "SELECT count(*) FROM volume_minutes").await == 3).then_some(())
    })
    .await
    .expect("the other three minutes are written");
    for table in ["transactions", "transactions_auth_codes", "transactions_categories", "volume_minutes"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE minute = $1"))
            .bind(at(2))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} holds part of the refused minute");
    }
    assert_eq!(count(&db.pool, "SELECT count(DISTINCT minute) FROM transactions").await, 3);
    sink.stop().await;
}
