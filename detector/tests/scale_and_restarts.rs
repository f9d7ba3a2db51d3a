//! The detector gives the same answers whether it runs as one process or three, rebalanced
//! mid-stream, killed with SIGKILL and restarted, and whether events are delivered once or twice.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;

/// 2025-12-14T12:00:00Z: event time is fixed, so every run sees the same stream.
const T0: i64 = 1_765_713_600_000;
const MINUTES: i64 = 45;

async fn reference() -> std::collections::BTreeSet<String> {
    let topics = Topics::fresh(6).await;
    produce(&topics.transactions, &stream(7, MINUTES, 120, T0)).await;
    let d = start_in_process(&topics, &vigil_testkit::unique("det"), "5s").await;
    let out = outputs(&topics, MINUTES as usize);
    d.stop().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outputs_are_identical_with_one_or_three_instances_rebalanced_mid_stream() {
    let one = reference().await;
    assert_eq!(count_kind(&one, "MinuteAggregate"), MINUTES as usize, "one aggregate per minute");
    assert!(count_kind(&one, "rule: DeniedRate, dimension: Global") >= 2, "the denied spike fires and resolves");
    assert!(count_kind(&one, "AmountZscore") >= 1, "amount outliers are flagged");

    let topics = Topics::fresh(6).await;
    let group = vigil_testkit::unique("det");
    let txs = stream(7, MINUTES, 120, T0);
    let (first, second) = txs.split_at(txs.len() / 2);
    produce(&topics.transactions, first).await;
    let a = start_in_process(&topics, &group, "5s").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = start_in_process(&topics, &group, "5s").await;
    produce(&topics.transactions, second).await;
    let c = start_in_process(&topics, &group, "5s").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.stop().await; // leaves mid-stream: its partitions move again
    let three = outputs(&topics, MINUTES as usize);
    a.stop().await;
    c.stop().await;
    let only_one: Vec<_> = one.difference(&three).take(3).collect();
    let only_three: Vec<_> = three.difference(&one).take(3).collect();
    assert!(
        only_one.is_empty() && only_three.is_empty(),
        "outputs differ:\n 1 instance only: {only_one:#?}\n 3 instances only: {only_three:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_detector_killed_with_sigkill_and_restarted_gives_the_outputs_of_an_uninterrupted_run_and_duplicates_count_once(
) {
    let uninterrupted = reference().await;

    let topics = Topics::fresh(6).await;
    let group = vigil_testkit::unique("det");
    let txs = stream(7, MINUTES, 120, T0);
    let (first, second) = txs.split_at(txs.len() / 2);
    // Every event of the first half is delivered twice (a client retry that got through twice).
    let mut doubled: Vec<_> = first.iter().flat_map(|t| [t.clone(), t.clone()]).collect();
    doubled.sort_by_key(|t| t.occurred_at);
    produce(&topics.transactions, &doubled).await;

    let spawn = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_detector"));
        // An idle timeout longer than the pause around the kill: this test is about the kill,
        // not about a stream that stops (where wall-clock idleness closes windows by design).
        // Static membership: the restarted process takes its partitions back at once; with
        // dynamic membership tansu 0.6.0 never hands a dead member's partitions to a new one.
        cmd.arg(format!("--bind=127.0.0.1:{}", vigil_testkit::free_port()))
            .args(args(&topics, &group, "15s"))
            .env("CONSUMER_INSTANCE_ID", "detector-0")
            .env("RUST_LOG", "warn");
        cmd.spawn().unwrap()
    };
    let mut child = spawn();
    // Let it get well into the stream (and checkpoint), then kill it without warning.
    let progressed =
        vigil_testkit::read_until_stable(&topics.minutes, 10, Duration::from_millis(1), Duration::from_secs(60));
    assert!(progressed.len() >= 10, "the detector made no progress before the kill");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    produce(&topics.transactions, second).await;
    let mut child = spawn();
    let restarted = outputs(&topics, MINUTES as usize);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop after SIGTERM, got {status}");

    let missing: Vec<_> = uninterrupted.difference(&restarted).take(3).collect();
    let extra: Vec<_> = restarted.difference(&uninterrupted).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "outputs differ after kill -9:\n missing: {missing:#?}\n extra: {extra:#?}"
    );
}

/// A process killed while it writes a checkpoint leaves a partial one on the broker; the next
/// restore takes the newest complete checkpoint before it, and the next write keeps both
/// readable (the compaction side of this is tested on a model in `service::checkpoint`).
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_cut_short_by_a_crash_leaves_the_one_before_it_to_restore() {
    use vigil_detector::service::checkpoint::{CheckpointStore, Restored, CHECKPOINT_VERSION};

    let topics = Topics::fresh(1).await;
    let kafka = vigil_testkit::kafka();
    let store = || {
        let producer = kafka.producer_config(Duration::from_secs(30)).create().unwrap();
        CheckpointStore::new(&kafka, &topics.checkpoints, producer).unwrap()
    };
    // Three chunks of 512 KiB and a bit, each state distinct.
    let state = |tag: u8| -> Vec<u8> { (0..1_200_000u32).map(|i| (i % 251) as u8 ^ tag).collect() };
    let (a, b, c) = (state(1), state(2), state(3));

    let mut first = store();
    assert_eq!(first.load(0).unwrap(), None, "a fresh topic holds no checkpoint");
    first.save(0, 100, &a).unwrap();
    first.save_interrupted(0, 200, &b, 2).unwrap(); // killed after two of three chunks
    drop(first);

    let mut second = store();
    assert_eq!(
        second.load(0).unwrap(),
        Some(Restored { version: CHECKPOINT_VERSION, input_offset: 100, state: a.clone() })
    );
    second.save_interrupted(0, 200, &b, 1).unwrap(); // and again, after one chunk
    drop(second);

    let mut third = store();
    assert_eq!(third.load(0).unwrap(), Some(Restored { version: CHECKPOINT_VERSION, input_offset: 100, state: a }));
    third.save(0, 300, &c).unwrap();
    drop(third);
    assert_eq!(store().load(0).unwrap(), Some(Restored { version: CHECKPOINT_VERSION, input_offset: 300, state: c }));
}
