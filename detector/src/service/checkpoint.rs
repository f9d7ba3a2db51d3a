//! State checkpoints on the broker, so a restart resumes from a recent snapshot instead of
//! re-reading days of history.
//!
//! Checkpoint topic partition N holds the checkpoints of input partition N. One checkpoint is
//! a run of chunks (each ≤ 512 KiB) written in order; every chunk carries the offset of the
//! run's first chunk, and the last one is marked. To restore, read the newest record: if it is
//! a last chunk, read its run; if not (a crash mid-write), step back to the record before its
//! run and try again. Chunk keys are `<partition>:<seq>`, so on a compacted topic (Redpanda,
//! `cleanup.policy=compact`) the newest run always survives compaction.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use vigil_common::kafka::KafkaConfig;

use crate::error::{Error, Result};

/// Bump when the serialized state changes shape; older checkpoints are then ignored (and the
/// partition is rebuilt from the start of the input).
pub const STATE_VERSION: u16 = 1;
const CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    version: u16,
    first_offset: i64,
    seq: u32,
    last: bool,
    /// The next input offset to read after restoring this state.
    input_offset: i64,
    data: Vec<u8>,
}

/// The bytes a checkpoint holds for a state.
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(state).map_err(|e| Error::Fatal(format!("state does not serialize: {e}")))
}

/// A state back from checkpoint bytes.
pub fn decode_state<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Fatal(format!("checkpoint does not decode: {e}")))
}

/// A restored checkpoint.
#[derive(Debug)]
pub struct Restored {
    pub input_offset: i64,
    pub state: Vec<u8>,
}

pub struct CheckpointStore {
    topic: String,
    producer: FutureProducer,
    reader: BaseConsumer,
}

impl CheckpointStore {
    pub fn new(kafka: &KafkaConfig, topic: &str, producer: FutureProducer) -> Result<Self> {
        let mut cc = kafka.consumer_config("vigil-checkpoint-reader");
        // Restores read a few large records: fetch them in big, immediate responses rather
        // than waiting the default 500 ms per fetch for more data.
        cc.set("fetch.wait.max.ms", "10")
            .set("max.partition.fetch.bytes", "16777216")
            .set("fetch.max.bytes", "67108864");
        let reader: BaseConsumer = cc.create()?;
        Ok(CheckpointStore { topic: topic.to_owned(), producer, reader })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn err(&self, partition: i32, reason: impl Into<String>) -> Error {
        Error::Checkpoint { topic: self.topic.clone(), partition, reason: reason.into() }
    }

    /// Number of partitions of the checkpoint topic.
    pub fn partitions(&self) -> Result<usize> {
        let md = self.reader.fetch_metadata(Some(&self.topic), Duration::from_secs(10))?;
        Ok(md.topics().first().map(|t| t.partitions().len()).unwrap_or(0))
    }

    /// Writes `state` as the checkpoint of `partition`; returns the bytes written.
    pub fn save(&self, partition: i32, input_offset: i64, state: &[u8]) -> Result<usize> {
        let chunks: Vec<&[u8]> = if state.is_empty() { vec![&[][..]] } else { state.chunks(CHUNK_BYTES).collect() };
        let n = chunks.len();
        let mut first_offset = -1;
        let mut futures = Vec::with_capacity(n);
        for (seq, data) in chunks.into_iter().enumerate() {
            let chunk = Chunk {
                version: STATE_VERSION,
                first_offset,
                seq: seq as u32,
                last: seq + 1 == n,
                input_offset,
                data: data.to_vec(),
            };
            let bytes = postcard::to_allocvec(&chunk).map_err(|e| self.err(partition, e.to_string()))?;
            let key = format!("{partition}:{seq}");
            let record = FutureRecord::to(&self.topic).partition(partition).key(&key).payload(&bytes);
            let fut = self.producer.send_result(record).map_err(|(e, _)| self.err(partition, e.to_string()))?;
            if seq == 0 {
                // The first chunk's offset ties the run together: wait for it.
                let delivery = futures::executor::block_on(fut)
                    .map_err(|_| self.err(partition, "producer dropped"))?
                    .map_err(|(e, _)| self.err(partition, e.to_string()))?;
                // Chunk 0 itself carries -1, meaning "the run starts at this record".
                first_offset = delivery.offset;
            } else {
                futures.push(fut);
            }
        }
        for r in futures::executor::block_on(futures::future::join_all(futures)) {
            r.map_err(|_| self.err(partition, "producer dropped"))?
                .map_err(|(e, _)| self.err(partition, e.to_string()))?;
        }
        Ok(state.len())
    }

    /// The newest complete checkpoint of `partition`, if any.
    pub fn load(&self, partition: i32) -> Result<Option<Restored>> {
        let (low, high) = self.reader.fetch_watermarks(&self.topic, partition, Duration::from_secs(10))?;
        let mut pos = high - 1;
        while pos >= low {
            let (offset, chunk) = self.read_at(partition, pos)?;
            let first = if chunk.first_offset < 0 { offset } else { chunk.first_offset };
            if chunk.last && chunk.version == STATE_VERSION {
                return self.read_run(partition, first, offset).map(Some);
            }
            if chunk.last {
                tracing::warn!(
                    partition,
                    version = chunk.version,
                    "Ignoring a checkpoint of another state version; the partition is rebuilt from its input."
                );
                return Ok(None);
            }
            pos = first - 1;
        }
        Ok(None)
    }

    fn read_run(&self, partition: i32, first: i64, last: i64) -> Result<Restored> {
        let mut data = Vec::new();
        let mut input_offset = 0;
        let mut expected_seq = 0u32;
        self.assign(partition, first)?;
        let mut next = first;
        while next <= last {
            let (offset, chunk) = self.poll_one(partition)?;
            if offset < next {
                continue;
            }
            if chunk.seq != expected_seq {
                return Err(self.err(
                    partition,
                    format!("chunk {} where {expected_seq} was expected at offset {offset}", chunk.seq),
                ));
            }
            expected_seq += 1;
            data.extend_from_slice(&chunk.data);
            input_offset = chunk.input_offset;
            next = offset + 1;
        }
        Ok(Restored { input_offset, state: data })
    }

    fn read_at(&self, partition: i32, offset: i64) -> Result<(i64, Chunk)> {
        self.assign(partition, offset)?;
        loop {
            let (o, c) = self.poll_one(partition)?;
            if o >= offset {
                return Ok((o, c));
            }
        }
    }

    fn assign(&self, partition: i32, offset: i64) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        self.reader.assign(&tpl)?;
        Ok(())
    }

    fn poll_one(&self, partition: i32) -> Result<(i64, Chunk)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match self.reader.poll(Timeout::After(Duration::from_millis(200))) {
                Some(Ok(m)) => {
                    let chunk: Chunk = postcard::from_bytes(m.payload().unwrap_or_default())
                        .map_err(|e| self.err(partition, format!("undecodable chunk at offset {}: {e}", m.offset())))?;
                    return Ok((m.offset(), chunk));
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        Err(self.err(partition, "timed out reading the checkpoint"))
    }
}
