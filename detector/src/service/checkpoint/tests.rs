//! The restore search over a model of a compacted checkpoint partition. tansu (the local
//! broker) does not compact, so what Redpanda's compaction leaves behind is modelled here:
//! offsets only grow, and compaction keeps the newest record of each key. The store's reads and
//! writes against the real broker are tested in `tests/scale_and_restarts.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use vigil_schemas::{AnomalyState, Transaction, TransactionStatus};

use super::*;
use crate::core::{CoreConfig, Pipeline, Stage1Output, Stage2Output, END_OF_INPUT, MINUTE_MS};

/// Small chunks, so a state of a few bytes spans several.
const CHUNK: usize = 4;

#[derive(Default)]
struct MemLog {
    records: BTreeMap<i64, (String, Vec<u8>)>,
    next: i64,
}

impl MemLog {
    fn append(&mut self, key: &str, bytes: Vec<u8>) -> i64 {
        let o = self.next;
        self.records.insert(o, (key.to_owned(), bytes));
        self.next += 1;
        o
    }

    fn compact(&mut self) {
        let mut newest: HashMap<String, i64> = HashMap::new();
        for (o, (k, _)) in &self.records {
            newest.insert(k.clone(), *o);
        }
        self.records.retain(|o, (k, _)| newest[k.as_str()] == *o);
    }
}

impl ChunkLog for MemLog {
    fn bounds(&mut self) -> Result<(i64, i64)> {
        Ok((self.records.keys().next().copied().unwrap_or(self.next), self.next))
    }

    fn read_at(&mut self, offset: i64) -> Result<(i64, Chunk)> {
        let (o, (_, bytes)) = self.records.range(offset..).next().expect("read_at below the high watermark");
        Ok((*o, Chunk::decode(bytes).expect("a chunk")))
    }
}

/// One process writing checkpoints of partition 0 the way `CheckpointStore` does: it knows the
/// newest complete run from its restore (or its own last write).
struct Writer {
    newest: Option<RunRef>,
}

impl Writer {
    fn restart(log: &mut MemLog) -> (Writer, Option<Restored>) {
        match find_newest(log).unwrap() {
            Found::Run { at, restored } => (Writer { newest: Some(at) }, Some(restored)),
            _ => (Writer { newest: None }, None),
        }
    }

    /// Writes a checkpoint; `crash_after` chunks cuts it short as a `kill -9` mid-write does.
    fn save(&mut self, log: &mut MemLog, input_offset: i64, state: &[u8], crash_after: Option<usize>) {
        let plan = RunPlan::new(0, input_offset, state, self.newest, CHUNK);
        let n = crash_after.unwrap_or(plan.chunks.len()).min(plan.chunks.len());
        let mut first = -1;
        for i in 0..n {
            let o = log.append(&plan.chunks[i].0, plan.encode(i, first).unwrap());
            if i == 0 {
                first = o;
            }
        }
        if n == plan.chunks.len() {
            self.newest = Some(RunRef { first, slot: plan.slot });
        }
    }
}

fn restored(input_offset: i64, state: &[u8]) -> Option<Restored> {
    Some(Restored { version: CHECKPOINT_VERSION, input_offset, state: state.to_vec() })
}

fn restored_v1(input_offset: i64, state: &[u8]) -> Option<Restored> {
    Some(Restored { version: 1, input_offset, state: state.to_vec() })
}

#[test]
fn a_checkpoint_of_several_chunks_is_read_back_whole() {
    let mut log = MemLog::default();
    let (mut w, none) = Writer::restart(&mut log);
    assert_eq!(none, None, "an empty partition has no checkpoint");
    w.save(&mut log, 17, b"0123456789", None);
    w.save(&mut log, 42, b"abcdefghijklm", None);
    assert_eq!(Writer::restart(&mut log).1, restored(42, b"abcdefghijklm"));
    log.compact();
    assert_eq!(Writer::restart(&mut log).1, restored(42, b"abcdefghijklm"));
}

