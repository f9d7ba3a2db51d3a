//! Redelivery, reordering, concurrent sinks and a database restart never change what the
//! tables hold; garbage is dead-lettered and the stream goes on.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use vigil_schemas::{AnomalyState, Decoded, MerchantMinute};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_messages_twice_out_of_order_and_by_two_sinks_at_once_leave_identical_tables() {
    let msgs = messages(60, 5);

    // Reference: each message once, in order, one sink.
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    send(&topics, &msgs).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    wait_written(&db.pool, 60, 5).await;
    sink.stop().await;
    let reference = snapshot(&db.pool).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM transactions").await, 240, "four statuses per minute");

    // Reversed (newest anomaly state first), then everything again, consumed by two sinks in
    // two groups writing the same database at once.
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let mut twice: Vec<Decoded> = msgs.iter().rev().cloned().collect();
    twice.extend(msgs.iter().cloned());
    send(&topics, &twice).await;
    let a = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    let b = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    wait_written(&db.pool, 60, 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // let both finish every message
    a.stop().await;
    b.stop().await;
    assert_eq!(snapshot(&db.pool).await, reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_anomaly_state_delivered_late_never_overwrites_a_newer_one() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let order = [3, 0, 2, 1];
    let states = [AnomalyState::Firing, AnomalyState::Updated, AnomalyState::Updated, AnomalyState::Resolved];
    let msgs: Vec<Decoded> = order.iter().map(|s| Decoded::Anomaly(anomaly(0, *s, states[*s as usize]))).collect();
    send(&topics, &msgs).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        sqlx::query_as::<_, (i64,)>("SELECT sequence FROM anomalies").fetch_optional(&db.pool).await.ok().flatten()
    })
    .await
    .expect("the anomaly was written");
    tokio::time::sleep(Duration::from_secs(1)).await; // every state has been consumed
    let row: (i64, String, String) =
        sqlx::query_as("SELECT sequence, state, message FROM anomalies").fetch_one(&db.pool).await.unwrap();
    assert_eq!(row, (3, "resolved".to_string(), "state 3".to_string()), "first seen {row:?}");
    // ...and the opening state's message stays, whatever came first.
    let first: (i64, String) =
        sqlx::query_as("SELECT first_sequence, first_message FROM anomalies").fetch_one(&db.pool).await.unwrap();
    assert_eq!(first, (0, "state 0".to_string()));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_anomaly_keeps_the_message_it_opened_with_when_the_opening_arrives_after_a_later_state() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    let first = || async {
        sqlx::query_as::<_, (i64, i64, String, String)>(
            "SELECT sequence, first_sequence, message, first_message FROM anomalies",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap()
    };
    // An update first, in a batch of its own: until the opening arrives, it is the first known.
    send(&topics, &[Decoded::Anomaly(anomaly(0, 2, AnomalyState::Updated))]).await;
    let stored = vigil_testkit::eventually(Duration::from_secs(30), || async { first().await }).await;
    assert_eq!(stored, Some((2, 2, "state 2".into(), "state 2".into())));
    // Then the opening, a later update and the opening again (a redelivery).
    let rest = [(0, AnomalyState::Firing), (3, AnomalyState::Updated), (0, AnomalyState::Firing)];
    send(&topics, &rest.map(|(s, st)| Decoded::Anomaly(anomaly(0, s, st)))).await;
    let stored =
        vigil_testkit::eventually(Duration::from_secs(30), || async { first().await.filter(|r| r.0 == 3 && r.1 == 0) })
            .await;
    assert_eq!(stored, Some((3, 0, "state 3".into(), "state 0".into())));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_stream_every_message_lands_exactly_once_without_a_manual_step() {
    let pg = vigil_testkit::OwnPostgres::start();
    let pool = pg.database("vigil").await;
    let topics = Topics::fresh().await;
    let msgs = messages(120, 6);
    let (first, second) = msgs.split_at(50);
    send(&topics, first).await;
    let sink = Sink::start(&topics, &pg.url("vigil"), &vigil_testkit::unique("sink"), &[]).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&pool, "SELECT count(DISTINCT minute) FROM transactions").await == 50).then_some(())
    })
    .await
    .expect("first half written");
    pool.close().await;

    pg.stop_server(); // immediate: as if the machine lost power
    send(&topics, second).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the sink holds its batch and retries
    let ready = reqwest::get(format!("http://127.0.0.1:{}/ready", sink.port)).await.unwrap().status();
    assert_eq!(ready, 503, "ready while the database is down");
    pg.start_server();

    let pool = sqlx::PgPool::connect(&pg.url("vigil")).await.unwrap();
    wait_written(&pool, 120, 6).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM transactions").await, 480);
    assert_eq!(count(&pool, "SELECT sum(count)::bigint FROM transactions").await, 120 * 100, "no minute counted twice");
    let errors = reqwest::get(format!("http://127.0.0.1:{}/metrics", sink.port)).await.unwrap().text().await.unwrap();
    assert!(errors.contains("vigil_sink_db_errors_total"), "the outage shows in the metrics");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_is_dead_lettered_with_a_reason_and_the_following_messages_are_written() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let codec = vigil_schemas::Codec::single_object();
    let good = codec.encode(&aggregate(0)).unwrap();
    send_raw(&topics.minutes, b"definitely not avro").await;
    send_raw(&topics.minutes, &good[..good.len() / 2]).await; // truncated
    let anomaly_on_minutes = codec.encode(&anomaly(0, 0, AnomalyState::Firing)).unwrap();
    send_raw(&topics.minutes, &anomaly_on_minutes).await; // valid Avro, wrong type for the topic
    send(&topics, &messages(3, 0)).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    wait_written(&db.pool, 3, 0).await;
    let dead = vigil_testkit::read_topic(&topics.dead_letter, 3, Duration::from_secs(20));
    assert_eq!(dead.len(), 3);
    // Unkeyed, the three landed on any partitions: match them by payload, not by order.
    let reason = |payload: &[u8]| -> String {
        let r = dead.iter().find(|r| r.payload == payload).expect("dead-lettered with its original payload");
        String::from_utf8(r.headers.iter().find(|(k, _)| k == "vigil.error").unwrap().1.clone()).unwrap()
    };
    assert!(reason(b"definitely not avro").starts_with("undecodable"));
    assert!(reason(&good[..good.len() / 2]).starts_with("undecodable"));
    assert!(reason(&anomaly_on_minutes).contains("does not belong"), "{}", reason(&anomaly_on_minutes));
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", sink.port)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"vigil_sink_dead_letters_total{kind="undecodable"} 2"#), "{metrics}");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minute_or_anomaly_from_the_far_future_is_dead_lettered_not_stored() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let codec = vigil_schemas::Codec::single_object();
    let next_year = chrono::Utc::now().timestamp_millis() + 365 * 24 * 3_600_000;
    let mut far = aggregate(0);
    far.minute_start = next_year - next_year % 60_000;
    let mut far_anomaly = anomaly(0, 0, AnomalyState::Firing);
    far_anomaly.last_updated = next_year;
    send_raw(&topics.minutes, &codec.encode(&far).unwrap()).await;
    send_raw(&topics.anomalies, &codec.encode(&far_anomaly).unwrap()).await;
    send(&topics, &messages(3, 0)).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    wait_written(&db.pool, 3, 0).await;
    let dead = vigil_testkit::read_topic(&topics.dead_letter, 2, Duration::from_secs(20));
    assert_eq!(dead.len(), 2);
    for r in &dead {
        let reason =
            r.headers.iter().find(|(k, _)| k == "vigil.error").map(|h| String::from_utf8_lossy(&h.1).into_owned());
        assert!(reason.as_deref().is_some_and(|r| r.contains("after the record's timestamp")), "{reason:?}");
    }
    assert_eq!(
        count(&db.pool, "SELECT count(DISTINCT minute) FROM transactions").await,
        3,
        "the far minute is not stored"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM anomalies").await, 0);
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", sink.port)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"vigil_sink_dead_letters_total{kind="refused_future"} 2"#), "{metrics}");
    sink.stop().await;
}

