//! Reads anomalies from Kafka and queues the ones to forward as pending deliveries.
//!
//! An anomaly is pushed when it first reaches a severity at or above the minimum, in whatever
//! state carries it there (firing, or an update that escalates it): once per anomaly and
//! severity reached. The record of what was pushed is `outbound_deliveries` itself (one row per
//! anomaly, severity and URL), so the rule holds across restarts and redelivery.
//!
//! At least once: an offset is stored only after the anomaly's delivery rows are written (or the
//! anomaly is known not to need any); librdkafka commits stored offsets every second and once
//! more at shutdown. A crash in between replays a few messages, which add no rows.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vigil_common::kafka::KafkaConfig;
use vigil_schemas::{Anomaly, AnomalyState, Codec, Severity};

use super::payload::OutboundAnomaly;
use super::store;
use super::worker::pause;
use crate::metrics::WebhookMetrics;

/// Whether an anomaly state may be forwarded: open (firing or updated, not resolved) and at or
/// above `min`. It is pushed only if its anomaly was not pushed at this severity or a higher one
/// before; `store::insert_pending` decides that against the stored deliveries.
pub fn eligible(a: &Anomaly, min: Severity) -> bool {
    a.state != AnomalyState::Resolved && a.severity >= min
}

/// How far an anomaly's times may lie after its record's timestamp. The detector writes an
/// anomaly after the minutes it covers, minutes at most ahead of the clock; one a day ahead is a
/// poison message (the sink dead-letters it) and must not page anyone.
const MAX_AHEAD_MS: i64 = 24 * 3_600_000;

/// Whether `a` names a time more than a day after `record_ts`.
pub fn from_the_far_future(a: &Anomaly, record_ts: i64) -> bool {
    let newest = [Some(a.first_seen), Some(a.last_updated), a.window_end, a.resolved_at].into_iter().flatten().max();
    newest.is_some_and(|t| t > record_ts.saturating_add(MAX_AHEAD_MS))
}

