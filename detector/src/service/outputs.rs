//! Where the detector's outputs go, each keyed deterministically, and the tracking of their
//! acknowledgements (an input offset is committed only once every output derived from it is
//! acknowledged).

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use vigil_schemas::{
    Anomaly, Codec, LateEvents, MerchantMinute, MinuteAggregate, MinutePartial, TransactionVerdict, WireEvent,
};

use crate::error::{Error, Result};

/// Topic names the outputs go to.
#[derive(Debug, Clone)]
pub struct OutputTopics {
    pub partials: String,
    pub minutes: String,
    pub anomalies: String,
    pub verdicts: String,
    pub dead_letter: String,
}

/// Sends outputs and remembers their delivery futures until [`Outputs::flush`].
pub struct Outputs {
    producer: FutureProducer,
    codec: Arc<Codec>,
    topics: OutputTopics,
    pending: Vec<DeliveryFuture>,
}

/// Where a dead letter came from.
pub struct Origin<'a> {
    pub stage: &'static str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// The asking producer instance, when the record carries a `vigil.reply-to` header (see
    /// [`REPLY_TO_HEADER`]): only such transactions get a verdict.
    pub reply_to: Option<&'a str>,
}

/// The record header by which a producer asks the detector for a transaction's verdict; its
/// value names the producer instance, copied into the verdict so that instance can pick it out.
pub const REPLY_TO_HEADER: &str = "vigil.reply-to";

pub fn minute_key(minute: i64) -> String {
    Utc.timestamp_millis_opt(minute)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `merchant:<minute>:<merchant_id>:<category>`; the prefix keeps it apart from the minute and
/// late-booking keys on the same topic.
pub fn merchant_minute_key(m: &MerchantMinute) -> String {
    format!("merchant:{}:{}:{}", minute_key(m.minute_start), m.merchant_id, m.category)
}

impl Outputs {
    pub fn new(producer: FutureProducer, codec: Arc<Codec>, topics: OutputTopics) -> Self {
        Outputs { producer, codec, topics, pending: Vec::new() }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Partials all go to partition 0 of the partials topic: the merge stage must see each
    /// source partition's partials in the order they were sent.
    pub fn partial(&mut self, p: &MinutePartial) -> Result<()> {
        let topic = self.topics.partials.clone();
        self.send(&topic, Some(0), "global", p)
    }

    pub fn aggregate(&mut self, a: &MinuteAggregate) -> Result<()> {
        let topic = self.topics.minutes.clone();
        self.send(&topic, None, &minute_key(a.minute_start), a)
    }

    pub fn late(&mut self, l: &LateEvents) -> Result<()> {
        let topic = self.topics.minutes.clone();
        self.send(&topic, None, &format!("late:{}:{}", minute_key(l.minute_start), l.source), l)
    }

    /// Keyed by minute, merchant and category: a restarted stage 1 re-sends the same record
    /// under the same key, and the sink's upsert by that key keeps one row.
    pub fn merchant_minute(&mut self, m: &MerchantMinute) -> Result<()> {
        let topic = self.topics.minutes.clone();
        self.send(&topic, None, &merchant_minute_key(m), m)
    }

    pub fn anomaly(&mut self, a: &Anomaly) -> Result<()> {
        let topic = self.topics.anomalies.clone();
        self.send(&topic, None, &a.id, a)
    }

    /// Keyed by transaction id: a redelivered transaction's verdict lands under the same key.
    pub fn verdict(&mut self, v: &TransactionVerdict) -> Result<()> {
        let topic = self.topics.verdicts.clone();
        self.send(&topic, None, &v.transaction_id, v)
    }

    /// The original message, with the reason and its origin in headers.
    pub fn dead_letter(&mut self, origin: &Origin<'_>, reason: &str) -> Result<()> {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "vigil.error", value: Some(reason) })
            .insert(Header { key: "vigil.stage", value: Some(origin.stage) })
            .insert(Header { key: "vigil.source.topic", value: Some(origin.topic) })
            .insert(Header { key: "vigil.source.partition", value: Some(&partition) })
            .insert(Header { key: "vigil.source.offset", value: Some(&offset) });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topics.dead_letter).payload(origin.payload).headers(headers);
        if let Some(k) = origin.key {
            record = record.key(k);
        }
        let fut = enqueue(&self.producer, record)?;
        self.pending.push(fut);
        Ok(())
    }

    fn send<T: WireEvent>(&mut self, topic: &str, partition: Option<i32>, key: &str, event: &T) -> Result<()> {
        let payload = self.codec.encode(event)?;
        let mut record = FutureRecord::to(topic).key(key).payload(&payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let fut = enqueue(&self.producer, record)?;
        self.pending.push(fut);
        Ok(())
    }

    /// Waits until every output sent so far is acknowledged by the broker.
    pub fn flush(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let results = futures::executor::block_on(futures::future::join_all(pending));
        for r in results {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(Error::Delivery(e.to_string())),
                Err(_) => return Err(Error::Delivery("the producer was dropped".into())),
            }
        }
        Ok(())
    }
}

/// Enqueues a record, waiting while librdkafka's queue is full.
fn enqueue<K, P>(producer: &FutureProducer, mut record: FutureRecord<'_, K, P>) -> Result<DeliveryFuture>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(Error::Delivery(e.to_string())),
        }
    }
}