#[test]
fn a_crash_mid_write_then_compaction_still_restores_the_newest_complete_checkpoint() {
    let mut log = MemLog::default();
    let (mut w, _) = Writer::restart(&mut log);
    w.save(&mut log, 10, b"first state!", None);
    w.save(&mut log, 20, b"the second state", None);
    // Killed after two of four chunks of the third.
    w.save(&mut log, 30, b"a third state...", Some(2));
    assert_eq!(Writer::restart(&mut log).1, restored(20, b"the second state"));
    log.compact();
    let (mut w, got) = Writer::restart(&mut log);
    assert_eq!(got, restored(20, b"the second state"), "after compaction");

    // Killed again at once, then again after compaction: the same checkpoint every time.
    w.save(&mut log, 30, b"a third state...", Some(3));
    log.compact();
    let (mut w, got) = Writer::restart(&mut log);
    assert_eq!(got, restored(20, b"the second state"));
    w.save(&mut log, 30, b"a third state...", Some(1));
    log.compact();
    let (mut w, got) = Writer::restart(&mut log);
    assert_eq!(got, restored(20, b"the second state"));

    // A shorter state after a longer one: the longer run's leftover chunks do not confuse it.
    w.save(&mut log, 40, b"tiny", None);
    log.compact();
    assert_eq!(Writer::restart(&mut log).1, restored(40, b"tiny"));
}

/// Writes a checkpoint in the layout of version 1 (one key set `<partition>:<seq>`).
fn save_v1(log: &mut MemLog, input_offset: i64, state: &[u8], crash_after: Option<usize>) {
    let parts: Vec<&[u8]> = state.chunks(CHUNK).collect();
    let n = crash_after.unwrap_or(parts.len());
    let mut first = -1;
    for (seq, data) in parts.iter().enumerate().take(n) {
        let chunk = ChunkV1 {
            version: 1,
            first_offset: first,
            seq: seq as u32,
            last: seq + 1 == parts.len(),
            input_offset,
            data: data.to_vec(),
        };
        let o = log.append(&format!("0:{seq}"), postcard::to_allocvec(&chunk).unwrap());
        if seq == 0 {
            first = o;
        }
    }
}

#[test]
fn with_one_key_set_compaction_after_a_crash_would_leave_no_complete_checkpoint() {
    // Why runs alternate between two slots: the layout of version 1 loses its checkpoint.
    let mut log = MemLog::default();
    save_v1(&mut log, 10, b"the first state!", None);
    save_v1(&mut log, 20, b"the second state", Some(2));
    assert_eq!(Writer::restart(&mut log).1, restored_v1(10, b"the first state!"), "before compaction");
    log.compact();
    assert_eq!(Writer::restart(&mut log).1, None, "the partial run's keys superseded the complete one's");
}

#[test]
fn a_version_1_checkpoint_is_restored_and_survives_a_crash_of_the_first_version_3_write() {
    let mut log = MemLog::default();
    save_v1(&mut log, 10, b"written by v1", None);
    let (mut w, got) = Writer::restart(&mut log);
    assert_eq!(got, restored_v1(10, b"written by v1"));
    w.save(&mut log, 20, b"written by v3", Some(2));
    log.compact();
    let (mut w, got) = Writer::restart(&mut log);
    assert_eq!(got, restored_v1(10, b"written by v1"));
    w.save(&mut log, 20, b"written by v3", None);
    log.compact();
    assert_eq!(Writer::restart(&mut log).1, restored(20, b"written by v3"));
}

#[test]
fn a_checkpoint_of_an_unknown_version_is_reported_as_such() {
    let mut log = MemLog::default();
    let chunk = ChunkV1 { version: 9, first_offset: -1, seq: 0, last: true, input_offset: 5, data: vec![1] };
    log.append("0:0:0", postcard::to_allocvec(&chunk).unwrap());
    assert_eq!(find_newest(&mut log).unwrap(), Found::OtherVersion(9));
}

#[derive(Debug, Clone)]
enum Op {
    /// A checkpoint of this many bytes, cut short after this many chunks if `Some`.
    Save(usize, Option<usize>),
    Compact,
    /// The process restarts: what it restores must be the newest complete checkpoint.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..20, prop::option::of(0usize..5)).prop_map(|(n, c)| Op::Save(n, c)),
        1 => Just(Op::Compact),
        2 => Just(Op::Restart),
    ]
}

proptest! {
    #[test]
    fn whatever_the_crashes_and_compactions_a_restart_restores_the_newest_complete_checkpoint(
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut log = MemLog::default();
        let (mut w, _) = Writer::restart(&mut log);
        let mut expected: Option<Restored> = None;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Save(n, crash) => {
                    let state: Vec<u8> = (0..n).map(|b| (i * 31 + b) as u8).collect();
                    w.save(&mut log, i as i64, &state, crash);
                    let chunks = state.len().div_ceil(CHUNK).max(1);
                    if crash.is_none_or(|c| c >= chunks) {
                        expected = restored(i as i64, &state);
                    } else {
                        // A process killed mid-write starts again from what it can restore.
                        let (w2, got) = Writer::restart(&mut log);
                        prop_assert_eq!(&got, &expected);
                        w = w2;
                    }
                }
                Op::Compact => log.compact(),
                Op::Restart => {
                    let (w2, got) = Writer::restart(&mut log);
                    prop_assert_eq!(&got, &expected);
                    w = w2;
                }
            }
        }
        log.compact();
        prop_assert_eq!(Writer::restart(&mut log).1, expected);
    }
}

