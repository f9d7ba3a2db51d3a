//! The restore search over a model of a compacted checkpoint partition. tansu (the local
//! broker) does not compact, so what Redpanda's compaction leaves behind is modelled here:
//! offsets only grow, and compaction keeps the newest record of each key. The store's reads and
//! writes against the real broker are tested in `tests/scale_and_restarts.rs`.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

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
    Some(Restored { input_offset, state: state.to_vec() })
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
    assert_eq!(Writer::restart(&mut log).1, restored(10, b"the first state!"), "before compaction");
    log.compact();
    assert_eq!(Writer::restart(&mut log).1, None, "the partial run's keys superseded the complete one's");
}

#[test]
fn a_version_1_checkpoint_is_restored_and_survives_a_crash_of_the_first_version_2_write() {
    let mut log = MemLog::default();
    save_v1(&mut log, 10, b"written by v1", None);
    let (mut w, got) = Writer::restart(&mut log);
    assert_eq!(got, restored(10, b"written by v1"));
    w.save(&mut log, 20, b"written by v2", Some(2));
    log.compact();
    let (mut w, got) = Writer::restart(&mut log);
    assert_eq!(got, restored(10, b"written by v1"));
    w.save(&mut log, 20, b"written by v2", None);
    log.compact();
    assert_eq!(Writer::restart(&mut log).1, restored(20, b"written by v2"));
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
