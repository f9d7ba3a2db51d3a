//! A live feed stamped behind the clock keeps its minutes through pauses; a back-fill still
//! closes as soon as it goes quiet (see the README's "Windows and watermarks").
//!
//! Records are written straight to the broker with the record timestamp the producer service
//! would give them: the wall clock when sent.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use vigil_schemas::{Codec, Decoded, Transaction, TransactionStatus};

const BEHIND: i64 = 3 * MINUTE;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn transaction(seq: u64, occurred_at: i64) -> Transaction {
    let category = ["food", "travel"][(seq % 2) as usize];
    Transaction {
        transaction_id: uuid::Uuid::from_u64_pair(0x0de1a7ed, seq).to_string(),
        occurred_at,
        status: if seq % 20 == 0 { TransactionStatus::Denied } else { TransactionStatus::Approved },
        auth_code: if seq % 20 == 0 { "05".into() } else { "00".into() },
        amount_minor: 1000 + (seq % 97) as i64,
        currency: "EUR".into(),
        category: category.into(),
        merchant_id: format!("m-{}", seq % 5),
        received_at: 0,
    }
}

/// Sends one transaction to partition `seq % 2`, its record stamped with the wall clock.
async fn send(producer: &FutureProducer, codec: &Codec, topic: &str, tx: &Transaction, seq: u64, record_ts: i64) {
    let payload = codec.encode(tx).unwrap();
    let record =
        FutureRecord::to(topic).key(&tx.category).partition((seq % 2) as i32).payload(&payload).timestamp(record_ts);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
}

/// The sum of a metric's series (no labels selected) on the detector's `/metrics`.
async fn metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
    let value = |l: &str| {
        let (series, value) = l.rsplit_once(' ')?;
        (series.split('{').next() == Some(name)).then(|| value.parse::<f64>().ok()).flatten()
    };
    Some(text.lines().filter(|l| !l.starts_with('#')).filter_map(value).sum())
}

/// The final minutes on the minutes topic: minute start → total.
fn final_minutes(topics: &Topics) -> BTreeMap<i64, i64> {
    let codec = Codec::single_object();
    vigil_testkit::read_topic_all(&topics.minutes, Duration::from_secs(2))
        .iter()
        .filter_map(|r| match codec.decode_any(&r.payload).ok()? {
            Decoded::MinuteAggregate(a) => Some((a.minute_start, a.total)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_feed_three_minutes_behind_the_clock_keeps_its_minutes_through_30_second_pauses() {
    let topics = Topics::fresh(2).await;
    let d = start_in_process(&topics, &vigil_testkit::unique("det"), "2s").await;
    wait_ready(d.port).await;
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    let codec = Codec::single_object();
    let http = reqwest::Client::new();

    // Three bursts of 25 s at 20 events/s, each followed by a 30 s pause (the last one is where
    // the feed stops for good), every event stamped 3 minutes before it is sent.
    let mut seq = 0u64;
    let mut last_event = 0;
    for burst in 0..3 {
        let until = Instant::now() + Duration::from_secs(25);
        while Instant::now() < until {
            let now = now_ms();
            last_event = now - BEHIND;
            send(&producer, &codec, &topics.transactions, &transaction(seq, last_event), seq, now).await;
            seq += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if burst < 2 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
    let n = seq as f64;
    let processed = vigil_testkit::eventually(Duration::from_secs(60), || async {
        metric(&http, d.port, "vigil_detector_events_total").await.filter(|p| *p >= n)
    })
    .await;
    assert!(processed.is_some(), "the detector processed all {n} events");
    let late = metric(&http, d.port, "vigil_detector_late_events_total").await.unwrap();
    eprintln!("late: {late} of {n} events ({:.2} %)", 100.0 * late / n);
    assert!(late <= 0.01 * n, "{late} of {n} events booked late (at most 1 %)");

    // The feed has stopped: its last minute is closed once the wall clock is past the minute's
    // end plus the delay (3 minutes and a little) plus the allowed lateness (30 s).
    let last_minute = last_event.div_euclid(MINUTE) * MINUTE;
    let due = last_minute + MINUTE + BEHIND + 30_000;
    let wait = Duration::from_millis((due - now_ms()).max(0) as u64) + Duration::from_secs(60);
    let minutes = vigil_testkit::eventually(wait, || async {
        let m = tokio::task::spawn_blocking({
            let topics = topics.clone();
            move || final_minutes(&topics)
        })
        .await
        .unwrap();
        m.contains_key(&last_minute).then_some(m)
    })
    .await;
    let closed_at = now_ms();
    let minutes = minutes.expect("the stopped feed's last minute is closed");
    eprintln!("last minute closed {} s after it was due", (closed_at - due) / 1000);
    let counted: i64 = minutes.values().sum();
    assert_eq!(counted as f64 + late, n, "every event is in a final minute or booked late: {minutes:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_back_fill_closes_its_minutes_as_soon_as_it_goes_quiet() {
    let topics = Topics::fresh(2).await;
    let d = start_in_process(&topics, &vigil_testkit::unique("det"), "2s").await;
    wait_ready(d.port).await;
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    let codec = Codec::single_object();

    // 16 minutes of history ending 3 minutes ago, as the fault suite and `make run` send it:
    // all at once, each record stamped when sent. Its last minute is not closed by the delay it
    // appears to have, but as soon as the partitions go quiet.
    let end = (now_ms() - BEHIND).div_euclid(MINUTE) * MINUTE;
    let start = end - 16 * MINUTE;
    let per_minute = 120;
    let mut pending = Vec::new();
    for i in 0..16 * per_minute {
        let tx = transaction(i as u64, start + i * MINUTE / per_minute);
        let payload = codec.encode(&tx).unwrap();
        let record = FutureRecord::to(&topics.transactions)
            .key(&tx.category)
            .partition((i % 2) as i32)
            .payload(&payload)
            .timestamp(now_ms());
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for r in futures::future::join_all(pending).await {
        r.unwrap().unwrap();
    }
    let sent = Instant::now();
    let minutes = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let m = tokio::task::spawn_blocking({
            let topics = topics.clone();
            move || final_minutes(&topics)
        })
        .await
        .unwrap();
        (m.len() == 16).then_some(m)
    })
    .await;
    let minutes = minutes.expect("all 16 minutes final");
    eprintln!("16 minutes final {:.1} s after the back-fill was sent", sent.elapsed().as_secs_f64());
    assert!(sent.elapsed() < Duration::from_secs(40), "closed at once, not after the apparent delay");
    assert!(minutes.values().all(|t| *t == per_minute), "{minutes:?}");
    d.stop().await;
}
