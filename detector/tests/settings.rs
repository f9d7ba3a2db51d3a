//! Rule settings changed at run time (`detector-settings`): applied from their minute of event
//! time, the same by one instance or two sharing the partitions, and not before.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use vigil_schemas::settings::{AmountOverrides, RuleSettings};
use vigil_schemas::Transaction;

/// 2025-12-14T12:00:00Z.
const T0: i64 = 1_765_713_600_000;
const MINUTES: i64 = 40;
/// From minute 30 on, no baseline is large enough to judge: the amount rule is off.
const FROM: i64 = T0 + 30 * MINUTE;

async fn publish(topic: &str, r: &RuleSettings) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(10)).create().unwrap();
    let payload = serde_json::to_string(r).unwrap();
    producer
        .send(FutureRecord::to(topic).key(&r.key()).payload(&payload).partition(0), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

fn record() -> RuleSettings {
    RuleSettings {
        scope: "global".into(),
        effective_from: FROM,
        amount: AmountOverrides { min_samples: Some(10_000_000), ..Default::default() },
        actor: "test".into(),
        comment: "amount rule off from minute 30".into(),
    }
}

/// Runs `instances` detectors over the stream (with or without the settings record) and
/// returns their outputs.
async fn run(instances: usize, with_settings: bool) -> BTreeSet<String> {
    let topics = Topics::fresh(6).await;
    if with_settings {
        publish(&topics.settings, &record()).await;
    }
    let txs: Vec<Transaction> = stream(5, MINUTES, 90, T0);
    let group = vigil_testkit::unique("det");
    let mut running = Vec::new();
    for _ in 0..instances {
        running.push(start_in_process(&topics, &group, "5s").await);
    }
    produce(&topics.transactions, &txs).await;
    let out = outputs(&topics, MINUTES as usize - 1);
    for d in running {
        d.stop().await;
    }
    out
}

/// The event times of the transactions the amount anomalies among `outputs` name.
fn amount_times(outputs: &BTreeSet<String>) -> Vec<i64> {
    let txs = stream(5, MINUTES, 90, T0);
    outputs
        .iter()
        .filter(|o| o.contains("AmountZscore") || o.contains("AmountLowVariance"))
        .filter_map(|o| {
            let id = o.split("transaction_id: Some(\"").nth(1)?.split('"').next()?;
            txs.iter().find(|t| t.transaction_id == id).map(|t| t.occurred_at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settings_record_applies_from_its_minute_the_same_on_one_instance_or_two() {
    let without = run(1, false).await;
    let times = amount_times(&without);
    assert!(times.iter().any(|t| *t >= FROM), "the control run flags amounts after minute 30: {times:?}");
    assert!(times.iter().any(|t| *t < FROM), "and before it");

    let one = run(1, true).await;
    let times = amount_times(&one);
    assert!(!times.is_empty() && times.iter().all(|t| *t < FROM), "amount anomalies only before minute 30: {times:?}");
    // Everything else is as without the settings: the rate and volume rules did not change.
    let not_amount = |s: &BTreeSet<String>| -> BTreeSet<String> {
        s.iter().filter(|o| !o.contains("AmountZscore") && !o.contains("AmountLowVariance")).cloned().collect()
    };
    assert_eq!(not_amount(&one), not_amount(&without));

    let two = run(2, true).await;
    let only_one: Vec<_> = one.difference(&two).take(3).collect();
    let only_two: Vec<_> = two.difference(&one).take(3).collect();
    assert!(only_one.is_empty() && only_two.is_empty(), "outputs differ:\n one: {only_one:#?}\n two: {only_two:#?}");
}
