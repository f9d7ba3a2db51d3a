//! Straight to the broker, for benchmarks: the producer's exact wire form (Avro single-object
//! encoding, key = category, acks=all, idempotent), without the HTTP hop.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use vigil_common::kafka::KafkaConfig;
use vigil_schemas::Codec;

use super::{backoff, Batch, BatchOutcome, Sending};
use crate::error::Result;

#[derive(Clone)]
pub struct KafkaTarget {
    producer: FutureProducer,
    topic: Arc<str>,
    codec: Arc<Codec>,
    retries: u32,
    timeout: Duration,
}

fn error_key(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("kafka:{code:?}"),
        None => "kafka:error".into(),
    }
}

impl KafkaTarget {
    /// A durable producer as the producer service builds it (`KafkaConfig::producer_config`).
    pub fn new(kafka: &KafkaConfig, topic: &str, delivery_timeout: Duration, retries: u32) -> Result<Self> {
        let producer: FutureProducer = kafka.producer_config(delivery_timeout).create()?;
        Ok(KafkaTarget {
            producer,
            topic: topic.into(),
            codec: Arc::new(Codec::single_object()),
            retries,
            timeout: delivery_timeout,
        })
    }

    /// Enqueues every record now (so batches reach each partition in order), then waits for
    /// the acknowledgements; a record that fails is sent again, up to `retries` times.
    pub fn start(&self, batch: Batch) -> Sending {
        let mut out = BatchOutcome::default();
        let now = Utc::now().timestamp_millis();
        let mut payloads = Vec::with_capacity(batch.items.len());
        let mut waiting = Vec::with_capacity(batch.items.len());
        for tx in &batch.items {
            let t = tx.to_transaction(now);
            let payload = match self.codec.encode(&t) {
                Ok(p) => p,
                Err(e) => {
                    out.refused += 1;
                    out.problem(format!("{} cannot be encoded: {e}", t.transaction_id));
                    continue;
                }
            };
            let record = FutureRecord::to(&self.topic).key(&t.category).payload(&payload).timestamp(now);
            let delivery = self.producer.send_result(record).map_err(|(e, _)| e);
            waiting.push((payloads.len(), delivery));
            payloads.push((t.category.clone(), payload));
        }
        let this = self.clone();
        Box::pin(async move {
            for (i, delivery) in waiting {
                let mut result = match delivery {
                    Ok(f) => match f.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(e),
                        Err(_) => Err(KafkaError::Canceled),
                    },
                    Err(e) => Err(e),
                };
                let (key, payload) = &payloads[i];
                let mut attempt = 0;
                while let Err(e) = &result {
                    out.response(error_key(e));
                    if attempt >= this.retries {
                        break;
                    }
                    attempt += 1;
                    out.retried += 1;
                    tokio::time::sleep(backoff(attempt, None)).await;
                    let record = FutureRecord::to(&this.topic).key(key).payload(payload).timestamp(now);
                    result =
                        this.producer.send(record, Timeout::After(this.timeout)).await.map(|_| ()).map_err(|(e, _)| e);
                }
                match result {
                    Ok(()) => {
                        out.accepted += 1;
                        out.response("kafka:acknowledged");
                    }
                    Err(e) => {
                        out.unavailable += 1;
                        out.problem(format!("not acknowledged after {} retries: {e}", this.retries));
                    }
                }
            }
            out
        })
    }

    pub async fn flush(&self) {
        let p = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || p.flush(Timeout::After(Duration::from_secs(30)))).await;
    }
}
