//! The detector's metrics (`vigil_detector_*`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use vigil_common::metrics::{latency_histogram, Metrics};
use vigil_schemas::{Anomaly, AnomalyRule, AnomalyState, Severity, Transaction, TransactionStatus};

use crate::core::amount::AmountScore;

/// Default of `METRICS_MAX_CATEGORIES`: categories with their own label in
/// `vigil_detector_transactions_total`; later ones are counted as `other`.
pub const DEFAULT_MAX_CATEGORIES: usize = 100;

/// The label of every category beyond the first `METRICS_MAX_CATEGORIES`.
pub const OTHER_CATEGORY: &str = "other";

/// Open anomalies whose highest severity is remembered for the escalation counter. The core
/// holds at most one open anomaly per watched series; beyond this many ids the oldest is
/// forgotten (an escalation of that anomaly is then not counted).
pub const MAX_TRACKED_ANOMALIES: usize = 100_000;

const RULES: [&str; 8] = [
    "denied_rate",
    "failed_rate",
    "reversed_rate",
    "auth_code_rate",
    "amount_zscore",
    "amount_low_variance",
    "volume_drop",
    "volume_surge",
];
const SEVERITIES: [&str; 3] = ["medium", "high", "critical"];

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
pub struct RuleSeverityLabels {
    pub rule: &'static str,
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransactionLabels {
    /// The transaction's category, or `other` beyond the first `METRICS_MAX_CATEGORIES`.
    pub category: String,
    pub status: &'static str,
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
    pub anomalies_opened: Family<RuleSeverityLabels, Counter>,
    pub anomaly_escalations: Family<RuleSeverityLabels, Counter>,
    pub amount_below_min: Family<SeverityLabels, Counter>,
    pub transactions: Family<TransactionLabels, Counter>,
    categories: Arc<CategoryCounters>,
    peaks: Arc<Mutex<Peaks>>,
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
            anomalies_opened: Family::default(),
            anomaly_escalations: Family::default(),
            amount_below_min: Family::default(),
            transactions: Family::default(),
            categories: Arc::new(CategoryCounters::new(0, &Family::default())),
            peaks: Arc::new(Mutex::new(Peaks::default())),
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
        for rule in RULES {
            for severity in SEVERITIES {
                for state in ["firing", "updated", "resolved"] {
                    let _ = s.anomalies.get_or_create(&AnomalyLabels { rule, severity, state });
                }
                let _ = s.anomalies_opened.get_or_create(&RuleSeverityLabels { rule, severity });
                let _ = s.anomaly_escalations.get_or_create(&RuleSeverityLabels { rule, severity });
            }
        }
        for severity in SEVERITIES {
            let _ = s.amount_below_min.get_or_create(&SeverityLabels { severity });
        }
        let s = s.with_max_categories(DEFAULT_MAX_CATEGORIES);
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
            "anomalies_opened",
            "Anomalies opened (each counted once, when it first fires), by rule and opening severity",
            s.anomalies_opened.clone(),
        );
        m.register(
            "anomaly_escalations",
            "Anomalies that reached a severity above every earlier one of theirs, by rule and the severity reached",
            s.anomaly_escalations.clone(),
        );
        m.register(
            "amount_scores_below_min",
            "Amount judgements that reached a tier below AMOUNT_MIN_SEVERITY (not emitted), by tier",
            s.amount_below_min.clone(),
        );
        m.register(
            "transactions",
            "Transactions counted after duplicates were dropped (late ones included), by category (the first \
             METRICS_MAX_CATEGORIES; the rest as other) and status",
            s.transactions.clone(),
        );
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

    /// The same counters with at most `max` categories labelled by name (`METRICS_MAX_CATEGORIES`).
    pub fn with_max_categories(mut self, max: usize) -> Self {
        self.categories = Arc::new(CategoryCounters::new(max, &self.transactions));
        self
    }

    /// Every anomaly state the detector emits: its state transition, and the anomaly's opening
    /// or escalation when it is one.
    pub fn anomaly(&self, a: &Anomaly) {
        let (rule, severity) = (a.rule.as_str(), a.severity.as_str());
        self.anomalies.get_or_create(&AnomalyLabels { rule, severity, state: a.state.as_str() }).inc();
        let labels = RuleSeverityLabels { rule, severity };
        match self.peaks.lock().unwrap_or_else(|e| e.into_inner()).observe(a) {
            Change::Opened => {
                self.anomalies_opened.get_or_create(&labels).inc();
            }
            Change::Escalated => {
                self.anomaly_escalations.get_or_create(&labels).inc();
            }
            Change::None => {}
        }
    }

