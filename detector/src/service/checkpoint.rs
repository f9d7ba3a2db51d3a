//! State checkpoints on the broker, so a restart resumes from a recent snapshot instead of
//! re-reading days of history.
//!
//! Checkpoint topic partition N holds the checkpoints of input partition N. One checkpoint is
//! a **run** of chunks (each ≤ 512 KiB) written in order; every chunk names the offset of the
//! run's first chunk, and the last one is marked. The newest complete run is the checkpoint.
//!
//! In production the topic is compacted (Redpanda, `cleanup.policy=compact`): the broker keeps
//! only the newest record of each key, so keys decide what survives. Runs alternate between two
//! key sets, **slots** 0 and 1 (`<partition>:<slot>:<seq>`): a run is always written to the slot
//! the newest complete run does not use, and its first chunk records where that run starts
//! (`previous`). A process killed mid-write therefore leaves a partial run whose keys can only
//! supersede chunks of an older run, never of the newest complete one, and the pointer leads to
//! it without scanning. (With one key set, a partial run of three chunks would supersede the
//! first three chunks of the complete run before it, and compaction would leave no complete
//! checkpoint at all.)
//!
//! To restore, read the newest record: if it ends a run, read that run; if not (a crash
//! mid-write), follow the partial run's `previous` pointer. Checkpoints of version 1 (one key set
//! `<partition>:<seq>`, no pointer) are still read, by stepping back to the record before a
//! partial run.
//!
//! The state itself is a postcard encoding, which is not self-describing: bytes of one shape
//! cannot be read as another. Each stage's state therefore decodes by the version of the run
//! that holds it ([`CheckpointState`]): today's shape for [`CHECKPOINT_VERSION`], the frozen
//! shape of an earlier version (`core::legacy`) converted to today's for the others.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use vigil_common::kafka::KafkaConfig;

use crate::core::legacy::{
    MergeStateV2, MergeStateV3, MergeStateV4, PartitionStateV2, PartitionStateV3, PartitionStateV4,
};
use crate::core::{MergeState, PartitionState};
use crate::error::{Error, Result};

/// The layout of a checkpoint: chunk header and state encoding. 1: one key set, no `previous`
/// pointer; 2: two slots and the pointer, the same state encoding as 1; 3: the same chunks, the
/// states of issue 16 (a partition's learned feed delay; the merge stage's sequential rate
/// scorer); 4: the volume rules' series (issue 17); 5: their profile of earlier days. Bump when the
/// serialized state changes shape, and keep the previous shape in
/// `core::legacy` so its checkpoints are still restored ([`CheckpointState`]); a checkpoint of a
/// version this build does not know is ignored and the partition rebuilt from the start of its
/// input. Every version keeps version 1's chunk fields first, so any reader can tell a chunk's
/// version (an older binary reading a newer checkpoint sees "another version" and rebuilds,
/// rather than failing).
pub const CHECKPOINT_VERSION: u16 = 5;
const READABLE_VERSIONS: [u16; 5] = [1, 2, 3, 4, 5];
const CHUNK_BYTES: usize = 512 * 1024;
/// How many runs a restore steps back through before giving up (each step moves strictly back).
const MAX_STEPS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chunk {
    version: u16,
    /// Offset of the run's chunk 0; -1 in chunk 0 itself (it is the run's first record).
    first_offset: i64,
    seq: u32,
    last: bool,
    /// The next input offset to read after restoring this state.
    input_offset: i64,
    data: Vec<u8>,
    // Version 2 on (a version-1 chunk ends here).
    /// Which key set the run uses: 0 or 1 (version-1 runs: `LEGACY_SLOT`).
    slot: u8,
    /// In chunk 0: the first offset of the newest complete run when this one was started, -1
    /// when there was none. The way back from a partial run.
    previous: i64,
}

