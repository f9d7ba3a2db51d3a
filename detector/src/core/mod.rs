//! The pure core: windows, baselines, rules and the duplicate set. Events and time in, outputs
//! out; no Kafka, no database, no wall clock. The Kafka service and the `replay` command are
//! thin loops around it, so tests, replays and production run the same code.

pub mod amount;
pub mod breakdown;
pub mod config;
pub mod counts;
pub mod dedup;
mod format;
pub mod keyed;
pub mod legacy;
pub mod merge;
pub mod partition;
pub mod rate;
pub mod series;
pub mod settings;
pub mod stats;
pub mod volume;

pub use config::{AmountConfig, CoreConfig, RateConfig, RateMethod, VolumeConfig, MINUTE_MS};
pub use merge::{MergeState, Stage2Output};
pub use partition::{PartitionState, Refusal, Stage1Output, Step, Verdict, END_OF_INPUT};

use vigil_schemas::{Anomaly, LateEvents, MerchantMinute, MinuteAggregate, Transaction};

/// A final output of the whole detector.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Aggregate(MinuteAggregate),
    Late(LateEvents),
    Anomaly(Anomaly),
    /// A watched merchant's counts in one category and final minute of its partition.
    MerchantMinute(MerchantMinute),
}

/// Both stages in one process, for `replay` and tests: `partition_count` stage-1 states feeding
/// one merge state directly.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub cfg: CoreConfig,
    partitions: Vec<PartitionState>,
    merge: MergeState,
}

impl Pipeline {
    pub fn new(cfg: CoreConfig, partition_count: i32) -> Self {
        let n = partition_count.max(1);
        Pipeline { cfg, partitions: (0..n).map(|p| PartitionState::new(p, n)).collect(), merge: MergeState::new() }
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// The partition a transaction goes to (by category, as the producer keys it).
    pub fn partition_of(&self, tx: &Transaction) -> i32 {
        let h = tx.category.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        (h % self.partitions.len() as u32) as i32
    }

    /// Processes one event in its partition; record time = event time.
    pub fn push(&mut self, tx: &Transaction) -> (Verdict, Vec<Output>) {
        let p = self.partition_of(tx);
        self.push_to(p, tx, tx.occurred_at)
    }

    pub fn push_to(&mut self, partition: i32, tx: &Transaction, record_ts: i64) -> (Verdict, Vec<Output>) {
        let Some(state) = self.partitions.get_mut(partition as usize) else {
            return (Verdict::Counted, Vec::new());
        };
        let step = state.process(tx, record_ts, &self.cfg);
        let outs = self.route(step.outputs);
        (step.verdict, outs)
    }

    /// The wall clock reads `now_ms` and no record arrived for the idle timeout (what the
    /// service does for each quiet partition): quiet partitions close the minutes the clock has
    /// passed, and those of a live feed that stopped report time moving on.
    pub fn idle(&mut self, now_ms: i64) -> Vec<Output> {
        let mut stage1 = Vec::new();
        for p in &mut self.partitions {
            stage1.extend(p.go_idle(now_ms, &self.cfg));
        }
        self.route(stage1)
    }

    /// Every partition goes idle: all windows close and everything pending becomes final.
    pub fn finish(&mut self) -> Vec<Output> {
        self.idle(END_OF_INPUT)
    }

    fn route(&mut self, outs: Vec<Stage1Output>) -> Vec<Output> {
        let mut result = Vec::new();
        for o in outs {
            match o {
                Stage1Output::Anomaly(a) => result.push(Output::Anomaly(a)),
                Stage1Output::Late(l) => result.push(Output::Late(l)),
                Stage1Output::MerchantMinute(m) => result.push(Output::MerchantMinute(m)),
                Stage1Output::Partial(p) => {
                    for o2 in self.merge.on_partial(&p, &self.cfg) {
                        result.push(match o2 {
                            Stage2Output::Aggregate(a) => Output::Aggregate(a),
                            Stage2Output::Late(l) => Output::Late(l),
                            Stage2Output::Anomaly(a) => Output::Anomaly(a),
                        });
                    }
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests;