/// A consumer in `group` subscribed to `topic`, storing offsets by hand.
pub fn subscribe(kafka: &KafkaConfig, group: &str, topic: &str) -> crate::Result<StreamConsumer> {
    let mut config = kafka.consumer_config(group);
    config.set("enable.auto.commit", "true").set("auto.commit.interval.ms", "1000");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

pub struct AnomalyConsumer {
    pub consumer: StreamConsumer,
    pub pool: PgPool,
    /// Every receiver URL, in the form stored in `outbound_deliveries.url`.
    pub urls: Vec<String>,
    pub min_severity: Severity,
    /// One per worker: rung when new deliveries are queued.
    pub wakes: Vec<Arc<Notify>>,
    pub metrics: WebhookMetrics,
    pub codec: Codec,
}

enum Handled {
    Done,
    Stopped,
}

impl AnomalyConsumer {
    pub async fn run(self, stop: CancellationToken) -> crate::Result<()> {
        tracing::info!(urls = self.urls.len(), min_severity = self.min_severity.as_str(), "Anomaly forwarder started.");
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let message = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Failed to read from Kafka; retrying.");
                    pause(&stop, Duration::from_secs(1)).await;
                    continue;
                }
            };
            match self.handle(&message, &stop).await {
                Handled::Done => {
                    if let Err(e) = self.consumer.store_offset_from_message(&message) {
                        // The partition moved to another member, which will see the message again.
                        tracing::warn!(error = %e, "Failed to store an offset.");
                    }
                }
                Handled::Stopped => break,
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "No offsets committed at shutdown."),
        }
        tracing::info!("Anomaly forwarder stopped.");
        Ok(())
    }

    async fn handle(&self, message: &BorrowedMessage<'_>, stop: &CancellationToken) -> Handled {
        let mut decoded = message.payload().map(|p| self.codec.decode::<Anomaly>(p));
        if let Some(Err(vigil_schemas::Error::UnknownSchemaId(id))) = decoded {
            // Confluent-framed by a writer whose schema id we have not seen yet: ask the registry.
            if self.codec.learn_schema_id(id).await.is_ok() {
                decoded = message.payload().map(|p| self.codec.decode::<Anomaly>(p));
            }
        }
        let anomaly = match decoded {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                tracing::warn!(partition = message.partition(), offset = message.offset(), error = %e, "Skipped a message that is not an anomaly.");
                self.metrics.consumed("undecodable");
                return Handled::Done;
            }
            None => {
                self.metrics.consumed("undecodable");
                return Handled::Done;
            }
        };
        if message.timestamp().to_millis().is_some_and(|ts| from_the_far_future(&anomaly, ts)) {
            tracing::warn!(partition = message.partition(), offset = message.offset(), anomaly_id = %anomaly.id, "Skipped an anomaly from the far future.");
            self.metrics.consumed("refused_future");
            return Handled::Done;
        }
        if !eligible(&anomaly, self.min_severity) {
            self.metrics.consumed("filtered");
            return Handled::Done;
        }
        // A silenced anomaly is stored by the sink but never pushed. Asked of the database (the
        // sink may not have stored it yet), retried like the insert below.
        let mut silence_wait = Duration::from_millis(100);
        loop {
            let at = chrono::DateTime::from_timestamp_millis(anomaly.first_seen).unwrap_or_default();
            match crate::silences::store::is_silenced(
                &self.pool,
                &self.metrics.db,
                anomaly.rule.as_str(),
                anomaly.dimension.as_str(),
                &anomaly.dimension_value,
                anomaly.merchant_id.as_deref(),
                anomaly.category.as_deref(),
                anomaly.severity.as_str(),
                at,
            )
            .await
            {
                Ok(true) => {
                    tracing::info!(anomaly_id = %anomaly.id, "Silenced anomaly not pushed.");
                    self.metrics.consumed("silenced");
                    return Handled::Done;
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot ask the database whether the anomaly is silenced; retrying.");
                    pause(stop, silence_wait).await;
                    if stop.is_cancelled() {
                        return Handled::Stopped;
                    }
                    silence_wait = (silence_wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        let payload = match serde_json::to_value(OutboundAnomaly::from(&anomaly)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(anomaly_id = %anomaly.id, error = %e, "Failed to encode an anomaly as JSON.");
                self.metrics.consumed("undecodable");
                return Handled::Done;
            }
        };
        // The offset must not move past this anomaly before its rows exist: retry until the
        // database answers or we are told to stop (then the message is read again next time).
        let mut wait = Duration::from_millis(100);
        loop {
            match store::insert_pending(
                &self.pool,
                &self.metrics.db,
                &anomaly.id,
                anomaly.severity.as_str(),
                &payload,
                &self.urls,
            )
            .await
            {
                Ok(0) => {
                    // Redelivered, or an update at a severity this anomaly was already pushed at
                    // (or above).
                    self.metrics.consumed("already_pushed");
                    tracing::debug!(anomaly_id = %anomaly.id, severity = anomaly.severity.as_str(), state = anomaly.state.as_str(), "Anomaly already pushed at this severity or above.");
                    return Handled::Done;
                }
                Ok(new) => {
                    for w in &self.wakes {
                        w.notify_one();
                    }
                    self.metrics.consumed("queued");
                    tracing::info!(anomaly_id = %anomaly.id, severity = anomaly.severity.as_str(), state = anomaly.state.as_str(), new, "Queued an anomaly for delivery.");
                    return Handled::Done;
                }
                Err(e) => {
                    tracing::warn!(anomaly_id = %anomaly.id, error = %e, "Failed to queue an anomaly; retrying.");
                    pause(stop, wait).await;
                    if stop.is_cancelled() {
                        return Handled::Stopped;
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigil_schemas::{AnomalyDimension, AnomalyRule};

    fn anomaly(severity: Severity, state: AnomalyState) -> Anomaly {
        Anomaly {
            id: "a".into(),
            sequence: 0,
            rule: AnomalyRule::DeniedRate,
            dimension: AnomalyDimension::Global,
            dimension_value: "all".into(),
            window_start: None,
            window_end: None,
            transaction_id: None,
            category: None,
            merchant_id: None,
            observed: 0.5,
            observed_count: 50,
            observed_total: 100,
            baseline_mean: 0.1,
            baseline_stddev: 0.01,
            baseline_n: 60,
            scored_on: "rate".into(),
            score: 9.0,
            p_value: None,
            threshold: 4.0,
            severity,
            state,
            message: "m".into(),
            first_seen: 0,
            last_updated: 0,
            resolved_at: None,
        }
    }

    #[test]
    fn an_anomaly_a_day_after_its_record_timestamp_is_from_the_far_future() {
        let mut a = anomaly(Severity::Critical, AnomalyState::Firing);
        let ts = 1_765_713_600_000;
        a.first_seen = ts - 60_000;
        a.last_updated = ts + 5 * 60_000;
        assert!(!from_the_far_future(&a, ts));
        a.last_updated = ts + 365 * 24 * 3_600_000;
        assert!(from_the_far_future(&a, ts));
    }

    #[test]
    fn open_anomalies_at_or_above_the_minimum_severity_may_be_forwarded_and_resolved_ones_never() {
        assert!(eligible(&anomaly(Severity::Critical, AnomalyState::Firing), Severity::Critical));
        assert!(eligible(&anomaly(Severity::Critical, AnomalyState::Firing), Severity::High));
        assert!(eligible(&anomaly(Severity::High, AnomalyState::Firing), Severity::High));
        assert!(!eligible(&anomaly(Severity::High, AnomalyState::Firing), Severity::Critical));
        assert!(eligible(&anomaly(Severity::Critical, AnomalyState::Updated), Severity::Critical));
        assert!(eligible(&anomaly(Severity::Critical, AnomalyState::Updated), Severity::Medium));
        assert!(!eligible(&anomaly(Severity::High, AnomalyState::Updated), Severity::Critical));
        assert!(!eligible(&anomaly(Severity::Critical, AnomalyState::Resolved), Severity::Medium));
    }
}
