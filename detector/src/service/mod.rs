//! The Kafka service: two stage loops (see `stage`) and the ops HTTP server.

pub mod checkpoint;
pub mod metrics;
pub mod outputs;
pub mod settings;
pub mod stage;
pub mod stages;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_common::http::{ops_router, serve, Dependency, ReadyCheck};
use vigil_common::metrics::Metrics;
use vigil_schemas::{Codec, SchemaRegistry};

use crate::config::Config;
use checkpoint::CheckpointStore;
use metrics::DetectorMetrics;
use outputs::{OutputTopics, Outputs};
use stage::StageSettings;
use stages::{MergeStage, PartitionStage};

pub struct Application {
    config: Config,
    listener: TcpListener,
    metrics: Metrics,
    dm: DetectorMetrics,
    codec: Arc<Codec>,
    ready: Arc<AtomicBool>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new("detector");
        let dm = DetectorMetrics::new(&metrics).with_max_categories(config.service.metrics_max_categories);
        let codec = match &config.service.schema_registry_url {
            Some(url) => {
                use vigil_schemas::{
                    Anomaly, LateEvents, MerchantMinute, MinuteAggregate, MinutePartial, TopicBindings, Transaction,
                    TransactionVerdict,
                };
                let s = &config.service;
                // Subjects follow the topics (vigil_schemas::subjects): what it writes and reads.
                let bindings = TopicBindings::new()
                    .bind::<Transaction>(&s.transactions_topic)
                    .bind::<MinutePartial>(&s.partials_topic)
                    .bind::<MinuteAggregate>(&s.minutes_topic)
                    .bind::<LateEvents>(&s.minutes_topic)
                    .bind::<MerchantMinute>(&s.minutes_topic)
                    .bind::<Anomaly>(&s.anomalies_topic)
                    .bind::<TransactionVerdict>(&s.verdicts_topic);
                Codec::with_registry_for(SchemaRegistry::new(url), &bindings)
                    .await
                    .with_context(|| format!("Failed to register schemas with {url}"))?
            }
            None => Codec::single_object(),
        };
        let listener = TcpListener::bind(config.service.bind)
            .await
            .with_context(|| format!("Failed to bind {}", config.service.bind))?;
        Ok(Application {
            config,
            listener,
            metrics,
            dm,
            codec: Arc::new(codec),
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Checks that the topics exist and the checkpoint topic has enough partitions.
    fn check_topics(&self) -> anyhow::Result<()> {
        let s = &self.config.service;
        // Its context keeps librdkafka's last error: a refused TLS handshake or SASL login is named.
        let probe = s.kafka.diagnosing_client()?;
        let count = |topic: &str| -> anyhow::Result<usize> {
            let md = probe
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!(vigil_common::kafka::explain(&e, &probe)))
                .with_context(|| format!("Failed to read metadata of {topic}"))?;
            let t = md.topics().first().filter(|t| t.error().is_none() && !t.partitions().is_empty());
            t.map(|t| t.partitions().len()).with_context(|| format!("Topic {topic} does not exist"))
        };
        let inputs = count(&s.transactions_topic)?;
        let checkpoints = count(&s.checkpoint_topic)?;
        anyhow::ensure!(
            checkpoints >= inputs,
            "Checkpoint topic {} has {checkpoints} partitions but {} has {inputs}: it needs at least as many",
            s.checkpoint_topic,
            s.transactions_topic
        );
        for t in [
            &s.partials_topic,
            &s.minutes_topic,
            &s.anomalies_topic,
            &s.verdicts_topic,
            &s.settings_topic,
            &s.merge_checkpoint_topic,
            &s.dead_letter_topic,
        ] {
            count(t)?;
        }
        Ok(())
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            match self.check_topics() {
                Ok(()) => break,
                Err(e) if attempt < 30 && !shutdown.is_cancelled() => {
                    attempt += 1;
                    tracing::warn!(error = %format!("{e:#}"), "Topics not ready; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let s = self.config.service.clone();
        let core = Arc::new(self.config.core.clone());
        // Every settings record in force before the first transaction (service::settings).
        let shared = settings::SharedConfig::new(self.config.core.clone());
        let settings_consumer = {
            let (kafka, topic, shared) = (s.kafka.clone(), s.settings_topic.clone(), shared.clone());
            tokio::task::spawn_blocking(move || settings::load(&kafka, &topic, &shared)).await??
        };
        let topics = OutputTopics {
            partials: s.partials_topic.clone(),
            minutes: s.minutes_topic.clone(),
            anomalies: s.anomalies_topic.clone(),
            verdicts: s.verdicts_topic.clone(),
            dead_letter: s.dead_letter_topic.clone(),
        };
        let producer =
            || -> anyhow::Result<FutureProducer> { Ok(s.kafka.producer_config(s.delivery_timeout).create()?) };

        let stop = shutdown.child_token();
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("settings".into())
                .spawn(move || settings::follow(settings_consumer, shared, stop))
                .context("Failed to start the settings thread")?;
        }
        let mut stage1 = {
            let (p, kafka, topics, stop) = (producer()?, s.kafka.clone(), topics.clone(), stop.clone());
            let store = CheckpointStore::new(&kafka, &s.checkpoint_topic, p.clone())?;
            let stage = PartitionStage::new(shared.clone(), self.codec.clone(), self.dm.clone());
            let settings = StageSettings {
                input_topic: s.transactions_topic.clone(),
                group: s.consumer_group.clone(),
                instance_id: s.consumer_instance_id.clone(),
                idle_timeout: Some(s.idle_timeout),
                commit_interval: s.commit_interval,
                checkpoint_interval: s.checkpoint_interval,
            };
            let (dm, ready, codec) = (self.dm.clone(), self.ready.clone(), self.codec.clone());
            tokio::task::spawn_blocking(move || {
                stage::run(stage, settings, &kafka, Outputs::new(p, codec, topics), store, dm, ready, stop)
            })
        };
        let mut stage2 = {
            let (p, kafka, topics, stop) = (producer()?, s.kafka.clone(), topics.clone(), stop.clone());
            let store = CheckpointStore::new(&kafka, &s.merge_checkpoint_topic, p.clone())?;
            let stage = MergeStage { cfg: core.clone(), codec: self.codec.clone(), metrics: self.dm.clone() };
            let settings = StageSettings {
                input_topic: s.partials_topic.clone(),
                group: format!("{}-merge", s.consumer_group),
                instance_id: s.consumer_instance_id.as_ref().map(|id| format!("{id}-merge")),
                idle_timeout: None,
                commit_interval: s.commit_interval,
                checkpoint_interval: s.checkpoint_interval,
            };
            let (dm, codec) = (self.dm.clone(), self.codec.clone());
            let merge_ready = Arc::new(AtomicBool::new(false));
            tokio::task::spawn_blocking(move || {
                stage::run(stage, settings, &kafka, Outputs::new(p, codec, topics), store, dm, merge_ready, stop)
            })
        };

        let ready_flag = self.ready.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let r = ready_flag.load(Ordering::SeqCst);
            Box::pin(async move {
                if r {
                    Ok(())
                } else {
                    Err("partitions not assigned and restored yet (joining the group or rebalancing)".into())
                }
            })
        });
        let mut dependencies = vec![Dependency::broker(&s.kafka, &s.transactions_topic)];
        if let Some(url) = &s.schema_registry_url {
            dependencies.push(Dependency::schema_registry(url));
        }
        let app = ops_router(self.metrics.clone(), ready, dependencies).fallback(vigil_common::problem::not_found);
        tracing::info!(port = self.port(), group = %s.consumer_group, "Detector running.");
        let server = tokio::spawn(serve(self.listener, app, shutdown.clone()));

        // When either stage ends (shutdown or failure), stop the other and the server, and wait
        // for both to flush and checkpoint what they hold.
        let (first, second) = tokio::select! {
            r = &mut stage1 => { stop.cancel(); (r, stage2.await) }
            r = &mut stage2 => { stop.cancel(); (r, stage1.await) }
        };
        shutdown.cancel();
        let _ = server.await;
        for r in [first, second] {
            match r.context("a detector stage panicked")? {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "A detector stage failed; stopping.");
                    return Err(e.into());
                }
            }
        }
        tracing::info!("Detector stopped.");
        Ok(())
    }
}