#[test]
fn a_version_2_chunk_is_read_and_restored_with_its_version() {
    // The chunk layout of version 2 is version 3's: only the state inside differs.
    let mut log = MemLog::default();
    let chunk = Chunk {
        version: 2,
        first_offset: -1,
        seq: 0,
        last: true,
        input_offset: 7,
        data: vec![1, 2],
        slot: 0,
        previous: -1,
    };
    log.append("0:0:0", postcard::to_allocvec(&chunk).unwrap());
    assert_eq!(Writer::restart(&mut log).1, Some(Restored { version: 2, input_offset: 7, state: vec![1, 2] }));
}

// The states of checkpoint version 2, as the code before version 3 wrote them
// (`src/core/fixtures/`): the merge state of a pipeline of two partitions after 40 normal minutes
// and three of a denied spike, its anomaly still open, and that pipeline's partition 0.
const MERGE_V2: &[u8] = include_bytes!("../../core/fixtures/merge-state-v2.postcard");
const PARTITION_V2: &[u8] = include_bytes!("../../core/fixtures/partition-state-v2.postcard");
// The states of checkpoint version 3, as the code before version 4 (the volume rules) wrote
// them: a pipeline of two partitions after 60 normal minutes of 200 transactions (stamped three
// minutes before their record timestamps) and four of a denied spike, its anomaly still open.
const MERGE_V3: &[u8] = include_bytes!("../../core/fixtures/merge-state-v3.postcard");
const PARTITION_V3: &[u8] = include_bytes!("../../core/fixtures/partition-state-v3.postcard");
// The states of checkpoint version 4, as the code before version 5 (the volume rules' profile of
// earlier days) wrote them: a pipeline of two partitions after 100 normal minutes of 200
// transactions (stamped three minutes before their record timestamps) from 12:00Z, then five of
// 80: the global volume drop still open.
const MERGE_V4: &[u8] = include_bytes!("../../core/fixtures/merge-state-v4.postcard");
const PARTITION_V4: &[u8] = include_bytes!("../../core/fixtures/partition-state-v4.postcard");
/// The fixtures' first minute (12:00Z) and length.
const FIXTURE_T0: i64 = 1_765_713_600_000;
const FIXTURE_MINUTES: i64 = 43;

#[test]
fn version_2_states_are_decoded_through_their_frozen_shapes_and_not_as_todays() {
    let merge = MergeState::decode(2, MERGE_V2).unwrap();
    assert!(merge.active_anomalies() > 0, "the open anomaly survives");
    assert_eq!(merge.frontier(), MergeState::decode(1, MERGE_V2).unwrap().frontier(), "1 and 2 share the shape");
    let part = PartitionState::decode(2, PARTITION_V2).unwrap();
    assert_eq!((part.partition, part.partition_count), (0, 2));
    assert!(part.open_windows() > 0 && part.amount_keys() > 0 && part.dedup_entries() > 0);
    assert_eq!(part.feed_delay().support(), 0, "no delay learned yet");
    // Read as today's shape, the bytes are refused rather than misread.
    assert!(PartitionState::decode(CHECKPOINT_VERSION, PARTITION_V2).is_err());
    assert!(MergeState::decode(9, MERGE_V2).is_err(), "an unknown version");
}

#[test]
fn todays_states_round_trip_through_the_current_version() {
    let mut part = PartitionState::decode(2, PARTITION_V2).unwrap();
    let cfg = CoreConfig::default();
    let t = FIXTURE_T0 + FIXTURE_MINUTES * MINUTE_MS;
    for (i, tx) in traffic(t, 1, 11).iter().enumerate() {
        part.process(tx, tx.occurred_at + 180_000 + i as i64, &cfg);
    }
    let back = PartitionState::decode(CHECKPOINT_VERSION, &part.encode().unwrap()).unwrap();
    // (Hash-ordered parts make the bytes themselves differ between encodings.)
    assert_eq!(back.feed_delay(), part.feed_delay());
    assert!(back.feed_delay().support() > 0);
    assert_eq!(
        (back.watermark(), back.open_windows(), back.dedup_entries(), back.amount_keys()),
        (part.watermark(), part.open_windows(), part.dedup_entries(), part.amount_keys())
    );
    let merge = MergeState::decode(2, MERGE_V2).unwrap();
    let back = MergeState::decode(CHECKPOINT_VERSION, &merge.encode().unwrap()).unwrap();
    assert_eq!(
        (back.frontier(), back.pending_minutes(), back.active_anomalies()),
        (merge.frontier(), merge.pending_minutes(), merge.active_anomalies())
    );
}

