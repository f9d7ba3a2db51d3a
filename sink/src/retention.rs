//! Retention: old minute aggregates and finished anomalies are deleted in small batches
//! (10 000 rows per statement, each its own short transaction), so no lock is held for long and
//! Grafana's readers never wait. Runs every RETENTION_INTERVAL.
//!
//! An anomaly is finished when it resolved (the rate and volume rules), or at once for a rule
//! judged per transaction (the amount rules): such an anomaly is complete when it is emitted,
//! is never updated and never resolves, so it is measured from its transaction's time
//! (`last_updated`, equal to `first_seen`). Both go after `RETENTION_RESOLVED_ANOMALIES`. An
//! open rate or volume anomaly is kept whatever its age.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DbQuery, SinkMetrics, TableLabels};

const BATCH: i64 = 10_000;

/// Rules whose anomalies are about one transaction, complete when emitted (the detector sends
/// them once, `firing`, and never resolves them).
pub const PER_TRANSACTION_RULES: [&str; 2] = ["amount_zscore", "amount_low_variance"];

/// Minute tables and the column their retention is measured on.
const MINUTE_TABLES: [&str; 6] = [
    "transactions",
    "transactions_auth_codes",
    "transactions_categories",
    "transactions_late",
    "merchant_minutes",
    "volume_minutes",
];

/// Deletes rows older than the configured ages; returns rows deleted per table.
pub async fn run_once(
    pool: &PgPool,
    minutes: Option<Duration>,
    anomalies: Option<Duration>,
    metrics: &SinkMetrics,
) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    let mut report = Vec::new();
    if let Some(age) = minutes {
        let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
        for table in MINUTE_TABLES {
            let sql = format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE minute < $1 LIMIT $2))"
            );
            let n = delete_in_batches(pool, &sql, cutoff, metrics, DbQuery::RetentionMinutesDelete).await?;
            report.push((table, n));
        }
    }
    if let Some(age) = anomalies {
        let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
        let resolved = "DELETE FROM anomalies WHERE ctid = ANY(ARRAY(SELECT ctid FROM anomalies WHERE state = 'resolved' AND resolved_at < $1 LIMIT $2))";
        let rules = PER_TRANSACTION_RULES.map(|r| format!("'{r}'")).join(", ");
        let per_transaction = format!(
            "DELETE FROM anomalies WHERE ctid = ANY(ARRAY(SELECT ctid FROM anomalies WHERE rule IN ({rules}) AND last_updated < $1 LIMIT $2))"
        );
        let q = DbQuery::RetentionAnomaliesDelete;
        let n = delete_in_batches(pool, resolved, cutoff, metrics, q).await?
            + delete_in_batches(pool, &per_transaction, cutoff, metrics, q).await?;
        report.push(("anomalies", n));
    }
    for (table, n) in &report {
        if *n > 0 {
            metrics.retention_deleted.get_or_create(&TableLabels { table }).inc_by(*n);
            tracing::info!(table, rows = n, "Retention removed old rows.");
        }
    }
    Ok(report)
}

/// Runs `sql` (one batch of deletes, timed under `query`) until a batch deletes fewer than
/// `BATCH` rows.
async fn delete_in_batches(
    pool: &PgPool,
    sql: &str,
    cutoff: chrono::DateTime<Utc>,
    metrics: &SinkMetrics,
    query: DbQuery,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let delete = sqlx::query(sql).bind(cutoff).bind(BATCH);
        let n = metrics.db.time(query, delete.execute(pool)).await?.rows_affected();
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

pub async fn run_periodically(
    pool: PgPool,
    minutes: Option<Duration>,
    anomalies: Option<Duration>,
    every: Duration,
    metrics: SinkMetrics,
    shutdown: CancellationToken,
) {
    if minutes.is_none() && anomalies.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = run_once(&pool, minutes, anomalies, &metrics).await {
                    tracing::warn!(error = %e, "Retention failed; will try again next interval.");
                }
            }
        }
    }
}
