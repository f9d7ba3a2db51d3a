//! The detector's metrics (`vigil_detector_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use vigil_common::metrics::{latency_histogram, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// counted, late, duplicate, refused_future, refused_old, undecodable
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    pub rule: &'static str,
    pub severity: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// partition (stage 1) or merge (stage 2)
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub stage: &'static str,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub stage: &'static str,
    pub reason: &'static str,
}

#[derive(Clone)]
pub struct DetectorMetrics {
    pub events: Family<VerdictLabels, Counter>,
    pub windows_closed: Counter,
    pub minutes_final: Counter,
    pub late_events: Counter,
    pub late_unchecked: Counter,
    pub merchant_minutes: Counter,
    pub anomalies: Family<AnomalyLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub dedup_entries: Gauge,
    pub amount_baseline_keys: Gauge,
    pub open_windows: Gauge,
    pub pending_minutes: Gauge,
    pub assigned_partitions: Family<StageLabels, Gauge>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub processing_latency: Histogram,
    pub checkpoint_duration: Family<StageLabels, Histogram>,
    pub checkpoint_bytes: Family<StageLabels, Gauge>,
    pub restore_duration: Family<StageLabels, Histogram>,
}

impl DetectorMetrics {
    pub fn new(m: &Metrics) -> Self {
        let s = DetectorMetrics {
            events: Family::default(),
            windows_closed: Counter::default(),
            minutes_final: Counter::default(),
            late_events: Counter::default(),
            late_unchecked: Counter::default(),
            merchant_minutes: Counter::default(),
            anomalies: Family::default(),
            dead_letters: Family::default(),
            dedup_entries: Gauge::default(),
            amount_baseline_keys: Gauge::default(),
            open_windows: Gauge::default(),
            pending_minutes: Gauge::default(),
            assigned_partitions: Family::default(),
            consumer_lag: Family::default(),
            processing_latency: latency_histogram(),
            checkpoint_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            checkpoint_bytes: Family::default(),
            restore_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        // Every label set exists from the start at 0, so a rate() or increase() over it sees the
        // first occurrence.
        for rule in
            ["denied_rate", "failed_rate", "reversed_rate", "auth_code_rate", "amount_zscore", "amount_low_variance"]
        {
            for severity in ["medium", "high", "critical"] {
                for state in ["firing", "updated", "resolved"] {
                    let _ = s.anomalies.get_or_create(&AnomalyLabels { rule, severity, state });
                }
            }
        }
        for verdict in ["counted", "late", "duplicate", "refused_future", "refused_old", "undecodable"] {
            let _ = s.events.get_or_create(&VerdictLabels { verdict });
        }
        m.register("events", "Transactions processed, by verdict", s.events.clone());
        m.register("windows_closed", "Per-partition minute windows closed (stage 1)", s.windows_closed.clone());
        m.register("minutes_final", "Minutes made final over all partitions (stage 2)", s.minutes_final.clone());
        m.register("late_events", "Events that arrived after their minute was final", s.late_events.clone());
        m.register(
            "late_unchecked_events",
            "Late events older than DEDUP_HORIZON, booked without a duplicate check",
            s.late_unchecked.clone(),
        );
        m.register(
            "merchant_minutes",
            "Watched merchants' minutes sent for the drill-down (stage 1)",
            s.merchant_minutes.clone(),
        );
        m.register("anomalies", "Anomaly states emitted, by rule, severity and state", s.anomalies.clone());
        m.register(
            "dead_letters",
            "Messages sent to the dead-letter topic, by stage and reason",
            s.dead_letters.clone(),
        );
        m.register("dedup_entries", "Transaction ids remembered for duplicate detection", s.dedup_entries.clone());
        m.register(
            "amount_baseline_keys",
            "Category and merchant amount baselines held",
            s.amount_baseline_keys.clone(),
        );
        m.register("open_windows", "Minute windows open in stage 1", s.open_windows.clone());
        m.register("pending_minutes", "Minutes awaiting partials in stage 2", s.pending_minutes.clone());
        m.register("assigned_partitions", "Input partitions assigned to this instance", s.assigned_partitions.clone());
        m.register("consumer_lag_messages", "Messages behind the log end, per input partition", s.consumer_lag.clone());
        m.register(
            "processing_latency_seconds",
            "Time from the broker's record timestamp to processing",
            s.processing_latency.clone(),
        );
        m.register("checkpoint_duration_seconds", "Time to write a state checkpoint", s.checkpoint_duration.clone());
        m.register("checkpoint_bytes", "Size of the last state checkpoint", s.checkpoint_bytes.clone());
        m.register("restore_duration_seconds", "Time to restore a partition's state", s.restore_duration.clone());
        s
    }

    pub fn anomaly(&self, a: &vigil_schemas::Anomaly) {
        self.anomalies
            .get_or_create(&AnomalyLabels {
                rule: a.rule.as_str(),
                severity: a.severity.as_str(),
                state: a.state.as_str(),
            })
            .inc();
    }
}
