//! Poison messages on every topic the pipeline consumes: garbage, truncated Avro, valid Avro of
//! the wrong schema, and an event from the far future. Each must be dead-lettered with its
//! reason and origin (`vigil-dead-letter`, headers `vigil.error`, `vigil.stage`,
//! `vigil.source.*`), counted in the metrics, and the pipeline must go on: every valid event
//! around the poison is counted exactly once. The webhook's anomaly forwarder reads
//! `anomalies` too; it skips what it cannot decode (the sink dead-letters it).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};
use vigil_chaos::books::{self, metric_sum, Record};
use vigil_chaos::stack::{Stack, StackOptions};
use vigil_chaos::traffic;
use vigil_schemas::{
    Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Codec, MinuteAggregate, MinutePartial, PartialKind, Severity,
    Transaction, TransactionStatus,
};

const YEAR_MS: i64 = 365 * 24 * 3_600_000;
const CATEGORIES: [&str; 12] = [
    "grocery", "fuel", "travel", "books", "pharmacy", "clothing", "toys", "music", "garden", "pets", "sports", "tools",
];

fn transaction(occurred_at: i64) -> Transaction {
    Transaction {
        transaction_id: uuid::Uuid::new_v4().to_string(),
        occurred_at,
        status: TransactionStatus::Approved,
        auth_code: "00".into(),
        amount_minor: 1250,
        currency: "EUR".into(),
        category: "grocery".into(),
        merchant_id: "m-1".into(),
        received_at: Utc::now().timestamp_millis(),
    }
}

fn aggregate(minute: i64, total: i64) -> MinuteAggregate {
    MinuteAggregate {
        minute_start: minute,
        total,
        approved: total,
        denied: 0,
        failed: 0,
        reversed: 0,
        auth_codes: BTreeMap::from([("00".to_string(), total)]),
        categories: Vec::new(),
        source_partitions: 6,
        expected_total: None,
        expected_low: None,
        expected_high: None,
    }
}

fn partial(minute: i64) -> MinutePartial {
    MinutePartial {
        source_partition: 0,
        partition_count: 6,
        kind: PartialKind::Window,
        watermark: minute + 60_000,
        minute_start: Some(minute),
        approved: 1000,
        denied: 0,
        failed: 0,
        reversed: 0,
        auth_codes: BTreeMap::from([("00".to_string(), 1000)]),
        categories: Vec::new(),
    }
}

fn anomaly(at: i64) -> Anomaly {
    Anomaly {
        id: format!("denied_rate:global:all:poison-{at}"),
        sequence: 0,
        rule: AnomalyRule::DeniedRate,
        dimension: AnomalyDimension::Global,
        dimension_value: "all".into(),
        window_start: Some(at),
        window_end: Some(at + 60_000),
        transaction_id: None,
        category: None,
        merchant_id: None,
        observed: 0.9,
        observed_count: 900,
        observed_total: 1000,
        baseline_mean: 0.05,
        baseline_stddev: 0.01,
        baseline_n: 30,
        scored_on: "rate".into(),
        score: 85.0,
        p_value: Some(1e-30),
        threshold: 4.0,
        severity: Severity::Critical,
        state: AnomalyState::Firing,
        message: "poison".into(),
        first_seen: at,
        last_updated: at,
        resolved_at: None,
    }
}

/// One poison message: where it went and what should become of it.
struct Poison {
    topic: String,
    kind: &'static str,
    partition: i32,
    offset: i64,
}