#[test]
fn a_merge_state_restored_from_version_2_keeps_its_open_anomaly_and_goes_on() {
    let v2: crate::core::legacy::MergeStateV2 = postcard::from_bytes(MERGE_V2).unwrap();
    let open: Vec<(String, i64)> =
        v2.status_series.iter().filter_map(|s| s.active.as_ref()).map(|a| (a.id.clone(), a.sequence)).collect();
    assert!(!open.is_empty(), "the fixture holds an open anomaly");

    let cfg = CoreConfig::default();
    let mut merge = MergeState::decode(2, MERGE_V2).unwrap();
    let mut parts = [PartitionState::decode(2, PARTITION_V2).unwrap(), PartitionState::new(1, 2)];
    // Ten more minutes of normal traffic through both partitions (partition 1 starts afresh: its
    // state is not among the fixtures), then every partition goes idle.
    let router = Pipeline::new(cfg.clone(), 2);
    let start = FIXTURE_T0 + FIXTURE_MINUTES * MINUTE_MS;
    let mut out = Vec::new();
    let feed = |merge: &mut MergeState, partials: Vec<Stage1Output>, out: &mut Vec<Stage2Output>| {
        for o in partials {
            if let Stage1Output::Partial(p) = o {
                out.extend(merge.on_partial(&p, &cfg));
            }
        }
    };
    for tx in traffic(start, 10, 200) {
        let p = router.partition_of(&tx) as usize;
        let step = parts[p].process(&tx, tx.occurred_at, &cfg);
        feed(&mut merge, step.outputs, &mut out);
    }
    for p in &mut parts {
        let idle = p.go_idle(END_OF_INPUT, &cfg);
        feed(&mut merge, idle, &mut out);
    }

    let finals: BTreeSet<i64> = out
        .iter()
        .filter_map(|o| if let Stage2Output::Aggregate(a) = o { Some(a.minute_start) } else { None })
        .collect();
    for m in 0..10 {
        assert!(finals.contains(&(start + m * MINUTE_MS)), "minute {m} after the fixture is final: {finals:?}");
    }
    for (id, sequence) in open {
        let states: Vec<(AnomalyState, i64)> = out
            .iter()
            .filter_map(|o| if let Stage2Output::Anomaly(a) = o { Some(a) } else { None })
            .filter(|a| a.id == id)
            .map(|a| (a.state, a.sequence))
            .collect();
        assert!(states.iter().all(|(_, s)| *s > sequence), "{id}: its sequence goes on from {sequence}: {states:?}");
        assert_eq!(states.last().map(|(s, _)| *s), Some(AnomalyState::Resolved), "{id} resolves: {states:?}");
    }
}

/// `minutes` of normal traffic from `start`, `per_minute` a minute, in event-time order.
fn traffic(start: i64, minutes: i64, per_minute: i64) -> Vec<Transaction> {
    let categories = ["food", "travel", "electronics", "fuel", "grocery"];
    let mut out = Vec::new();
    for m in 0..minutes {
        for i in 0..per_minute {
            let n = m * per_minute + i;
            let status = match n % 100 {
                0..=4 => TransactionStatus::Denied,
                5..=7 => TransactionStatus::Failed,
                8..=9 => TransactionStatus::Reversed,
                _ => TransactionStatus::Approved,
            };
            out.push(Transaction {
                transaction_id: uuid::Uuid::from_u64_pair(99, n as u64).to_string(),
                occurred_at: start + m * MINUTE_MS + i * MINUTE_MS / per_minute,
                status,
                auth_code: if status == TransactionStatus::Denied { "05".into() } else { "00".into() },
                amount_minor: 500 + (n * 37) % 4500,
                currency: "EUR".into(),
                category: categories[(n % 5) as usize].into(),
                merchant_id: format!("m{}", n % 20),
                received_at: 0,
            });
        }
    }
    out
}

