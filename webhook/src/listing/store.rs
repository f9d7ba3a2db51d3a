//! The two list queries: newest first, keyset on `(time, id)` so that rows inserted while a
//! client walks the pages never shift it (they are newer than every cursor) and every older row
//! is returned exactly once.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;

use super::cursor::Cursor;
use crate::metrics::{DbMetrics, DbQuery};

/// One detector anomaly (its latest state), as the sink stored it.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct AnomalyItem {
    /// Deterministic anomaly id.
    pub id: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub row_id: i64,
    /// Rule that fired: denied_rate, failed_rate, reversed_rate, auth_code_rate, amount_zscore,
    /// amount_low_variance, volume_drop, volume_surge.
    pub rule: String,
    /// global, category, merchant or auth_code.
    pub dimension: String,
    /// `all` for global, else the category, merchant id or auth code.
    pub dimension_value: String,
    /// Amount rules: the transaction judged.
    pub transaction_id: Option<String>,
    /// Rate rules: the minute observed (inclusive).
    pub window_start: Option<DateTime<Utc>>,
    /// Rate rules: window_start + 60 s (exclusive).
    pub window_end: Option<DateTime<Utc>>,
    pub category: Option<String>,
    pub merchant_id: Option<String>,
    pub score: f64,
    pub threshold: f64,
    /// medium, high or critical.
    pub severity: String,
    /// firing, updated or resolved.
    pub state: String,
    /// One human sentence explaining the anomaly.
    pub message: String,
    pub first_seen: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// When the sink first stored it; the list's order.
    pub created_at: DateTime<Utc>,
    /// Its triage: open (nothing done yet), acknowledged or closed (see POST /alerts/{id}/triage).
    pub triage_state: String,
    /// Who it is assigned to, if anyone.
    pub assignee: Option<String>,
    /// True when a silence matches it (see POST /silences): stored, but not pushed outbound.
    pub silenced: bool,
}

impl AnomalyItem {
    pub fn cursor(&self) -> Cursor {
        Cursor { at: self.created_at, id: self.row_id }
    }
}

/// One received alert state change.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct ReceivedAlertItem {
    pub id: i64,
    /// grafana or alertmanager.
    pub source: String,
    /// firing or resolved.
    pub status: String,
    pub fingerprint: String,
    pub alertname: Option<String>,
    pub severity: Option<String>,
    #[schema(value_type = Object)]
    pub labels: serde_json::Value,
    #[schema(value_type = Object)]
    pub annotations: serde_json::Value,
    /// Grafana's query values; null when none were sent.
    #[schema(value_type = Option<Object>)]
    pub values: Option<serde_json::Value>,
    pub value_string: Option<String>,
    /// null when the sender did not know (Go's zero time).
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
    /// When this state change was received; the list's order.
    pub received_at: DateTime<Utc>,
    /// On a firing row: when the alert resolved, once the resolved notification arrived.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The raw notification it came in.
    pub notification_id: i64,
}

impl ReceivedAlertItem {
    pub fn cursor(&self) -> Cursor {
        Cursor { at: self.received_at, id: self.id }
    }
}

/// The filters of `GET /alerts`, all combined (AND); `None` does not filter.
#[derive(Debug, Default)]
pub struct AnomalyFilter {
    /// Exact.
    pub transaction_id: Option<String>,
    /// Any of these rules.
    pub rules: Option<Vec<String>>,
    /// Any of these severities (`severity` and `min_severity` together: those both allow).
    pub severities: Option<Vec<String>>,
    /// Any of these states (the anomaly's latest).
    pub states: Option<Vec<String>>,
    /// Exact.
    pub merchant_id: Option<String>,
    /// `created_at >= since` (the older parameter, same as `from`).
    pub since: Option<DateTime<Utc>>,
    /// `created_at >= from` (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// `created_at < to` (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Any of these triage states (open when never triaged).
    pub triage_states: Option<Vec<String>>,
    /// Exact.
    pub assignee: Option<String>,
    /// Whether a silence matches it.
    pub silenced: Option<bool>,
}

pub struct ReceivedFilter {
    pub status: Option<String>,
    pub source: Option<String>,
}