async fn produce(p: &FutureProducer, topic: &str, kind: &'static str, payload: Vec<u8>) -> Poison {
    let key = format!("poison-{kind}");
    let record: FutureRecord<'_, String, Vec<u8>> = FutureRecord::to(topic).key(&key).payload(&payload).partition(0);
    let (partition, offset) = p
        .send(record, Duration::from_secs(30))
        .await
        .map(|d| (d.partition, d.offset))
        .unwrap_or_else(|(e, _)| panic!("cannot produce to {topic}: {e}"));
    Poison { topic: topic.to_owned(), kind, partition, offset }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_on_every_consumed_topic_is_dead_lettered_and_the_pipeline_goes_on() {
    let mut opts = StackOptions::new("poison");
    opts.own_infrastructure = false;
    opts.idle_timeout = "1s".into();
    let mut stack = Stack::start(opts).await;
    let producer_url = stack.url("producer");
    let now = Utc::now().timestamp_millis();
    let minute = (now / 60_000 - 10) * 60_000;
    let future = (now / 60_000) * 60_000 + YEAR_MS;

    // Valid traffic before the poison.
    traffic::post_all(&stack.http, &producer_url, &traffic::events(minute, 60, 0, &CATEGORIES)).await;

    let codec = Codec::single_object();
    let kafka = stack.kafka();
    let p: FutureProducer = kafka.producer_config(Duration::from_secs(30)).create().unwrap();
    let t = stack.topics.clone();
    let garbage = b"\x00\x00\x00\x00\x07this is not Avro at all \xff\xfe".to_vec();
    let truncated = |bytes: Vec<u8>| bytes[..bytes.len() / 2].to_vec();
    let mut poisons = Vec::new();
    for (topic, right, wrong, far) in [
        (
            &t.transactions,
            codec.encode(&transaction(now)).unwrap(),
            codec.encode(&aggregate(minute, 3)).unwrap(),
            codec.encode(&transaction(future)).unwrap(),
        ),
        (
            &t.partials,
            codec.encode(&partial(minute)).unwrap(),
            codec.encode(&transaction(now)).unwrap(),
            codec.encode(&partial(future)).unwrap(),
        ),
        (
            &t.minutes,
            codec.encode(&aggregate(minute, 3)).unwrap(),
            codec.encode(&transaction(now)).unwrap(),
            codec.encode(&aggregate(future, 1000)).unwrap(),
        ),
        (
            &t.anomalies,
            codec.encode(&anomaly(minute)).unwrap(),
            codec.encode(&aggregate(minute, 3)).unwrap(),
            codec.encode(&anomaly(future)).unwrap(),
        ),
    ] {
        poisons.push(produce(&p, topic, "garbage", garbage.clone()).await);
        poisons.push(produce(&p, topic, "truncated", truncated(right)).await);
        poisons.push(produce(&p, topic, "wrong-schema", wrong).await);
        poisons.push(produce(&p, topic, "far-future", far).await);
    }

    // Valid traffic after it, a minute later.
    traffic::post_all(&stack.http, &producer_url, &traffic::events(minute + 60_000, 60, 0, &CATEGORIES)).await;

    // Every poison dead-lettered, with its reason and origin.
    let dl_topic = t.dead_letter.clone();
    let k = kafka.clone();
    let dead: Vec<Record> = vigil_testkit::eventually(Duration::from_secs(90), || {
        let (k, dl) = (k.clone(), dl_topic.clone());
        async move {
            let r = tokio::task::spawn_blocking(move || books::read_all(&k, &dl, Duration::from_secs(20)))
                .await
                .ok()?
                .ok()?;
            // 16 poisons; those on transactions are dead-lettered twice, by the detector and by
            // the sink (which stores transactions).
            (r.len() >= 20).then_some(r)
        }
    })
    .await
    .unwrap_or_else(|| {
        tokio::task::block_in_place(|| books::read_all(&kafka, &t.dead_letter, Duration::from_secs(20))).unwrap()
    });
    let mut missing = Vec::new();
    let mut report = Vec::new();
    for poison in &poisons {
        let found = dead.iter().find(|r| {
            r.header("vigil.source.topic") == Some(&poison.topic)
                && r.header("vigil.source.partition") == Some(&poison.partition.to_string())
                && r.header("vigil.source.offset") == Some(&poison.offset.to_string())
        });
        let base = poison.topic.split("-c-").next().unwrap_or("");
        match found {
            Some(r) => {
                assert!(r.header("vigil.stage").is_some_and(|s| !s.is_empty()), "no stage on {:?}", r.headers);
                assert!(r.header("vigil.error").is_some_and(|s| !s.is_empty()), "no reason on {:?}", r.headers);
                report.push(format!(
                    "{base:<12} {:<12} -> dead-lettered by {} ({})",
                    poison.kind,
                    r.header("vigil.stage").unwrap_or(""),
                    r.header("vigil.error").unwrap_or("").chars().take(90).collect::<String>()
                ));
            }
            None => {
                missing.push(format!("{base} {}", poison.kind));
                report.push(format!("{base:<12} {:<12} -> NOT dead-lettered", poison.kind));
            }
        }
    }
    println!("Poison messages:\n  {}", report.join("\n  "));

    // The pipeline went on: every valid event counted once, nothing else.
    let counted = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let c = books::counted(&stack.pool).await.ok()?;
        (c.total() == 120).then_some(c)
    })
    .await;
    let final_count = books::counted(&stack.pool).await.unwrap();

    // The metrics say so.
    let detector = stack.metrics("detector-1").await;
    let sink = stack.metrics("sink").await;
    let webhook = stack.metrics("webhook").await;
    let detector_dl = metric_sum(&detector, "vigil_detector_dead_letters_total", &[]);
    let sink_dl = metric_sum(&sink, "vigil_sink_dead_letters_total", &[]);
    let webhook_undecodable =
        metric_sum(&webhook, "vigil_webhook_anomalies_consumed_total", &[("outcome", "undecodable")]);
    let webhook_future =
        metric_sum(&webhook, "vigil_webhook_anomalies_consumed_total", &[("outcome", "refused_future")]);
    println!(
        "Metrics: vigil_detector_dead_letters_total {detector_dl}, vigil_sink_dead_letters_total {sink_dl}, \
         vigil_webhook_anomalies_consumed_total{{outcome=\"undecodable\"}} {webhook_undecodable}, \
         {{outcome=\"refused_future\"}} {webhook_future}"
    );
    println!("Counted: {final_count:?} (120 valid events sent)");
    let forwarded = stack.receiver.as_ref().map(|r| r.received.snapshot()).unwrap_or_default();
    println!("Webhook forwarded: {:?}", forwarded.keys().collect::<Vec<_>>());
    stack.shutdown();

    assert!(missing.is_empty(), "not dead-lettered: {missing:?}");
    assert!(
        counted.is_some(),
        "the 120 valid events around the poison must be counted exactly once; counted {final_count:?}"
    );
    assert_eq!(detector_dl, 8.0, "the detector dead-letters 4 transactions and 4 partials");
    assert_eq!(sink_dl, 12.0, "the sink dead-letters 4 on tx-minute, 4 on anomalies and 4 on transactions");
    assert_eq!(webhook_undecodable, 3.0, "the forwarder skips the three undecodable anomalies");
    assert_eq!(webhook_future, 1.0, "and the one from the far future");
    assert!(
        !forwarded.keys().any(|id| id.contains("poison")),
        "the forwarder must not send a poison anomaly out: {forwarded:?}"
    );
}