/// Version 1's fields, which every version starts with.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkV1 {
    version: u16,
    first_offset: i64,
    seq: u32,
    last: bool,
    input_offset: i64,
    data: Vec<u8>,
}

const LEGACY_SLOT: u8 = u8::MAX;

impl Chunk {
    fn decode(bytes: &[u8]) -> std::result::Result<Chunk, postcard::Error> {
        let (version, _) = postcard::take_from_bytes::<u16>(bytes)?;
        if version >= 2 {
            if let Ok(c) = postcard::from_bytes::<Chunk>(bytes) {
                return Ok(c);
            }
        }
        // Version 1, or an unknown later version read through the fields every version shares.
        let v1: ChunkV1 = postcard::from_bytes(bytes)?;
        Ok(Chunk {
            version: v1.version,
            first_offset: v1.first_offset,
            seq: v1.seq,
            last: v1.last,
            input_offset: v1.input_offset,
            data: v1.data,
            slot: LEGACY_SLOT,
            previous: -1,
        })
    }

    /// The offset of the run this chunk belongs to, given the chunk's own offset.
    fn run_start(&self, offset: i64) -> i64 {
        if self.first_offset < 0 {
            offset
        } else {
            self.first_offset
        }
    }
}

/// A stage's state as checkpoints hold it: written in today's shape, read in the shape of the
/// version that wrote it.
pub trait CheckpointState: Sized {
    /// The state a checkpoint of `version` holds.
    fn decode(version: u16, bytes: &[u8]) -> Result<Self>;

    /// The bytes a checkpoint of [`CHECKPOINT_VERSION`] holds.
    fn encode(&self) -> Result<Vec<u8>>;
}

/// Versions 1 and 2 hold the same state shapes; 3 the shapes before the volume rules; 4 before
/// their profile of earlier days; 5 today's.
impl CheckpointState for PartitionState {
    fn decode(version: u16, bytes: &[u8]) -> Result<Self> {
        match version {
            1 | 2 => Ok(PartitionState::from_v2(whole::<PartitionStateV2>(version, bytes)?)),
            3 => Ok(PartitionState::from_v3(whole::<PartitionStateV3>(version, bytes)?)),
            4 => Ok(PartitionState::from_v4(whole::<PartitionStateV4>(version, bytes)?)),
            CHECKPOINT_VERSION => whole(version, bytes),
            other => Err(unknown_version(other)),
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        encode_state(self)
    }
}

impl CheckpointState for MergeState {
    fn decode(version: u16, bytes: &[u8]) -> Result<Self> {
        match version {
            1 | 2 => Ok(MergeState::from_v2(whole::<MergeStateV2>(version, bytes)?)),
            3 => Ok(MergeState::from_v3(whole::<MergeStateV3>(version, bytes)?)),
            4 => Ok(MergeState::from_v4(whole::<MergeStateV4>(version, bytes)?)),
            CHECKPOINT_VERSION => whole(version, bytes),
            other => Err(unknown_version(other)),
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        encode_state(self)
    }
}

/// Decodes `bytes` as a `T` and insists every byte was used: postcard stops reading once the
/// shape it was asked for is complete, so bytes of another shape could otherwise pass for one.
fn whole<T: serde::de::DeserializeOwned>(version: u16, bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| Error::Fatal(format!("checkpoint state (version {version}) does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::Fatal(format!(
            "checkpoint state (version {version}) does not decode: {} bytes left over",
            rest.len()
        )));
    }
    Ok(value)
}

fn unknown_version(version: u16) -> Error {
    Error::Fatal(format!("checkpoint state of version {version}, which this build does not read"))
}

/// The bytes a checkpoint of [`CHECKPOINT_VERSION`] holds for a state.
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(state).map_err(|e| Error::Fatal(format!("state does not serialize: {e}")))
}

/// A restored checkpoint: the state's bytes as written, in the layout of `version`.
#[derive(Debug, PartialEq)]
pub struct Restored {
    pub version: u16,
    pub input_offset: i64,
    pub state: Vec<u8>,
}