/// ` AND column = value` for one value, ` AND column = ANY(values)` for several: PostgreSQL 15
/// plans `= ANY` of one element as a set, not an equality, and then walks the list's order
/// instead of the column's index.
fn any_of(q: &mut QueryBuilder<'_, Postgres>, column: &'static str, values: &[String]) {
    // Literal SQL only (chaos/tests/security.rs checks every push is a literal).
    match column {
        "rule" => q.push(" AND rule"),
        "severity" => q.push(" AND severity"),
        _ => q.push(" AND state"),
    };
    match values {
        [one] => q.push(" = ").push_bind(one.clone()),
        _ => q.push(" = ANY(").push_bind(values.to_vec()).push(")"),
    };
}

/// Up to `limit` rows strictly after `cursor`, plus one more to tell whether a next page exists.
pub async fn anomalies(
    pool: &PgPool,
    db: &DbMetrics,
    filter: &AnomalyFilter,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<AnomalyItem>, sqlx::Error> {
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT id, row_id, rule, dimension, dimension_value, transaction_id, window_start, window_end, \
         category, merchant_id, score, threshold, severity, state, message, first_seen, last_updated, \
         resolved_at, created_at, \
         COALESCE((SELECT t.state FROM anomaly_triage t WHERE t.anomaly_id = anomalies.id), 'open') AS triage_state, \
         (SELECT t.assignee FROM anomaly_triage t WHERE t.anomaly_id = anomalies.id) AS assignee, \
         EXISTS (SELECT 1 FROM matching_silences(rule, dimension, dimension_value, merchant_id, category, severity, \
                 first_seen)) AS silenced \
         FROM anomalies WHERE true",
    );
    // Each filter is a bound parameter, never spliced SQL. Every column filtered on has an index
    // that leads with it and ends in the list's order (migration 20261205000021), so a page of a
    // rare or absent value reads only its own rows.
    if let Some(id) = &filter.transaction_id {
        q.push(" AND transaction_id = ").push_bind(id.clone());
    }
    if let Some(id) = &filter.merchant_id {
        q.push(" AND merchant_id = ").push_bind(id.clone());
    }
    for (column, values) in [("rule", &filter.rules), ("severity", &filter.severities), ("state", &filter.states)] {
        if let Some(values) = values {
            any_of(&mut q, column, values);
        }
    }
    // Triage: one primary-key probe of anomaly_triage per candidate row.
    if let Some(states) = &filter.triage_states {
        q.push(
            " AND COALESCE((SELECT t.state FROM anomaly_triage t WHERE t.anomaly_id = anomalies.id), 'open') = ANY(",
        )
        .push_bind(states.clone())
        .push(")");
    }
    if let Some(who) = &filter.assignee {
        q.push(" AND EXISTS (SELECT 1 FROM anomaly_triage t WHERE t.anomaly_id = anomalies.id AND t.assignee = ")
            .push_bind(who.clone())
            .push(")");
    }
    if let Some(silenced) = filter.silenced {
        if silenced {
            q.push(" AND ");
        } else {
            q.push(" AND NOT ");
        }
        q.push(
            "EXISTS (SELECT 1 FROM matching_silences(rule, dimension, dimension_value, merchant_id, category, \
             severity, first_seen))",
        );
    }
    for from in [filter.since, filter.from].into_iter().flatten() {
        q.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" AND created_at < ").push_bind(to);
    }
    if let Some(c) = cursor {
        q.push(" AND (created_at, row_id) < (").push_bind(c.at).push(", ").push_bind(c.id).push(")");
    }
    q.push(" ORDER BY created_at DESC, row_id DESC LIMIT ").push_bind(limit + 1);
    db.time(DbQuery::AlertsList, q.build_query_as().fetch_all(pool)).await
}

/// Up to `limit` received alerts strictly after `cursor`, plus one more.
pub async fn received_alerts(
    pool: &PgPool,
    db: &DbMetrics,
    filter: &ReceivedFilter,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<ReceivedAlertItem>, sqlx::Error> {
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        r#"SELECT id, source, status, fingerprint, alertname, severity, labels, annotations, "values",
           value_string, starts_at, ends_at, generator_url, received_at, resolved_at, notification_id
           FROM received_alerts WHERE true"#,
    );
    if let Some(status) = &filter.status {
        q.push(" AND status = ").push_bind(status.clone());
    }
    if let Some(source) = &filter.source {
        q.push(" AND source = ").push_bind(source.clone());
    }
    if let Some(c) = cursor {
        q.push(" AND (received_at, id) < (").push_bind(c.at).push(", ").push_bind(c.id).push(")");
    }
    q.push(" ORDER BY received_at DESC, id DESC LIMIT ").push_bind(limit + 1);
    db.time(DbQuery::GrafanaAlertsList, q.build_query_as().fetch_all(pool)).await
}
