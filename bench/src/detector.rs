//! Detector figures: throughput against a bare decoding consumer on the same topic, resident
//! memory as events accumulate over 10 000 merchants, and the time from a restart to ready with
//! 30 minutes of history at 5 000 events/s.

use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use vigil_detector::core::{CoreConfig, PartitionState, Pipeline};
use vigil_detector::service::checkpoint::CheckpointStore;
use vigil_schemas::{Codec, Transaction};

use crate::report::{publish, rate, rss_mib};
use crate::workload;

type Topics = vigil_testkit::PipelineTopics;

fn args(topics: &Topics, group: &str) -> Vec<String> {
    let mut a = vec!["detector".to_string(), "--bind=127.0.0.1:0".into()];
    a.extend(topics.detector_flags());
    a.extend([format!("--consumer-group={group}"), "--checkpoint-interval=5m".into(), "--idle-timeout=10s".into()]);
    a
}

pub async fn run(events: usize, memory_events: usize) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    memory(memory_events, &mut lines);
    // The machine is shared with the broker and the database: take the median of three runs.
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(throughput(events).await?);
    }
    runs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
    let (bare, detector) = runs[1];
    lines.push(format!(
        "throughput on one topic of {events} events (6 partitions, broker {}), median of 3 runs:",
        vigil_testkit::brokers()
    ));
    lines.push(format!("  bare consumer, decode only: {bare:>9.0} events/s"));
    lines.push(format!("  detector (both stages):     {detector:>9.0} events/s"));
    lines.push(format!(
        "  ratio detector/bare = {:.2} (target >= 0.8); all runs: {}",
        detector / bare,
        runs.iter().map(|(b, d)| format!("{:.2}", d / b)).collect::<Vec<_>>().join(", ")
    ));
    restart(&mut lines).await?;
    publish("detector", &lines);
    Ok(())
}

/// Resident memory of the core (both stages, as one detector process runs them) over a stream
/// at 1 000 events/s of event time across 10 000 merchants.
fn memory(n: usize, lines: &mut Vec<String>) {
    let start_ms = 1_765_713_600_000;
    let mut p = Pipeline::new(CoreConfig::default(), 6);
    let before = rss_mib();
    let checkpoints = [1_000_000, 2_000_000, 3_000_000, 5_000_000, 10_000_000];
    lines.push(format!(
        "memory (core, 6 partitions, 10 000 merchants, 1 000 events/s of event time; RSS at start {before:.0} MiB):"
    ));
    for (i, tx) in workload::transactions(2, n, 1000, start_ms, 10_000).enumerate() {
        p.push(&tx);
        if checkpoints.contains(&(i + 1)) {
            lines.push(format!("  after {:>9} events: RSS {:>6.0} MiB", i + 1, rss_mib()));
        }
    }
}

async fn produce(topic: &str, txs: &[Transaction]) -> anyhow::Result<()> {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(60)).create()?;
    let codec = Codec::single_object();
    let mut pending = Vec::new();
    for t in txs {
        let payload = codec.encode(t)?;
        loop {
            match producer
                .send_result(FutureRecord::to(topic).key(&t.category).payload(&payload).timestamp(t.occurred_at))
            {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// (bare consumer events/s, detector events/s) on one fresh topic of `n` events.
async fn throughput(n: usize) -> anyhow::Result<(f64, f64)> {
    let topics = Topics::fresh(6).await;
    let start_ms = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let txs: Vec<_> = workload::transactions(3, n, 5000, start_ms, 10_000).collect();
    produce(&topics.transactions, &txs).await?;

    // A bare consumer that only decodes.
    let topic = topics.transactions.clone();
    let bare = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = vigil_testkit::kafka().consumer_config(&vigil_testkit::unique("bare")).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let codec = Codec::single_object();
        let mut seen = 0;
        let mut start = None;
        while seen < n {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                start.get_or_insert_with(Instant::now);
                let _: Transaction = codec.decode(m.payload().unwrap_or_default()).unwrap();
                seen += 1;
            }
        }
        rate(n, start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0))
    })
    .await?;

    // The detector, in-process, timed from its first processed event to its last.
    let config = vigil_detector::Config::from_args(&vigil_detector::Args::parse_from(args(
        &topics,
        &vigil_testkit::unique("bench"),
    )))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = vigil_detector::Application::build(config).await?;
    let url = format!("http://127.0.0.1:{}/metrics", app.port());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    let http = reqwest::Client::new();
    let mut first: Option<(Instant, f64)> = None;
    let detector = loop {
        let text = match http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let done: f64 = text
            .lines()
            .filter(|l| l.starts_with("vigil_detector_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if done > 0.0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= n as f64 {
            let (t, d0) = first.unwrap_or((Instant::now(), 0.0));
            break (n as f64 - d0) / t.elapsed().as_secs_f64().max(1e-3);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    let _ = task.await;
    Ok((bare, detector))
}

/// 30 minutes at 5 000 events/s (9 M events) go through stage 1; its state is checkpointed as
/// the service would; then a detector starts on those checkpoints and the time to /ready is
/// measured.
async fn restart(lines: &mut Vec<String>) -> anyhow::Result<()> {
    let topics = Topics::fresh(6).await;
    let cfg = CoreConfig::default();
    let router = Pipeline::new(cfg.clone(), 6);
    let mut states: Vec<PartitionState> = (0..6).map(|p| PartitionState::new(p, 6)).collect();
    let start_ms = chrono::Utc::now().timestamp_millis() - 1_800_000;
    let n = 30 * 60 * 5000;
    let t = Instant::now();
    for tx in workload::transactions(4, n, 5000, start_ms, 10_000) {
        let p = router.partition_of(&tx) as usize;
        states[p].process(&tx, tx.occurred_at, &cfg);
    }
    let build = t.elapsed().as_secs_f64();
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(60)).create()?;
    let mut store = CheckpointStore::new(&vigil_testkit::kafka(), &topics.checkpoints, producer)?;
    let mut bytes = 0;
    let mut dedup = 0;
    for (p, s) in states.iter().enumerate() {
        let state = postcard_encode(s)?;
        bytes += state.len();
        dedup += s.dedup_entries();
        store.save(p as i32, 0, &state)?;
    }
    let group = vigil_testkit::unique("bench");
    let config = vigil_detector::Config::from_args(&vigil_detector::Args::parse_from(args(&topics, &group)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let app = vigil_detector::Application::build(config).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/ready")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = t.elapsed().as_secs_f64();
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await?.text().await?;
    let restore: f64 = text
        .lines()
        .filter(|l| l.starts_with("vigil_detector_restore_duration_seconds_sum{stage=\"partition\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    stop.cancel();
    let _ = task.await;
    lines.push(format!(
        "restart with 30 min of history at 5 000 events/s ({n} events, built in {build:.0} s): checkpoints {:.0} MiB ({dedup} remembered ids)",
        bytes as f64 / 1_048_576.0
    ));
    lines.push(format!("  start to ready: {ready:.1} s (target <= 10 s), of which reading and decoding checkpoints: {restore:.1} s; the rest is joining the group"));
    Ok(())
}

fn postcard_encode(s: &PartitionState) -> anyhow::Result<Vec<u8>> {
    Ok(vigil_detector::service::checkpoint::encode_state(s)?)
}