impl Restored {
    /// The state, read in the shape of the version that wrote it.
    pub fn decode<T: CheckpointState>(&self) -> Result<T> {
        T::decode(self.version, &self.state)
    }
}

/// Where the newest complete run of a partition starts, and its slot.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RunRef {
    first: i64,
    slot: u8,
}

/// What a search of one checkpoint partition found.
#[derive(Debug, PartialEq)]
enum Found {
    Nothing,
    Run {
        at: RunRef,
        restored: Restored,
    },
    /// The newest checkpoint is of a version this build does not read.
    OtherVersion(u16),
}

/// Read access to one checkpoint partition. The log may be compacted: `read_at` gives the first
/// record at or after `offset`, which is called only below the high watermark (the newest record
/// of a partition always survives compaction, so there is one).
trait ChunkLog {
    fn bounds(&mut self) -> Result<(i64, i64)>;
    fn read_at(&mut self, offset: i64) -> Result<(i64, Chunk)>;
}

enum RunRead {
    Complete(RunRef, Restored),
    /// The run ends before its last chunk (a crash mid-write) or was broken by compaction.
    Incomplete(Back),
}

/// Where to look for the run before an incomplete one.
enum Back {
    /// The offset its chunk 0 points to.
    To(i64),
    /// Its chunk 0 says there was no complete run before it.
    Nothing,
    /// No pointer (version 1): the run holding the record just before it.
    PrecedingRecord,
}

/// Reads the run whose chunk 0 is at `start`.
fn read_run(log: &mut impl ChunkLog, start: i64, high: i64) -> Result<RunRead> {
    let (o, c0) = log.read_at(start)?;
    if o != start || c0.seq != 0 || c0.first_offset >= 0 {
        return Ok(RunRead::Incomplete(Back::PrecedingRecord));
    }
    let back = match (c0.version >= 2, c0.previous) {
        (true, p) if p >= 0 => Back::To(p),
        (true, _) => Back::Nothing,
        (false, _) => Back::PrecedingRecord,
    };
    let at = RunRef { first: start, slot: c0.slot };
    let (version, mut input_offset, mut last) = (c0.version, c0.input_offset, c0.last);
    let mut data = c0.data;
    let (mut offset, mut seq) = (o, 0u32);
    while !last {
        if offset + 1 >= high {
            return Ok(RunRead::Incomplete(back));
        }
        let (o, c) = log.read_at(offset + 1)?;
        seq += 1;
        if c.first_offset != start || c.seq != seq || c.version != version {
            return Ok(RunRead::Incomplete(back));
        }
        data.extend_from_slice(&c.data);
        (offset, input_offset, last) = (o, c.input_offset, c.last);
    }
    Ok(RunRead::Complete(at, Restored { version, input_offset, state: data }))
}

/// The newest complete run of a checkpoint partition.
fn find_newest(log: &mut impl ChunkLog) -> Result<Found> {
    let (low, high) = log.bounds()?;
    if high <= low {
        return Ok(Found::Nothing);
    }
    let (o, newest) = log.read_at(high - 1)?;
    if !READABLE_VERSIONS.contains(&newest.version) {
        return Ok(Found::OtherVersion(newest.version));
    }
    let mut start = newest.run_start(o);
    for _ in 0..MAX_STEPS {
        if start < low {
            return Ok(Found::Nothing);
        }
        let back = match read_run(log, start, high)? {
            RunRead::Complete(at, restored) => return Ok(Found::Run { at, restored }),
            RunRead::Incomplete(back) => back,
        };
        start = match back {
            Back::To(p) if p < start => p,
            Back::To(_) | Back::Nothing => return Ok(Found::Nothing),
            Back::PrecedingRecord => {
                if start <= low {
                    return Ok(Found::Nothing);
                }
                let (o, c) = log.read_at(start - 1)?;
                if o >= start {
                    // Compaction left nothing before this run.
                    return Ok(Found::Nothing);
                }
                c.run_start(o)
            }
        };
    }
    Ok(Found::Nothing)
}

