//! A backlog the broker needs seconds to serve is consumed to the end while another partition
//! idles beside it.
//!
//! tansu answers a fetch of a few MB in about 3 s, longer than the 1 s the stage gives a
//! high-watermark query; the idle partition is asked for its watermark every idle timeout. On
//! the consumer's own connection such a query waits behind the fetch, times out, and librdkafka
//! drops the connection with the fetch in it, again and again: the detector stood still with
//! lag (found by the detector benchmark). The queries now go through a client of their own.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;

const T0: i64 = 1_765_713_600_000;

/// (events processed, lag of the partition stage) from the detector's metrics.
async fn processed(http: &reqwest::Client, port: u16) -> Option<(f64, f64)> {
    use vigil_testkit::metric_sum;
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
    Some((
        metric_sum(&text, "vigil_detector_events_total", &[]),
        metric_sum(&text, "vigil_detector_consumer_lag_messages", &[("stage", "partition")]),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_the_broker_takes_seconds_to_serve_is_consumed_while_another_partition_idles() {
    let topics = Topics::fresh(6).await;
    // About 13 MB over partitions 0-4; partition 5 (pharmacy) gets nothing and idles.
    let txs: Vec<_> = stream(11, 10, 17_500, T0).into_iter().filter(|t| t.category != "pharmacy").collect();
    let n = txs.len() as f64;
    produce(&topics.transactions, &txs).await;

    let d = start_in_process(&topics, &vigil_testkit::unique("det"), "1s").await;
    let http = reqwest::Client::new();
    // A bound on liveness, not a speed target: the whole test takes about 25 s here.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let mut last = (0.0, f64::NAN);
    while last.0 < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(p) = processed(&http, d.port).await {
            last = p;
        }
    }
    d.stop().await;
    assert!(
        last.0 >= n,
        "the detector stopped short of the backlog: {} of {n} events processed, lag {}",
        last.0,
        last.1
    );
}