    /// A transaction the rates see (verdict counted) or book late (verdict late): not a
    /// duplicate, not refused.
    pub fn transaction_counted(&self, tx: &Transaction) {
        self.categories.inc(&self.transactions, &tx.category, tx.status);
    }

    /// The amount judgements of one transaction: each tier reached but not emitted (below
    /// `AMOUNT_MIN_SEVERITY`) is counted.
    pub fn amount_scores(&self, scores: &[AmountScore]) {
        for s in scores {
            if let (Some(severity), false) = (s.severity, s.emitted) {
                self.amount_below_min.get_or_create(&SeverityLabels { severity: severity.as_str() }).inc();
            }
        }
    }
}

/// The transaction counters of the first `max` categories by arrival, looked up by category
/// without building a label set; every later category is counted under `other` and not
/// remembered, so neither the series nor the memory grow with hostile input. The set is the
/// process's own: after a restart the first `max` categories to arrive get labels again.
struct CategoryCounters {
    max: usize,
    known: RwLock<HashMap<String, [Counter; 4]>>,
    other: [Counter; 4],
}

impl CategoryCounters {
    fn new(max: usize, family: &Family<TransactionLabels, Counter>) -> Self {
        CategoryCounters { max, known: RwLock::new(HashMap::new()), other: counters(family, OTHER_CATEGORY) }
    }

    fn inc(&self, family: &Family<TransactionLabels, Counter>, category: &str, status: TransactionStatus) {
        let i = status as usize;
        {
            let known = self.known.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = known.get(category) {
                c[i].inc();
                return;
            }
            if known.len() >= self.max {
                self.other[i].inc();
                return;
            }
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if !known.contains_key(category) && known.len() < self.max {
            known.insert(category.to_owned(), counters(family, category));
        }
        match known.get(category) {
            Some(c) => c[i].inc(),
            None => self.other[i].inc(),
        };
    }
}

/// A category's counter per status, in `TransactionStatus::ALL` order.
fn counters(family: &Family<TransactionLabels, Counter>, category: &str) -> [Counter; 4] {
    TransactionStatus::ALL.map(|st| {
        family.get_or_create(&TransactionLabels { category: category.to_owned(), status: st.as_str() }).clone()
    })
}

/// What an anomaly state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Opened,
    Escalated,
    None,
}

/// The highest severity each open anomaly (of a rule with a life cycle) has reached in this
/// process, keyed by anomaly id, forgotten when it resolves. The core's updates already carry
/// the highest severity reached, so an update escalates exactly when its severity is above the
/// remembered one.
#[derive(Default)]
struct Peaks {
    highest: HashMap<String, Severity>,
    /// Ids in the order they opened, for forgetting the oldest beyond the bound (resolved ids
    /// are dropped from here lazily).
    order: VecDeque<String>,
}

impl Peaks {
    fn observe(&mut self, a: &Anomaly) -> Change {
        if matches!(a.rule, AnomalyRule::AmountZscore | AnomalyRule::AmountLowVariance) {
            // Per transaction: complete when emitted, never updated, nothing to remember.
            return if a.state == AnomalyState::Firing { Change::Opened } else { Change::None };
        }
        match a.state {
            AnomalyState::Firing => {
                if self.highest.contains_key(&a.id) {
                    // The same firing again (a partition restored from its checkpoint in this
                    // process replays its outputs): counted once.
                    return Change::None;
                }
                self.remember(&a.id, a.severity);
                Change::Opened
            }
            AnomalyState::Updated => match self.highest.get_mut(&a.id) {
                Some(peak) if a.severity > *peak => {
                    *peak = a.severity;
                    Change::Escalated
                }
                Some(_) => Change::None,
                None => {
                    // Opened before this process saw it (a restart or a partition moved here):
                    // its earlier severity is unknown, so this state is taken as the reference
                    // and only later escalations count.
                    self.remember(&a.id, a.severity);
                    Change::None
                }
            },
            AnomalyState::Resolved => {
                self.highest.remove(&a.id);
                Change::None
            }
        }
    }

