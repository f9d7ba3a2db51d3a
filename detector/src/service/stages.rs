//! The two stages as [`Stage`]s: thin adapters from Kafka messages to the pure core.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use vigil_schemas::{Codec, MinutePartial, Transaction, TransactionVerdict, VerdictDecision};

use super::metrics::{DeadLetterLabels, DetectorMetrics, VerdictLabels};
use super::outputs::{Origin, Outputs};
use super::settings::SharedConfig;
use super::stage::Stage;
use crate::core::merge::is_from_the_future;
use crate::core::{CoreConfig, MergeState, PartitionState, Refusal, Stage1Output, Stage2Output, Step, Verdict};
use crate::error::Result;

/// Stage 1: transactions in, partials, late bookings and amount anomalies out.
pub struct PartitionStage {
    /// The core's configuration, its run-time settings included (replaced as they change).
    cfg: SharedConfig,
    codec: Arc<Codec>,
    metrics: DetectorMetrics,
    /// The per-verdict counters, looked up once rather than per event.
    verdicts: Vec<(&'static str, Counter)>,
}

impl PartitionStage {
    pub fn new(cfg: SharedConfig, codec: Arc<Codec>, metrics: DetectorMetrics) -> Self {
        let verdicts = ["counted", "late", "duplicate", "refused_future", "refused_old", "undecodable"]
            .into_iter()
            .map(|v| (v, metrics.events.get_or_create(&VerdictLabels { verdict: v }).clone()))
            .collect();
        PartitionStage { cfg, codec, metrics, verdicts }
    }

    fn verdict(&self, v: &'static str) {
        match self.verdicts.iter().find(|(name, _)| *name == v) {
            Some((_, c)) => {
                c.inc();
            }
            None => {
                self.metrics.events.get_or_create(&VerdictLabels { verdict: v }).inc();
            }
        }
    }

    fn dead_letter(&self, out: &mut Outputs, origin: &Origin<'_>, label: &'static str, reason: &str) -> Result<()> {
        self.metrics.dead_letters.get_or_create(&DeadLetterLabels { stage: Self::NAME, reason: label }).inc();
        tracing::warn!(
            stage = Self::NAME,
            partition = origin.partition,
            offset = origin.offset,
            reason,
            "Message dead-lettered."
        );
        out.dead_letter(origin, reason)
    }
}

impl Stage for PartitionStage {
    type State = PartitionState;
    const NAME: &'static str = "partition";

    fn new_state(&self, partition: i32, partition_count: i32) -> PartitionState {
        PartitionState::new(partition, partition_count)
    }

    fn process(
        &self,
        state: &mut PartitionState,
        msg: &Origin<'_>,
        timestamp: Option<i64>,
        out: &mut Outputs,
    ) -> Result<()> {
        let tx: Transaction = match self.codec.decode(msg.payload) {
            Ok(t) => t,
            Err(e) => {
                self.verdict("undecodable");
                return self.dead_letter(out, msg, "undecodable", &format!("not a Transaction: {e}"));
            }
        };
        let record_ts = timestamp.unwrap_or(tx.received_at);
        let now = chrono::Utc::now().timestamp_millis();
        self.metrics.processing_latency.observe(((now - record_ts).max(0) as f64) / 1000.0);
        let step = state.process(&tx, record_ts, &self.cfg.current());
        if let Some(reply_to) = msg.reply_to {
            out.verdict(&verdict_of(&tx, reply_to, &step))?;
        }
        match step.verdict {
            Verdict::Counted => {
                self.verdict("counted");
                self.metrics.transaction_counted(&tx);
            }
            Verdict::Late => {
                self.verdict("late");
                self.metrics.transaction_counted(&tx);
                self.metrics.late_events.inc();
                if !step.dedup_checked {
                    self.metrics.late_unchecked.inc();
                }
            }
            Verdict::Duplicate => self.verdict("duplicate"),
            Verdict::Refused(r) => {
                let label = match r {
                    Refusal::FromTheFuture => "refused_future",
                    Refusal::TooOld => "refused_old",
                };
                self.verdict(label);
                return self.dead_letter(out, msg, label, r.reason());
            }
        }
        self.metrics.amount_scores(&step.amount_scores);
        self.metrics.windows_closed.inc_by(step.windows_closed as u64);
        route_stage1(step.outputs, out, &self.metrics)
    }

    fn on_idle(&self, state: &mut PartitionState, now_ms: i64, out: &mut Outputs) -> Result<()> {
        let outputs = state.go_idle(now_ms, &self.cfg.current());
        if state.is_idle() && !outputs.is_empty() {
            tracing::debug!(partition = state.partition, "Partition idle: its open windows are closed.");
        } else if !outputs.is_empty() {
            tracing::debug!(partition = state.partition, "Quiet partition: the wall clock closed past windows.");
        }
        route_stage1(outputs, out, &self.metrics)
    }

