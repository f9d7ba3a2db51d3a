//! A detector restart must not change what was counted before it: the deterministic case the
//! fault suite found by chance.
//!
//! A partition that receives nothing for `IDLE_TIMEOUT` closes its open minute (wall clock);
//! events for that minute that arrive afterwards are booked as late, cumulatively. A detector
//! that is killed and replays its input from an older checkpoint sees those records without the
//! pause, so it counts them in the window instead, and the merge stage ignores that window as a
//! re-send; its late counter starts again from zero. Unless the idle close is checkpointed at
//! once, events are then lost from the books.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use vigil_chaos::services::Kind;
use vigil_chaos::stack::{Stack, StackOptions};
use vigil_chaos::{books, traffic};

fn events(minute: i64, n: usize, from_second: i64) -> serde_json::Value {
    traffic::events(minute, n, from_second, &["grocery"])
}

async fn post(stack: &Stack, body: serde_json::Value) {
    traffic::post_all(&stack.http, &stack.url("producer"), &body).await;
}

async fn wait_counted(stack: &Stack, want: i64, timeout: Duration) -> i64 {
    let got = vigil_testkit::eventually(timeout, || async {
        let c = books::counted(&stack.pool).await.ok()?;
        (c.total() >= want).then_some(c.total())
    })
    .await;
    match got {
        Some(n) => n,
        None => books::counted(&stack.pool).await.map(|c| c.total()).unwrap_or(-1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_events_after_an_idle_close_stay_counted_across_a_detector_kill() {
    let mut opts = StackOptions::new("detector-restart");
    opts.own_infrastructure = false;
    opts.outbound = false;
    opts.idle_timeout = "1s".into();
    // No periodic checkpoint during the test: only what the detector writes on its own events.
    opts.env.push((Kind::Detector, "CHECKPOINT_INTERVAL".into(), "1h".into()));
    let mut stack = Stack::start(opts).await;
    // Twenty minutes back: further behind than any delay the detector grants a live feed (15
    // minutes), so the partition's quiet minute is closed at once rather than held for a feed
    // that trails the clock by ten minutes.
    let minute = (Utc::now().timestamp_millis() / 60_000 - 20) * 60_000;

    post(&stack, events(minute, 10, 1)).await;
    assert_eq!(wait_counted(&stack, 10, Duration::from_secs(60)).await, 10, "the idle close makes the minute final");
    post(&stack, events(minute, 5, 20)).await;
    assert_eq!(wait_counted(&stack, 15, Duration::from_secs(60)).await, 15, "5 late events are booked");

    stack.kill9("detector-1", "kill -9 by the test");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.wait_ready(Duration::from_secs(120)).await.unwrap();
    post(&stack, events(minute, 3, 40)).await;
    let counted = wait_counted(&stack, 18, Duration::from_secs(45)).await;
    stack.shutdown();
    assert_eq!(counted, 18, "18 accepted events must be counted once each after the restart");
}