    fn remember(&mut self, id: &str, severity: Severity) {
        while self.highest.len() >= MAX_TRACKED_ANOMALIES {
            match self.order.pop_front() {
                Some(old) => {
                    self.highest.remove(&old);
                }
                None => break,
            }
        }
        self.highest.insert(id.to_owned(), severity);
        self.order.push_back(id.to_owned());
        if self.order.len() > 2 * MAX_TRACKED_ANOMALIES.max(self.highest.len()) {
            let highest = &self.highest;
            self.order.retain(|id| highest.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use vigil_schemas::AnomalyDimension;

    use super::*;

    fn fresh() -> (Metrics, DetectorMetrics) {
        let m = Metrics::new("detector");
        let dm = DetectorMetrics::new(&m);
        (m, dm)
    }

    /// The value of one series in the rendered exposition (`None` when the series is absent).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    fn anomaly(id: &str, rule: AnomalyRule, state: AnomalyState, severity: Severity) -> Anomaly {
        Anomaly {
            id: id.into(),
            sequence: 0,
            rule,
            dimension: AnomalyDimension::Global,
            dimension_value: "all".into(),
            window_start: None,
            window_end: None,
            transaction_id: None,
            category: None,
            merchant_id: None,
            observed: 0.0,
            observed_count: 0,
            observed_total: 0,
            baseline_mean: 0.0,
            baseline_stddev: 0.0,
            baseline_n: 0,
            scored_on: "rate".into(),
            score: 0.0,
            p_value: None,
            threshold: 0.0,
            severity,
            state,
            message: String::new(),
            first_seen: 0,
            last_updated: 0,
            resolved_at: None,
        }
    }

    fn tx(category: &str, status: TransactionStatus) -> Transaction {
        Transaction {
            transaction_id: "t".into(),
            occurred_at: 0,
            status,
            auth_code: "00".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            category: category.into(),
            merchant_id: "m".into(),
            received_at: 0,
        }
    }

    #[test]
    fn transactions_are_counted_by_category_and_status_and_categories_beyond_the_cap_are_other() {
        let m = Metrics::new("detector");
        let dm = DetectorMetrics::new(&m).with_max_categories(2);
        for (category, status) in [
            ("food", TransactionStatus::Approved),
            ("food", TransactionStatus::Approved),
            ("food", TransactionStatus::Denied),
            ("fuel", TransactionStatus::Reversed),
            ("travel", TransactionStatus::Approved),
            ("hostile-1", TransactionStatus::Failed),
            ("hostile-2", TransactionStatus::Failed),
            ("food", TransactionStatus::Approved),
        ] {
            dm.transaction_counted(&tx(category, status));
        }
        let text = m.render();
        let series = |c: &str, s: &str| {
            value(&text, &format!("vigil_detector_transactions_total{{category=\"{c}\",status=\"{s}\"}}"))
        };
        assert_eq!(series("food", "approved"), Some(3.0), "{text}");
        assert_eq!(series("food", "denied"), Some(1.0));
        assert_eq!(series("fuel", "reversed"), Some(1.0));
        assert_eq!(series("fuel", "approved"), Some(0.0), "a labelled category has every status from its first");
        assert_eq!(series("other", "approved"), Some(1.0), "travel arrived third: other");
        assert_eq!(series("other", "failed"), Some(2.0));
        for c in ["travel", "hostile-1", "hostile-2"] {
            assert!(!text.contains(&format!("category=\"{c}\"")), "{c} has no series of its own:\n{text}");
        }
        let labelled = text.lines().filter(|l| l.starts_with("vigil_detector_transactions_total{")).count();
        assert_eq!(labelled, 3 * 4, "food, fuel and other, four statuses each");
    }

    #[test]
    fn the_default_cap_labels_a_hundred_categories() {
        let (m, dm) = fresh();
        for i in 0..1_000 {
            dm.transaction_counted(&tx(&format!("c{i}"), TransactionStatus::Approved));
        }
        let text = m.render();
        let labelled = text.lines().filter(|l| l.starts_with("vigil_detector_transactions_total{")).count();
        assert_eq!(labelled, (DEFAULT_MAX_CATEGORIES + 1) * 4);
        assert_eq!(
            value(&text, "vigil_detector_transactions_total{category=\"other\",status=\"approved\"}"),
            Some((1_000 - DEFAULT_MAX_CATEGORIES) as f64)
        );
    }

    #[test]
    fn an_anomaly_is_opened_once_and_each_higher_severity_it_reaches_is_one_escalation() {
        let (m, dm) = fresh();
        let rule = AnomalyRule::DeniedRate;
        use AnomalyState::*;
        use Severity::*;
        for (state, severity) in [
            (Firing, Medium),
            (Updated, Medium),
            (Updated, High),
            (Updated, High),
            (Firing, Medium), // the firing again, replayed after a restore in this process
            (Updated, Critical),
            (Updated, Critical),
            (Resolved, Critical),
        ] {
            dm.anomaly(&anomaly("denied_rate:global:all:1", rule, state, severity));
        }
        let text = m.render();
        let v = |name: &str, sev: &str| {
            value(&text, &format!("vigil_detector_{name}_total{{rule=\"denied_rate\",severity=\"{sev}\"}}")).unwrap()
        };
        assert_eq!(v("anomalies_opened", "medium"), 1.0, "{text}");
        assert_eq!(v("anomalies_opened", "high") + v("anomalies_opened", "critical"), 0.0);
        assert_eq!(v("anomaly_escalations", "medium"), 0.0);
        assert_eq!(v("anomaly_escalations", "high"), 1.0);
        assert_eq!(v("anomaly_escalations", "critical"), 1.0);
        // The state transitions are still all counted.
        let states = |sev: &str, st: &str| {
            value(
                &text,
                &format!("vigil_detector_anomalies_total{{rule=\"denied_rate\",severity=\"{sev}\",state=\"{st}\"}}"),
            )
            .unwrap()
        };
        assert_eq!(states("medium", "firing"), 2.0);
        assert_eq!(states("critical", "updated"), 2.0);
        // Resolved: forgotten. The same id opening again later is a new anomaly.
        dm.anomaly(&anomaly("denied_rate:global:all:1", rule, Firing, High));
        let text = m.render();
        assert_eq!(
            value(&text, "vigil_detector_anomalies_opened_total{rule=\"denied_rate\",severity=\"high\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn an_update_of_an_anomaly_opened_before_this_process_is_no_escalation_but_later_ones_are() {
        let (m, dm) = fresh();
        let rule = AnomalyRule::VolumeDrop;
        dm.anomaly(&anomaly("v", rule, AnomalyState::Updated, Severity::High));
        dm.anomaly(&anomaly("v", rule, AnomalyState::Updated, Severity::High));
        dm.anomaly(&anomaly("v", rule, AnomalyState::Updated, Severity::Critical));
        let text = m.render();
        let v = |name: &str, sev: &str| {
            value(&text, &format!("vigil_detector_{name}_total{{rule=\"volume_drop\",severity=\"{sev}\"}}")).unwrap()
        };
        assert_eq!(v("anomalies_opened", "high"), 0.0);
        assert_eq!(v("anomaly_escalations", "high"), 0.0);
        assert_eq!(v("anomaly_escalations", "critical"), 1.0);
    }

    #[test]
    fn each_amount_anomaly_is_opened_once_and_nothing_is_remembered_for_it() {
        let (m, dm) = fresh();
        for i in 0..3 {
            let a = anomaly(
                &format!("amount_zscore:category:food:{i}"),
                AnomalyRule::AmountZscore,
                AnomalyState::Firing,
                Severity::Medium,
            );
            dm.anomaly(&a);
        }
        let text = m.render();
        assert_eq!(
            value(&text, "vigil_detector_anomalies_opened_total{rule=\"amount_zscore\",severity=\"medium\"}"),
            Some(3.0)
        );
        assert!(dm.peaks.lock().unwrap().highest.is_empty());
    }

    #[test]
    fn the_remembered_anomalies_are_bounded_and_resolved_ones_forgotten() {
        let mut p = Peaks::default();
        for i in 0..MAX_TRACKED_ANOMALIES + 10 {
            p.observe(&anomaly(&i.to_string(), AnomalyRule::FailedRate, AnomalyState::Firing, Severity::Medium));
        }
        assert_eq!(p.highest.len(), MAX_TRACKED_ANOMALIES);
        assert!(!p.highest.contains_key("0") && p.highest.contains_key(&(MAX_TRACKED_ANOMALIES + 9).to_string()));
        for i in 0..MAX_TRACKED_ANOMALIES + 10 {
            p.observe(&anomaly(&i.to_string(), AnomalyRule::FailedRate, AnomalyState::Resolved, Severity::Medium));
        }
        assert!(p.highest.is_empty());
        assert!(p.order.len() <= 2 * MAX_TRACKED_ANOMALIES + 1);
    }

    #[test]
    fn amount_tiers_below_the_minimum_are_counted_and_emitted_ones_are_not() {
        let (m, dm) = fresh();
        let score =
            |severity, emitted| AmountScore { dimension: AnomalyDimension::Category, z: 2.7, severity, emitted };
        dm.amount_scores(&[
            score(Some(Severity::Medium), false),
            score(None, false),
            score(Some(Severity::High), true),
        ]);
        dm.amount_scores(&[score(Some(Severity::Medium), false)]);
        let text = m.render();
        let v =
            |sev: &str| value(&text, &format!("vigil_detector_amount_scores_below_min_total{{severity=\"{sev}\"}}"));
        assert_eq!(v("medium"), Some(2.0), "{text}");
        assert_eq!(v("high"), Some(0.0));
    }
}