    fn observe(&self, states: &mut dyn Iterator<Item = &PartitionState>) {
        let (mut dedup, mut keys, mut open) = (0, 0, 0);
        for s in states {
            dedup += s.dedup_entries();
            keys += s.amount_keys();
            open += s.open_windows();
        }
        self.metrics.dedup_entries.set(dedup as i64);
        self.metrics.amount_baseline_keys.set(keys as i64);
        self.metrics.open_windows.set(open as i64);
    }
}

/// The answer to a producer that asked for this transaction's verdict: what the core did with it
/// and the anomalies it raised naming it, with exactly the ids they are stored under.
fn verdict_of(tx: &Transaction, reply_to: &str, step: &Step) -> TransactionVerdict {
    let named = step.outputs.iter().filter_map(|o| match o {
        Stage1Output::Anomaly(a) if a.transaction_id.as_deref() == Some(tx.transaction_id.as_str()) => Some(a),
        _ => None,
    });
    let (mut ids, mut severity) = (Vec::new(), None);
    for a in named {
        ids.push(a.id.clone());
        severity = severity.max(Some(a.severity));
    }
    TransactionVerdict {
        transaction_id: tx.transaction_id.clone(),
        reply_to: reply_to.to_owned(),
        occurred_at: tx.occurred_at,
        decision: match step.verdict {
            Verdict::Counted => VerdictDecision::Counted,
            Verdict::Late => VerdictDecision::Late,
            Verdict::Duplicate => VerdictDecision::Duplicate,
            Verdict::Refused(_) => VerdictDecision::Refused,
        },
        anomaly: !ids.is_empty(),
        severity: severity.map(|s| s.as_str().to_owned()),
        anomaly_ids: ids,
    }
}

fn route_stage1(outputs: Vec<Stage1Output>, out: &mut Outputs, metrics: &DetectorMetrics) -> Result<()> {
    for o in outputs {
        match o {
            Stage1Output::Partial(p) => out.partial(&p)?,
            Stage1Output::Late(l) => out.late(&l)?,
            Stage1Output::MerchantMinute(m) => {
                metrics.merchant_minutes.inc();
                out.merchant_minute(&m)?;
            }
            Stage1Output::Anomaly(a) => {
                metrics.anomaly(&a);
                out.anomaly(&a)?;
            }
        }
    }
    Ok(())
}

/// Stage 2: partials in, final minutes, late bookings and rate anomalies out.
pub struct MergeStage {
    pub cfg: Arc<CoreConfig>,
    pub codec: Arc<Codec>,
    pub metrics: DetectorMetrics,
}

impl Stage for MergeStage {
    type State = MergeState;
    const NAME: &'static str = "merge";

    fn new_state(&self, _partition: i32, _partition_count: i32) -> MergeState {
        MergeState::new()
    }

    fn process(
        &self,
        state: &mut MergeState,
        msg: &Origin<'_>,
        timestamp: Option<i64>,
        out: &mut Outputs,
    ) -> Result<()> {
        let p: MinutePartial = match self.codec.decode(msg.payload) {
            Ok(p) => p,
            Err(e) => {
                self.metrics
                    .dead_letters
                    .get_or_create(&DeadLetterLabels { stage: Self::NAME, reason: "undecodable" })
                    .inc();
                tracing::warn!(offset = msg.offset, error = %e, "Undecodable partial dead-lettered.");
                return out.dead_letter(msg, &format!("not a MinutePartial: {e}"));
            }
        };
        if timestamp.is_some_and(|ts| is_from_the_future(&p, ts, &self.cfg)) {
            self.metrics
                .dead_letters
                .get_or_create(&DeadLetterLabels { stage: Self::NAME, reason: "refused_future" })
                .inc();
            tracing::warn!(offset = msg.offset, "Partial from the future dead-lettered.");
            return out.dead_letter(
                msg,
                "the partial's watermark or minute is further after its record timestamp than MAX_FUTURE_SKEW allows",
            );
        }
        for o in state.on_partial(&p, &self.cfg) {
            match o {
                Stage2Output::Aggregate(a) => {
                    self.metrics.minutes_final.inc();
                    out.aggregate(&a)?;
                }
                Stage2Output::Late(l) => out.late(&l)?,
                Stage2Output::Anomaly(a) => {
                    self.metrics.anomaly(&a);
                    out.anomaly(&a)?;
                }
            }
        }
        Ok(())
    }

    fn observe(&self, states: &mut dyn Iterator<Item = &MergeState>) {
        self.metrics.pending_minutes.set(states.map(|s| s.pending_minutes() as i64).sum());
    }
}