/// The chunks of one run, before their offsets are known: chunk 0 is written first, and every
/// later chunk then names its offset.
struct RunPlan {
    slot: u8,
    previous: i64,
    chunks: Vec<(String, Chunk)>,
}

impl RunPlan {
    /// A run for `state`, written to the slot the newest complete run (`newest`) does not use.
    fn new(partition: i32, input_offset: i64, state: &[u8], newest: Option<RunRef>, chunk_bytes: usize) -> Self {
        let slot = match newest {
            Some(RunRef { slot: 0, .. }) => 1,
            _ => 0,
        };
        let previous = newest.map_or(-1, |r| r.first);
        let parts: Vec<&[u8]> =
            if state.is_empty() { vec![&[][..]] } else { state.chunks(chunk_bytes.max(1)).collect() };
        let n = parts.len();
        let chunks = parts
            .into_iter()
            .enumerate()
            .map(|(seq, data)| {
                let chunk = Chunk {
                    version: CHECKPOINT_VERSION,
                    first_offset: -1,
                    seq: seq as u32,
                    last: seq + 1 == n,
                    input_offset,
                    data: data.to_vec(),
                    slot,
                    previous: if seq == 0 { previous } else { -1 },
                };
                (format!("{partition}:{slot}:{seq}"), chunk)
            })
            .collect();
        RunPlan { slot, previous, chunks }
    }

    /// Chunk `i` encoded, once chunk 0 is at `first_offset` (ignored for chunk 0).
    fn encode(&self, i: usize, first_offset: i64) -> std::result::Result<Vec<u8>, postcard::Error> {
        let (_, chunk) = &self.chunks[i];
        if i == 0 {
            postcard::to_allocvec(chunk)
        } else {
            postcard::to_allocvec(&Chunk { first_offset, ..chunk.clone() })
        }
    }
}

pub struct CheckpointStore {
    topic: String,
    producer: FutureProducer,
    reader: BaseConsumer,
    /// Per partition, the newest complete run this store read or wrote (None: there is none).
    newest: BTreeMap<i32, Option<RunRef>>,
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
        Ok(CheckpointStore { topic: topic.to_owned(), producer, reader, newest: BTreeMap::new() })
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
    pub fn save_state<T: CheckpointState>(&mut self, partition: i32, input_offset: i64, state: &T) -> Result<usize> {
        let bytes = state.encode()?;
        self.save(partition, input_offset, &bytes)
    }

    /// Writes already encoded state bytes (of [`CHECKPOINT_VERSION`]) as the checkpoint of
    /// `partition`; returns the bytes written.
    pub fn save(&mut self, partition: i32, input_offset: i64, state: &[u8]) -> Result<usize> {
        self.write(partition, input_offset, state, None)?;
        Ok(state.len())
    }

    /// Writes only the first `chunks` chunks of the checkpoint `save` would write, as a process
    /// killed mid-write leaves it. For tests of the restore.
    #[doc(hidden)]
    pub fn save_interrupted(&mut self, partition: i32, input_offset: i64, state: &[u8], chunks: usize) -> Result<()> {
        self.write(partition, input_offset, state, Some(chunks))
    }

