//! The JSON body an external webhook receives for one anomaly.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vigil_schemas::Anomaly;

/// One detector anomaly, as POSTed to every `OUTBOUND_WEBHOOK_URLS` receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutboundAnomaly {
    /// Always `vigil`.
    pub source: String,
    /// Deterministic anomaly id. One anomaly is pushed once per severity it reaches at or above
    /// the minimum (at high, then again at critical if it escalates), and delivery is at least
    /// once: deduplicate on (`id`, `severity`).
    pub id: String,
    /// The state's sequence in its anomaly: 0 for firing, higher for later updates.
    pub sequence: i64,
    pub rule: String,
    pub dimension: String,
    pub dimension_value: String,
    /// medium, high or critical: the severity this push is for.
    pub severity: String,
    /// firing (the anomaly opened at this severity) or updated (it escalated to it); resolved
    /// states are never pushed.
    pub state: String,
    /// One human sentence explaining the anomaly.
    pub message: String,
    pub score: f64,
    pub threshold: f64,
    pub observed: f64,
    pub baseline_mean: f64,
    pub p_value: Option<f64>,
    /// Rate rules: the minute observed (inclusive).
    pub window_start: Option<DateTime<Utc>>,
    /// Rate rules: window_start + 60 s (exclusive).
    pub window_end: Option<DateTime<Utc>>,
    /// Amount rules: the transaction judged.
    pub transaction_id: Option<String>,
    pub category: Option<String>,
    pub merchant_id: Option<String>,
    /// Event time of onset.
    pub first_seen: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl From<&Anomaly> for OutboundAnomaly {
    fn from(a: &Anomaly) -> Self {
        OutboundAnomaly {
            source: "vigil".to_owned(),
            id: a.id.clone(),
            sequence: a.sequence,
            rule: a.rule.as_str().to_owned(),
            dimension: a.dimension.as_str().to_owned(),
            dimension_value: a.dimension_value.clone(),
            severity: a.severity.as_str().to_owned(),
            state: a.state.as_str().to_owned(),
            message: a.message.clone(),
            score: a.score,
            threshold: a.threshold,
            observed: a.observed,
            baseline_mean: a.baseline_mean,
            p_value: a.p_value,
            window_start: a.window_start.map(time),
            window_end: a.window_end.map(time),
            transaction_id: a.transaction_id.clone(),
            category: a.category.clone(),
            merchant_id: a.merchant_id.clone(),
            first_seen: time(a.first_seen),
            last_updated: time(a.last_updated),
        }
    }
}
