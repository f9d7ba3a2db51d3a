//! The durable side: one idempotent, acks=all Kafka producer shared by every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::Semaphore;
use vigil_common::kafka::KafkaConfig;
use vigil_schemas::{Codec, Transaction};

use crate::metrics::ProducerMetrics;
use crate::{Error, Result};

/// Publishes transactions and reports, per event, whether the broker acknowledged it.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topic: Arc<str>,
    codec: Arc<Codec>,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    metrics: ProducerMetrics,
}

impl Publisher {
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        codec: Arc<Codec>,
        timeout: Duration,
        max_in_flight: u32,
        metrics: ProducerMetrics,
    ) -> anyhow::Result<Self> {
        // message.timeout.ms = PRODUCE_TIMEOUT: when we give up on an event, librdkafka has given
        // up on it too, so a 503 is not followed by a silent late delivery in the common case.
        let producer: FutureProducer = kafka.producer_config(timeout).create()?;
        Ok(Publisher {
            producer,
            topic: topic.into(),
            codec,
            timeout,
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            metrics,
        })
    }

    /// The partitioning key. Transactions are keyed by **category**: every per-category and
    /// per-merchant amount baseline then lives in exactly one partition, so one detector
    /// instance judges each transaction against complete history, with no cross-instance
    /// coordination. (A merchant's baseline is per category it trades in.)
    pub fn key(tx: &Transaction) -> &str {
        &tx.category
    }

    /// Sends every event and waits for each acknowledgement. The result at index i belongs to
    /// `txs[i]`. Fails fast with [`Error::Overloaded`] for all when too many are in flight.
    pub async fn publish(&self, txs: &[Transaction]) -> Vec<Result<()>> {
        let n = txs.len() as u32;
        let Ok(permit) = self.in_flight.clone().try_acquire_many_owned(n.max(1)) else {
            return txs.iter().map(|_| Err(Error::Overloaded)).collect();
        };
        self.metrics.in_flight.inc_by(i64::from(n));
        let start = Instant::now();
        let sends = txs.iter().map(|tx| self.send_one(tx));
        let results = futures::future::join_all(sends).await;
        self.metrics.in_flight.dec_by(i64::from(n));
        drop(permit);
        let elapsed = start.elapsed().as_secs_f64();
        for r in &results {
            if r.is_ok() {
                self.metrics.produce_duration.observe(elapsed);
            }
        }
        results
    }

    async fn send_one(&self, tx: &Transaction) -> Result<()> {
        let payload = self.codec.encode(tx)?;
        let record = FutureRecord::to(&self.topic).key(Self::key(tx)).payload(&payload).timestamp(tx.received_at);
        // The queue wait counts towards the same deadline; the delivery report arrives at the
        // latest at message.timeout.ms. The outer timeout is a guard against a lost report.
        let fut = self.producer.send(record, Timeout::After(self.timeout));
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), fut).await {
            Ok(Ok(_delivery)) => Ok(()),
            Ok(Err((e, _msg))) => {
                if matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::MessageTimedOut)) {
                    Err(Error::AckTimeout(self.timeout))
                } else {
                    Err(Error::Broker(e))
                }
            }
            Err(_) => Err(Error::AckTimeout(self.timeout)),
        }
    }

    /// Broker reachable and the topic's metadata known.
    pub async fn ready(&self) -> std::result::Result<(), String> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map_err(|e| format!("broker unreachable: {e}"))?;
            let t = md.topics().iter().find(|t| t.name() == &*topic).ok_or_else(|| format!("topic {topic} unknown"))?;
            if t.error().is_some() || t.partitions().is_empty() {
                return Err(format!("topic {topic} has no partitions (does it exist?)"));
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits for every queued event to be acknowledged (graceful shutdown).
    pub fn flush(&self, timeout: Duration) -> std::result::Result<(), rdkafka::error::KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}