/// (minute in ms, category, merchant, total, approved, denied, failed, reversed)
type StoredMerchantMinute = (i64, String, String, i64, i64, i64, i64, i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merchant_minutes_delivered_twice_in_any_order_are_stored_once_with_their_counts() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let once: Vec<MerchantMinute> = (0..10)
        .flat_map(|m| {
            let mut v: Vec<MerchantMinute> = (0..3).map(|k| merchant_minute(m, k, "food")).collect();
            v.push(merchant_minute(m, 0, "travel"));
            v
        })
        .collect();
    // Newest first, then everything again in order: a redelivery after a restart of stage 1 or
    // of the sink.
    let mut twice: Vec<Decoded> = once.iter().rev().cloned().map(Decoded::MerchantMinute).collect();
    twice.extend(once.iter().cloned().map(Decoded::MerchantMinute));
    send(&topics, &twice).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    let metrics = || async {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", sink.port)).await.unwrap().text().await.unwrap()
    };
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        let consumed = metrics().await.contains(r#"vigil_sink_messages_total{kind="merchant_minute"} 80"#);
        (consumed && count(&db.pool, "SELECT count(*) FROM merchant_minutes").await == 40).then_some(())
    })
    .await
    .expect("the sink consumed all 80 messages");
    tokio::time::sleep(Duration::from_secs(2)).await; // the last batch is written
    let written = metrics().await;
    // 40 rows inserted; the second delivery of each changed nothing.
    assert!(written.contains(r#"vigil_sink_rows_written_total{table="merchant_minutes"} 40"#), "{written}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM merchant_minutes").await, 40);
    let expected: i64 = once.iter().map(|r| r.total).sum();
    assert_eq!(count(&db.pool, "SELECT sum(total)::bigint FROM merchant_minutes").await, expected, "no double count");
    let stored: Vec<StoredMerchantMinute> = sqlx::query_as(
        "SELECT (extract(epoch FROM minute) * 1000)::bigint, category, merchant_id, total, approved, denied, failed, reversed
         FROM merchant_minutes ORDER BY 1, 3, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut want: Vec<_> = once
        .iter()
        .map(|r| {
            (
                r.minute_start,
                r.category.clone(),
                r.merchant_id.clone(),
                r.total,
                r.approved,
                r.denied,
                r.failed,
                r.reversed,
            )
        })
        .collect();
    want.sort_by(|a, b| (a.0, &a.2, &a.1).cmp(&(b.0, &b.2, &b.1)));
    assert_eq!(stored, want);
    // The view sums a merchant's categories per minute and gives its rates.
    let (total, denied, rate): (i64, i64, f64) = sqlx::query_as(
        "SELECT total, denied, denied_rate FROM v_merchant_minute WHERE merchant_id = 'm-000' AND minute = $1",
    )
    .bind(chrono::DateTime::from_timestamp_millis(T0).unwrap())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (food, travel) = (merchant_minute(0, 0, "food"), merchant_minute(0, 0, "travel"));
    assert_eq!((total, denied), (food.total + travel.total, food.denied + travel.denied));
    assert!((rate - denied as f64 / total as f64).abs() < 1e-12);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merchant_minute_whose_counts_do_not_add_up_is_dead_lettered_and_its_batch_is_still_written() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let good = merchant_minute(0, 1, "food");
    let bad = MerchantMinute { approved: good.approved + 1, ..merchant_minute(1, 1, "food") };
    send(&topics, &[Decoded::MerchantMinute(bad.clone()), Decoded::MerchantMinute(good.clone())]).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    let dead = vigil_testkit::read_topic(&topics.dead_letter, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    let decoded = vigil_schemas::Codec::single_object().decode::<MerchantMinute>(&dead[0].payload).unwrap();
    assert_eq!(decoded, bad);
    let reason =
        String::from_utf8(dead[0].headers.iter().find(|(k, _)| k == "vigil.error").unwrap().1.clone()).unwrap();
    assert!(reason.starts_with("database refused the row") && reason.contains("check"), "{reason}");
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        (count(&db.pool, "SELECT count(*) FROM merchant_minutes").await == 1).then_some(())
    })
    .await
    .expect("the valid row is written");
    assert_eq!(count(&db.pool, "SELECT total FROM merchant_minutes").await, good.total);
    sink.stop().await;
}

#[tokio::test]
async fn retention_deletes_only_rows_older_than_the_configured_age() {
    let db = vigil_testkit::fresh_database().await;
    sqlx::query(
        "INSERT INTO transactions (minute, status, count)
         SELECT m, 'approved', 1 FROM generate_series(now() - interval '10 days', now(), interval '1 hour') m",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO merchant_minutes (minute, merchant_id, category, total, approved, denied, failed, reversed)
         SELECT m, 'm-1', 'food', 3, 1, 1, 1, 0 FROM generate_series(now() - interval '10 days', now(), interval '1 hour') m",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO volume_minutes (minute, total, expected, expected_low, expected_high)
         SELECT m, 1, 1.5, 0, 5 FROM generate_series(now() - interval '10 days', now(), interval '1 hour') m",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let before = count(&db.pool, "SELECT count(*) FROM transactions").await;
    let metrics = vigil_sink::metrics::SinkMetrics::new(&vigil_common::metrics::Metrics::new("sink"));
    let report =
        vigil_sink::retention::run_once(&db.pool, Some(Duration::from_secs(5 * 86_400)), None, &metrics).await.unwrap();
    let after = count(&db.pool, "SELECT count(*) FROM transactions").await;
    let old = count(&db.pool, "SELECT count(*) FROM transactions WHERE minute < now() - interval '5 days'").await;
    assert_eq!(old, 0);
    assert_eq!(report.iter().find(|(t, _)| *t == "transactions").unwrap().1 as i64, before - after);
    assert!(after > 100 && after < before);
    // The merchant drill-down's minutes go by the same age.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM merchant_minutes WHERE minute < now() - interval '5 days'").await,
        0
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM merchant_minutes").await, after);
    assert_eq!(report.iter().find(|(t, _)| *t == "merchant_minutes").unwrap().1 as i64, before - after);
    // So do the volume panel's.
    assert_eq!(count(&db.pool, "SELECT count(*) FROM volume_minutes").await, after);
    assert_eq!(report.iter().find(|(t, _)| *t == "volume_minutes").unwrap().1 as i64, before - after);
}
