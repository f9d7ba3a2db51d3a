//! The durable side: one idempotent, acks=all Kafka producer shared by every request.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::Semaphore;
use vigil_common::kafka::KafkaConfig;
use vigil_schemas::{Codec, Transaction};

use crate::metrics::ProducerMetrics;
use crate::verdicts::REPLY_TO_HEADER;
use crate::{Error, Result};

/// Publishes transactions and reports, per event, whether the broker acknowledged it.
#[derive(Clone)]
pub struct Publisher {
    /// Replaced after a delivery timeout (see [`Publisher::reset_after_timeout`]).
    producer: Arc<RwLock<Client>>,
    kafka: KafkaConfig,
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
            producer: Arc::new(RwLock::new(Client { producer, generation: 0 })),
            kafka: kafka.clone(),
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
        let sends = txs.iter().map(|tx| self.send_one(tx, None));
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

    /// Like [`Publisher::publish`] for one event, with the `vigil.reply-to` header that asks the
    /// detector for its verdict (see `verdicts`).
    pub async fn publish_asking(&self, tx: &Transaction, reply_to: &str) -> Result<()> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else { return Err(Error::Overloaded) };
        self.metrics.in_flight.inc();
        let start = Instant::now();
        let result = self.send_one(tx, Some(reply_to)).await;
        self.metrics.in_flight.dec();
        drop(permit);
        if result.is_ok() {
            self.metrics.produce_duration.observe(start.elapsed().as_secs_f64());
        }
        result
    }

    fn client(&self) -> (FutureProducer, u64) {
        let c = self.producer.read().unwrap_or_else(|e| e.into_inner());
        (c.producer.clone(), c.generation)
    }

    async fn send_one(&self, tx: &Transaction, reply_to: Option<&str>) -> Result<()> {
        let payload = self.codec.encode(tx)?;
        let mut record = FutureRecord::to(&self.topic).key(Self::key(tx)).payload(&payload).timestamp(tx.received_at);
        if let Some(to) = reply_to {
            record = record.headers(OwnedHeaders::new().insert(Header { key: REPLY_TO_HEADER, value: Some(to) }));
        }
        let (producer, generation) = self.client();
        // The queue wait counts towards the same deadline; the delivery report arrives at the
        // latest at message.timeout.ms. The outer timeout is a guard against a lost report.
        let fut = producer.send(record, Timeout::After(self.timeout));
        let result = match tokio::time::timeout(self.timeout + Duration::from_secs(1), fut).await {
            Ok(Ok(_delivery)) => Ok(()),
            Ok(Err((e, _msg))) => {
                if matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::MessageTimedOut)) {
                    Err(Error::AckTimeout(self.timeout))
                } else {
                    tracing::warn!(error = %e, "The broker refused an event.");
                    Err(Error::Broker(e))
                }
            }
            Err(_) => Err(Error::AckTimeout(self.timeout)),
        };
        if matches!(result, Err(Error::AckTimeout(_))) || producer.client().fatal_error().is_some() {
            self.reset_after_timeout(generation);
        }
        result
    }

    /// Replaces the Kafka client after a delivery timeout or a fatal error.
    ///
    /// An idempotent producer whose messages timed out bumps its epoch when the broker returns
    /// (KIP-360); tansu 0.6.0 panics on that bump and stores nothing more until restarted. A
    /// fresh client starts with a new producer id instead. It also makes sure an event already
    /// answered with 503 is not delivered later by the old client's retries: the old client's
    /// queue goes with it.
    fn reset_after_timeout(&self, seen_generation: u64) {
        let mut c = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if c.generation != seen_generation {
            return; // another request replaced it already
        }
        match self.kafka.producer_config(self.timeout).create::<FutureProducer>() {
            Ok(p) => {
                tracing::warn!(
                    generation = c.generation + 1,
                    "Delivery timed out: replacing the Kafka producer client."
                );
                c.producer = p;
                c.generation += 1;
            }
            Err(e) => tracing::error!(error = %e, "Failed to create a new Kafka producer client."),
        }
    }

    /// Broker reachable and the topic's metadata known.
    pub async fn ready(&self) -> std::result::Result<(), String> {
        let (producer, _) = self.client();
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

    /// Events handed to the Kafka client and not acknowledged yet.
    pub fn queued(&self) -> i32 {
        self.client().0.in_flight_count()
    }

    /// Waits for every queued event to be acknowledged (graceful shutdown).
    pub fn flush(&self, timeout: Duration) -> std::result::Result<(), rdkafka::error::KafkaError> {
        self.client().0.flush(Timeout::After(timeout))
    }
}

struct Client {
    producer: FutureProducer,
    generation: u64,
}