    fn write(&mut self, partition: i32, input_offset: i64, state: &[u8], limit: Option<usize>) -> Result<()> {
        let newest = match self.newest.get(&partition) {
            Some(n) => *n,
            None => self.locate(partition)?,
        };
        let plan = RunPlan::new(partition, input_offset, state, newest, CHUNK_BYTES);
        let n = limit.unwrap_or(plan.chunks.len()).min(plan.chunks.len());
        let mut first_offset = -1;
        let mut futures = Vec::with_capacity(n);
        for i in 0..n {
            let bytes = plan.encode(i, first_offset).map_err(|e| self.err(partition, e.to_string()))?;
            let record = FutureRecord::to(&self.topic).partition(partition).key(&plan.chunks[i].0).payload(&bytes);
            let fut = self.producer.send_result(record).map_err(|(e, _)| self.err(partition, e.to_string()))?;
            if i == 0 {
                // The first chunk's offset ties the run together: wait for it.
                let delivery = futures::executor::block_on(fut)
                    .map_err(|_| self.err(partition, "producer dropped"))?
                    .map_err(|(e, _)| self.err(partition, e.to_string()))?;
                first_offset = delivery.offset;
            } else {
                futures.push(fut);
            }
        }
        for r in futures::executor::block_on(futures::future::join_all(futures)) {
            r.map_err(|_| self.err(partition, "producer dropped"))?
                .map_err(|(e, _)| self.err(partition, e.to_string()))?;
        }
        if n == plan.chunks.len() {
            self.newest.insert(partition, Some(RunRef { first: first_offset, slot: plan.slot }));
        }
        tracing::trace!(partition, slot = plan.slot, previous = plan.previous, first_offset, "Checkpoint written.");
        Ok(())
    }

    /// The newest complete checkpoint of `partition`, if any.
    pub fn load(&mut self, partition: i32) -> Result<Option<Restored>> {
        let found = find_newest(&mut self.log(partition))?;
        Ok(self.remember(partition, found))
    }

    /// Where the newest complete run of `partition` is (for a write before any load).
    fn locate(&mut self, partition: i32) -> Result<Option<RunRef>> {
        let found = find_newest(&mut self.log(partition))?;
        self.remember(partition, found);
        Ok(self.newest.get(&partition).copied().flatten())
    }

    fn remember(&mut self, partition: i32, found: Found) -> Option<Restored> {
        match found {
            Found::Run { at, restored } => {
                self.newest.insert(partition, Some(at));
                Some(restored)
            }
            Found::Nothing => {
                self.newest.insert(partition, None);
                None
            }
            Found::OtherVersion(version) => {
                tracing::warn!(
                    topic = %self.topic,
                    partition,
                    version,
                    "Ignoring a checkpoint of another version; the partition is rebuilt from its input."
                );
                self.newest.insert(partition, None);
                None
            }
        }
    }

    fn log(&self, partition: i32) -> KafkaLog<'_> {
        KafkaLog { store: self, partition, position: None }
    }
}

/// One checkpoint partition on the broker, read with the store's consumer: sequential reads
/// continue the fetch; a jump re-assigns.
struct KafkaLog<'a> {
    store: &'a CheckpointStore,
    partition: i32,
    /// The offset after the record read last.
    position: Option<i64>,
}

impl ChunkLog for KafkaLog<'_> {
    fn bounds(&mut self) -> Result<(i64, i64)> {
        Ok(self.store.reader.fetch_watermarks(&self.store.topic, self.partition, Duration::from_secs(10))?)
    }

    fn read_at(&mut self, offset: i64) -> Result<(i64, Chunk)> {
        if self.position != Some(offset) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.store.topic, self.partition, Offset::Offset(offset))?;
            self.store.reader.assign(&tpl)?;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match self.store.reader.poll(Timeout::After(Duration::from_millis(200))) {
                Some(Ok(m)) if m.offset() >= offset => {
                    let chunk = Chunk::decode(m.payload().unwrap_or_default()).map_err(|e| {
                        self.store.err(self.partition, format!("undecodable chunk at offset {}: {e}", m.offset()))
                    })?;
                    self.position = Some(m.offset() + 1);
                    return Ok((m.offset(), chunk));
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Err(self.store.err(self.partition, format!("timed out reading the checkpoint at offset {offset}")))
    }
}

#[cfg(test)]
mod tests;
