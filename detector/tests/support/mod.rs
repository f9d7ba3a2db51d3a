//! Detector test harness: fresh topics, a deterministic transaction stream written straight to
//! the broker, detectors in-process or as real processes, and their outputs read back.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_schemas::{Codec, Decoded, Transaction, TransactionStatus};

pub const MINUTE: i64 = 60_000;
pub const CATEGORIES: [&str; 7] = ["food", "travel", "fuel", "grocery", "electronics", "pharmacy", "books"];

pub use vigil_testkit::PipelineTopics as Topics;

/// The service's flags for these topics, a group and an idle timeout.
pub fn args(topics: &Topics, group: &str, idle: &str) -> Vec<String> {
    let mut a = topics.detector_flags();
    a.extend([
        format!("--consumer-group={group}"),
        format!("--idle-timeout={idle}"),
        "--commit-interval=200ms".into(),
        "--checkpoint-interval=1s".into(),
    ]);
    a
}

pub struct InProcess {
    pub port: u16,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn start_in_process(topics: &Topics, group: &str, idle: &str) -> InProcess {
    let mut argv = vec!["detector".to_string(), "--bind=127.0.0.1:0".into()];
    argv.extend(args(topics, group, idle));
    let config = vigil_detector::Config::from_args(&vigil_detector::Args::parse_from(argv)).unwrap();
    let app = vigil_detector::Application::build(config).await.unwrap();
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    InProcess { port, stop, task }
}

/// `minutes` of traffic at `per_minute`, a denied spike at minute 32 for 3 minutes, and a few
/// amount outliers; deterministic for the seed.
pub fn stream(seed: u64, minutes: i64, per_minute: usize, t0: i64) -> Vec<Transaction> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let categories = CATEGORIES;
    let mut out = Vec::new();
    for m in 0..minutes {
        let denied = if (32..35).contains(&m) { 0.35 } else { 0.04 };
        for i in 0..per_minute {
            let status = if rng.gen_bool(denied) {
                TransactionStatus::Denied
            } else if rng.gen_bool(0.02) {
                TransactionStatus::Failed
            } else {
                TransactionStatus::Approved
            };
            let cat = categories[rng.gen_range(0..categories.len())];
            let base: f64 = 7.0 + (cat.len() as f64) * 0.2;
            let mut amount = (base + rng.gen_range(-0.5..0.5f64)).exp() as i64;
            if m > 20 && i == 0 && m % 7 == 0 {
                amount *= 40; // an outlier
            }
            out.push(Transaction {
                transaction_id: uuid::Uuid::from_u64_pair(seed, out.len() as u64).to_string(),
                occurred_at: t0 + m * MINUTE + rng.gen_range(0..MINUTE),
                status,
                auth_code: match status {
                    TransactionStatus::Denied => "05".into(),
                    TransactionStatus::Failed => "91".into(),
                    _ => "00".into(),
                },
                amount_minor: amount,
                currency: "EUR".into(),
                category: cat.into(),
                merchant_id: format!("m-{}", rng.gen_range(0..12)),
                received_at: 0,
            });
        }
    }
    out.sort_by_key(|t| t.occurred_at);
    out
}

/// Writes transactions keyed by category, with the record timestamp = event time. The
/// partition is chosen here (category index modulo 6) rather than by the client's hash, so all
/// six partitions carry traffic: a partition without any would only be released by the idle
/// timeout, which these tests keep out of the way.
pub async fn produce(topic: &str, txs: &[Transaction]) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    let codec = Codec::single_object();
    let mut pending = Vec::new();
    for tx in txs {
        let payload = codec.encode(tx).unwrap();
        let partition = CATEGORIES.iter().position(|c| *c == tx.category).unwrap_or(0) as i32 % 6;
        let record =
            FutureRecord::to(topic).key(&tx.category).partition(partition).payload(&payload).timestamp(tx.occurred_at);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if pending.len() >= 5000 {
            for r in futures::future::join_all(pending.drain(..)).await {
                r.unwrap().unwrap();
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r.unwrap().unwrap();
    }
}

/// The distinct outputs on the minutes and anomalies topics, as comparable strings, once
/// the last expected minute is there and nothing new arrived for a few seconds.
pub fn outputs(topics: &Topics, min_minutes: usize) -> BTreeSet<String> {
    let codec = Codec::single_object();
    let quiet = Duration::from_secs(4);
    let max = Duration::from_secs(120);
    let mut set = BTreeSet::new();
    let minutes = vigil_testkit::read_until_stable(&topics.minutes, min_minutes, quiet, max);
    for r in minutes.iter().chain(vigil_testkit::read_until_stable(&topics.anomalies, 0, quiet, max).iter()) {
        let d = codec.decode_any(&r.payload).unwrap();
        set.insert(format!("{}|{d:?}", String::from_utf8_lossy(r.key.as_deref().unwrap_or_default())));
    }
    set
}

pub fn count_kind(set: &BTreeSet<String>, needle: &str) -> usize {
    set.iter().filter(|s| s.contains(needle)).count()
}

pub fn decoded(set: &BTreeSet<String>) -> usize {
    set.len()
}

pub fn is_aggregate(d: &Decoded) -> bool {
    matches!(d, Decoded::MinuteAggregate(_))
}

pub async fn wait_ready(port: u16) {
    let http = reqwest::Client::new();
    let ok = vigil_testkit::eventually(Duration::from_secs(60), || async {
        http.get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    assert!(ok.is_some(), "detector on {port} never became ready");
}
