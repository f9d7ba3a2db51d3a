//! Rust views of the `.avsc` contracts. Field names and order match the schemas exactly;
//! timestamps are milliseconds since the Unix epoch (UTC), as `timestamp-millis` stores them.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Converts a `timestamp-millis` value to a UTC time. Out-of-range values clamp to the epoch.
pub fn millis_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionStatus {
    Approved,
    Denied,
    Failed,
    Reversed,
}

impl TransactionStatus {
    pub const ALL: [TransactionStatus; 4] = [
        TransactionStatus::Approved,
        TransactionStatus::Denied,
        TransactionStatus::Failed,
        TransactionStatus::Reversed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransactionStatus::Approved => "approved",
            TransactionStatus::Denied => "denied",
            TransactionStatus::Failed => "failed",
            TransactionStatus::Reversed => "reversed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for TransactionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One payment transaction (`transaction.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub occurred_at: i64,
    pub status: TransactionStatus,
    pub auth_code: String,
    pub amount_minor: i64,
    pub currency: String,
    pub category: String,
    pub merchant_id: String,
    pub received_at: i64,
}

impl Transaction {
    pub fn occurred_at_utc(&self) -> DateTime<Utc> {
        millis_to_utc(self.occurred_at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartialKind {
    Window,
    Progress,
    Idle,
}

/// Counts of one category (and currency) in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryMinute {
    pub category: String,
    pub currency: String,
    pub count: i64,
    pub amount_sum: i64,
    pub amount_min: i64,
    pub amount_max: i64,
}

/// Detector stage 1 -> stage 2 (`minute_partial.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinutePartial {
    pub source_partition: i32,
    pub partition_count: i32,
    pub kind: PartialKind,
    pub watermark: i64,
    pub minute_start: Option<i64>,
    pub approved: i64,
    pub denied: i64,
    pub failed: i64,
    pub reversed: i64,
    pub auth_codes: BTreeMap<String, i64>,
    pub categories: Vec<CategoryMinute>,
}

/// Final counts of one minute (`minute_aggregate.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteAggregate {
    pub minute_start: i64,
    pub total: i64,
    pub approved: i64,
    pub denied: i64,
    pub failed: i64,
    pub reversed: i64,
    pub auth_codes: BTreeMap<String, i64>,
    pub categories: Vec<CategoryMinute>,
    pub source_partitions: i32,
    /// The global volume rule's expectation for this minute, and its normal range (`None`
    /// while the baseline warms up, or with the volume rules off).
    #[serde(default)]
    pub expected_total: Option<f64>,
    #[serde(default)]
    pub expected_low: Option<f64>,
    #[serde(default)]
    pub expected_high: Option<f64>,
}

impl MinuteAggregate {
    pub fn count(&self, status: TransactionStatus) -> i64 {
        match status {
            TransactionStatus::Approved => self.approved,
            TransactionStatus::Denied => self.denied,
            TransactionStatus::Failed => self.failed,
            TransactionStatus::Reversed => self.reversed,
        }
    }
}

/// Late events booked against a final minute (`late_events.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateEvents {
    pub minute_start: i64,
    pub source: String,
    pub late_count: i64,
}

/// One watched merchant's counts in one category and minute (`merchant_minute.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantMinute {
    pub minute_start: i64,
    pub category: String,
    pub merchant_id: String,
    pub total: i64,
    pub approved: i64,
    pub denied: i64,
    pub failed: i64,
    pub reversed: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyRule {
    DeniedRate,
    FailedRate,
    ReversedRate,
    AuthCodeRate,
    AmountZscore,
    AmountLowVariance,
    /// Fewer transactions a minute than the volume baseline expects (down to none at all).
    VolumeDrop,
    /// More transactions a minute than the volume baseline expects.
    VolumeSurge,
}

impl AnomalyRule {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyRule::DeniedRate => "denied_rate",
            AnomalyRule::FailedRate => "failed_rate",
            AnomalyRule::ReversedRate => "reversed_rate",
            AnomalyRule::AuthCodeRate => "auth_code_rate",
            AnomalyRule::AmountZscore => "amount_zscore",
            AnomalyRule::AmountLowVariance => "amount_low_variance",
            AnomalyRule::VolumeDrop => "volume_drop",
            AnomalyRule::VolumeSurge => "volume_surge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyDimension {
    Global,
    Category,
    Merchant,
    AuthCode,
}

impl AnomalyDimension {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyDimension::Global => "global",
            AnomalyDimension::Category => "category",
            AnomalyDimension::Merchant => "merchant",
            AnomalyDimension::AuthCode => "auth_code",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyState {
    Firing,
    Updated,
    Resolved,
}

impl AnomalyState {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyState::Firing => "firing",
            AnomalyState::Updated => "updated",
            AnomalyState::Resolved => "resolved",
        }
    }
}

/// One state of one anomaly (`anomaly.avsc`); every field explains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub id: String,
    pub sequence: i64,
    pub rule: AnomalyRule,
    pub dimension: AnomalyDimension,
    pub dimension_value: String,
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub transaction_id: Option<String>,
    pub category: Option<String>,
    pub merchant_id: Option<String>,
    pub observed: f64,
    pub observed_count: i64,
    pub observed_total: i64,
    pub baseline_mean: f64,
    pub baseline_stddev: f64,
    pub baseline_n: i64,
    pub scored_on: String,
    pub score: f64,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub severity: Severity,
    pub state: AnomalyState,
    pub message: String,
    pub first_seen: i64,
    pub last_updated: i64,
    pub resolved_at: Option<i64>,
}

/// What the detector did with one transaction (`transaction_verdict.avsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictDecision {
    Counted,
    Late,
    Duplicate,
    Refused,
}

impl VerdictDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictDecision::Counted => "counted",
            VerdictDecision::Late => "late",
            VerdictDecision::Duplicate => "duplicate",
            VerdictDecision::Refused => "refused",
        }
    }
}

/// The detector's verdict on one transaction whose producer asked for it
/// (`transaction_verdict.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionVerdict {
    pub transaction_id: String,
    pub reply_to: String,
    pub occurred_at: i64,
    pub decision: VerdictDecision,
    pub anomaly: bool,
    pub severity: Option<String>,
    pub anomaly_ids: Vec<String>,
}
