//! Starts the whole pipeline in-process, each service through its own `Application`, on
//! fresh topics and a fresh database, for end-to-end tests.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_testkit::{fresh_database, unique, TestDb};

pub use vigil_testkit::PipelineTopics as Topics;

/// A running service: its port, its stop token and its task. Dropping it (e.g. when a test
/// panics) cancels the service, so a failing test fails instead of hanging on running loops.
pub struct Running {
    pub port: u16,
    pub stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn new(port: u16, stop: CancellationToken, task: JoinHandle<anyhow::Result<()>>) -> Self {
        Running { port, stop, task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Graceful stop (as SIGTERM would), waiting for the service to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(t) => t.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start_producer(topics: &Topics, extra: &[&str]) -> Running {
    // A database of its own for its idempotency keys.
    let db = vigil_testkit::fresh_database().await;
    start_producer_on(topics, &db.url, extra).await
}

/// The producer on a given database: the pipeline's, where the sink stores the transactions its
/// lookups read.
pub async fn start_producer_on(topics: &Topics, database_url: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "producer".to_string(),
        format!("--database-url={database_url}"),
        "--bind=127.0.0.1:0".into(),
        format!("--kafka-brokers={}", vigil_testkit::brokers()),
        format!("--topic={}", topics.transactions),
        format!("--verdicts-topic={}", topics.verdicts),
        "--max-event-age=30d".into(),
        // The scenarios send hours of history as fast as the producer takes it and expect only
        // 202s; rate limiting is tested in producer/tests/api.rs and chaos/tests/security.rs.
        "--rate-limit-per-second=0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = vigil_producer::Config::from_args(vigil_producer::Args::parse_from(args)).unwrap();
    let app = vigil_producer::Application::build(config).await.unwrap();
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Running::new(port, stop, task)
}

/// Detector with test-friendly timings: partitions with nothing left to read close their
/// windows after `idle` (e.g. "3s").
pub async fn start_detector(topics: &Topics, group: &str, idle: &str, extra: &[&str]) -> Running {
    let mut args = vec!["detector".to_string(), "--bind=127.0.0.1:0".into()];
    args.extend(topics.detector_flags());
    args.extend([
        format!("--consumer-group={group}"),
        format!("--idle-timeout={idle}"),
        "--commit-interval=200ms".into(),
        "--checkpoint-interval=2s".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let parsed = vigil_detector::Args::parse_from(args);
    let config = vigil_detector::Config::from_args(&parsed).unwrap();
    let app = vigil_detector::Application::build(config).await.unwrap();
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Running::new(port, stop, task)
}

pub async fn start_sink(topics: &Topics, db: &TestDb, group: &str, extra: &[&str]) -> Running {
    let mut args = vec!["sink".to_string(), "--bind=127.0.0.1:0".into(), format!("--database-url={}", db.url)];
    args.extend(topics.sink_flags());
    args.extend([format!("--consumer-group={group}"), "--linger=100ms".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let parsed = vigil_sink::Args::parse_from(args);
    let config = vigil_sink::Config::from_args(&parsed).unwrap();
    let app = vigil_sink::Application::build(config).await.unwrap();
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Running::new(port, stop, task)
}

/// Producer, detector and sink on fresh topics and a fresh database.
pub struct Pipeline {
    pub topics: Topics,
    /// The detector's consumer group (its merge stage's is `<group>-merge`) and the sink's.
    pub detector_group: String,
    pub sink_group: String,
    pub db: TestDb,
    pub producer: Running,
    pub detector: Running,
    pub sink: Running,
    pub http: reqwest::Client,
}

impl Pipeline {
    /// The pipeline with a 3 s idle timeout.
    pub async fn start(transaction_partitions: i32) -> Self {
        Self::start_with(transaction_partitions, "3s", &[]).await
    }

    /// With the detector's idle timeout and extra producer flags.
    pub async fn start_with(transaction_partitions: i32, idle_timeout: &str, producer_args: &[&str]) -> Self {
        Self::start_configured(transaction_partitions, idle_timeout, producer_args, &[]).await
    }

    /// With the detector's idle timeout, extra producer flags and extra detector flags.
    pub async fn start_configured(
        transaction_partitions: i32,
        idle_timeout: &str,
        producer_args: &[&str],
        detector_args: &[&str],
    ) -> Self {
        vigil_common::telemetry::init("e2e");
        let topics = Topics::fresh(transaction_partitions).await;
        let db = fresh_database().await;
        let producer = start_producer_on(&topics, &db.url, producer_args).await;
        let (detector_group, sink_group) = (unique("detector"), unique("sink"));
        let detector = start_detector(&topics, &detector_group, idle_timeout, detector_args).await;
        let sink = start_sink(&topics, &db, &sink_group, &[]).await;
        let p =
            Pipeline { topics, db, detector_group, sink_group, producer, detector, sink, http: reqwest::Client::new() };
        p.wait_ready(Duration::from_secs(60)).await;
        p
    }

    /// Waits until every service answers /ready with 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        for svc in [&self.producer, &self.detector, &self.sink] {
            let url = format!("{}/ready", svc.url());
            let ok = vigil_testkit::eventually(timeout, || async {
                let r = self.http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            })
            .await;
            assert!(ok.is_some(), "{url} never became ready");
        }
    }

    pub async fn stop(self) {
        self.producer.stop().await.unwrap();
        self.detector.stop().await.unwrap();
        self.sink.stop().await.unwrap();
    }
}

/// The detector from its whole command line (its broker and security settings included), for
/// tests that run it against a broker of their own; the error if it does not build.
pub async fn try_start_detector_from(args: Vec<String>) -> anyhow::Result<Running> {
    let parsed = vigil_detector::Args::try_parse_from(args)?;
    let config = vigil_detector::Config::from_args(&parsed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = vigil_detector::Application::build(config).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Ok(Running::new(port, stop, task))
}
