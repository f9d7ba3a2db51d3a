//! The settings feed: the `detector-settings` topic (see `vigil_schemas::settings`) into the
//! core's configuration, shared by the stage loops.
//!
//! At start-up the whole topic is read to its end before any transaction is processed, so a
//! restarted or added instance has every record. Then a thread follows the topic and publishes
//! each new timeline. A record takes effect at a minute of event time that its publisher sets at
//! least MAX_FUTURE_SKEW plus a minute after the wall clock (webhook `POST /settings`), so every
//! instance has read it before any transaction of that minute reaches it: all instances, and a
//! replay given the same records, judge each minute with the same settings.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use vigil_common::kafka::KafkaConfig;
use vigil_schemas::settings::RuleSettings;

use crate::core::settings::Settings;
use crate::core::CoreConfig;

/// The configuration the stages read, replaced whole when settings change.
#[derive(Clone)]
pub struct SharedConfig(Arc<RwLock<Arc<CoreConfig>>>);

impl SharedConfig {
    pub fn new(cfg: CoreConfig) -> Self {
        SharedConfig(Arc::new(RwLock::new(Arc::new(cfg))))
    }

    /// The configuration now (a cheap clone of a pointer).
    pub fn current(&self) -> Arc<CoreConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn apply(&self, records: &[RuleSettings]) -> usize {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut settings: Settings = guard.settings.clone();
        for r in records {
            settings = settings.with(r);
        }
        let n = settings.len();
        *guard = Arc::new(CoreConfig { settings, ..(**guard).clone() });
        n
    }
}

/// Decodes one record; a bad one is skipped (the publisher validates, so it is not ours).
fn decode(payload: Option<&[u8]>, offset: i64) -> Option<RuleSettings> {
    let bytes = payload?;
    match serde_json::from_slice::<RuleSettings>(bytes) {
        Ok(r) if r.problems().is_empty() => Some(r),
        Ok(r) => {
            tracing::warn!(offset, problems = ?r.problems(), "Skipped an invalid settings record.");
            None
        }
        Err(e) => {
            tracing::warn!(offset, error = %e, "Skipped a settings record that is not JSON settings.");
            None
        }
    }
}

/// Reads the topic from its start to its end now, applies every record, and returns the
/// consumer positioned after them (one partition, no group).
pub fn load(kafka: &KafkaConfig, topic: &str, shared: &SharedConfig) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = kafka
        .consumer_config(&format!("vigil-detector-settings-{}", uuid::Uuid::new_v4().simple()))
        .create()
        .context("Failed to create the settings consumer")?;
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .with_context(|| format!("Failed to read the offsets of {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let mut records = Vec::new();
    let mut next = low;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while next < high {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{topic} was not read to its end within 60 s");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                records.extend(decode(m.payload(), m.offset()));
            }
            Some(Err(e)) => tracing::warn!(error = %e, "Settings consumer error."),
            None => {}
        }
    }
    let n = shared.apply(&records);
    tracing::info!(topic, records = records.len(), in_force = n, "Rule settings loaded.");
    Ok(consumer)
}

/// Follows the topic until `stop`, applying each new record.
pub fn follow(consumer: BaseConsumer, shared: SharedConfig, stop: CancellationToken) {
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(r) = decode(m.payload(), m.offset()) {
                    tracing::info!(scope = %r.scope, effective_from = r.effective_from, actor = %r.actor, "Rule settings record applied.");
                    shared.apply(std::slice::from_ref(&r));
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Settings consumer error.");
                std::thread::sleep(Duration::from_millis(500));
            }
            None => {}
        }
    }
}