#[test]
fn version_3_states_are_decoded_through_their_frozen_shapes_and_go_on() {
    let merge = MergeState::decode(3, MERGE_V3).unwrap();
    assert!(merge.active_anomalies() > 0, "the open anomaly survives");
    assert!(merge.frontier().is_some());
    let part = PartitionState::decode(3, PARTITION_V3).unwrap();
    assert_eq!((part.partition, part.partition_count), (0, 2));
    assert!(part.feed_delay().support() > 0, "the learned delay survives");
    assert!(part.breakdown_watched().1 > 0, "the watched merchants survive");
    // Read as today's shape, the bytes are refused rather than misread.
    assert!(PartitionState::decode(CHECKPOINT_VERSION, PARTITION_V3).is_err());
    assert!(MergeState::decode(CHECKPOINT_VERSION, MERGE_V3).is_err());
    // And today's states round-trip through the current version.
    let back = MergeState::decode(CHECKPOINT_VERSION, &merge.encode().unwrap()).unwrap();
    assert_eq!((back.frontier(), back.active_anomalies()), (merge.frontier(), merge.active_anomalies()));
    let back = PartitionState::decode(CHECKPOINT_VERSION, &part.encode().unwrap()).unwrap();
    assert_eq!((back.watermark(), back.open_windows()), (part.watermark(), part.open_windows()));
}

#[test]
fn version_4_states_are_decoded_through_their_frozen_shapes_and_their_open_volume_drop_goes_on() {
    let v4: crate::core::legacy::MergeStateV4 = postcard::from_bytes(MERGE_V4).unwrap();
    assert!(v4.volume.active.is_some(), "the fixture holds an open volume drop");
    let merge = MergeState::decode(4, MERGE_V4).unwrap();
    assert!(merge.active_anomalies() > 0, "the open anomaly survives");
    let part = PartitionState::decode(4, PARTITION_V4).unwrap();
    assert_eq!((part.partition, part.partition_count), (0, 2));
    assert!(part.feed_delay().support() > 0 && part.breakdown_watched().0 > 0);
    assert!(part.volume_series().0 > 0, "the categories' volume series survive");
    // Read as today's shape, the bytes are refused rather than misread.
    assert!(PartitionState::decode(CHECKPOINT_VERSION, PARTITION_V4).is_err());
    assert!(MergeState::decode(CHECKPOINT_VERSION, MERGE_V4).is_err());

    // Traffic back to normal through both partitions (partition 1 starts afresh): the drop
    // resolves, its sequence going on from the fixture's.
    let cfg = CoreConfig::default();
    let mut merge = merge;
    let mut parts = [part, PartitionState::new(1, 2)];
    let router = Pipeline::new(cfg.clone(), 2);
    let start = FIXTURE_T0 + 105 * MINUTE_MS;
    let mut out = Vec::new();
    let feed = |merge: &mut MergeState, partials: Vec<Stage1Output>, out: &mut Vec<Stage2Output>| {
        for o in partials {
            if let Stage1Output::Partial(p) = o {
                out.extend(merge.on_partial(&p, &cfg));
            }
        }
    };
    for mut tx in traffic(start, 10, 200) {
        tx.transaction_id.push('r');
        let p = router.partition_of(&tx) as usize;
        let step = parts[p].process(&tx, tx.occurred_at + 180_000, &cfg);
        feed(&mut merge, step.outputs, &mut out);
    }
    let states: Vec<(AnomalyState, i64)> = out
        .iter()
        .filter_map(|o| if let Stage2Output::Anomaly(a) = o { Some(a) } else { None })
        .filter(|a| a.rule == vigil_schemas::AnomalyRule::VolumeDrop)
        .map(|a| (a.state, a.sequence))
        .collect();
    assert_eq!(states.last().map(|(s, _)| *s), Some(AnomalyState::Resolved), "{states:?}");
    assert!(states.iter().all(|(_, seq)| *seq > 3), "sequences go on from the fixture's: {states:?}");
    // And today's states round-trip through the current version.
    let back = MergeState::decode(CHECKPOINT_VERSION, &merge.encode().unwrap()).unwrap();
    assert_eq!((back.frontier(), back.active_anomalies()), (merge.frontier(), merge.active_anomalies()));
    let back = PartitionState::decode(CHECKPOINT_VERSION, &parts[0].encode().unwrap()).unwrap();
    assert_eq!((back.watermark(), back.volume_series()), (parts[0].watermark(), parts[0].volume_series()));
}
