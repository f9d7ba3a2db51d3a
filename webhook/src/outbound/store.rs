//! `outbound_deliveries`: one row per (anomaly, severity, URL), the durable queue of the
//! forwarder and its record of what was pushed.
//!
//! A row is written `pending` before the Kafka offset of its anomaly is committed, and the
//! workers deliver from the table, not from Kafka: a restart resumes every pending delivery,
//! and a message consumed twice adds no row.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool};

use crate::metrics::{DbMetrics, DbQuery};

/// A delivery a worker has claimed.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: i64,
    pub anomaly_id: String,
    pub payload: Value,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Records one pending delivery per URL of `anomaly_id` at `severity`, unless that URL already
/// has a row of the anomaly at this severity or a higher one (a redelivered record, another
/// update at the same severity, or a de-escalation); returns how many were new.
///
/// Records of one anomaly come in order from one partition (keyed by anomaly id) to one
/// consumer, so no two calls race for the same anomaly; the unique key holds if they ever did.
pub async fn insert_pending(
    pool: &PgPool,
    db: &DbMetrics,
    anomaly_id: &str,
    severity: &str,
    payload: &Value,
    urls: &[String],
) -> Result<u64, sqlx::Error> {
    let insert = sqlx::query(
        "INSERT INTO outbound_deliveries (anomaly_id, url, severity, payload)
         SELECT $1, u, $2, $3 FROM UNNEST($4::text[]) AS u
         WHERE NOT EXISTS (
             SELECT 1 FROM outbound_deliveries d
             WHERE d.anomaly_id = $1 AND d.url = u
               AND array_position(ARRAY['medium', 'high', 'critical'], d.severity)
                   >= array_position(ARRAY['medium', 'high', 'critical'], $2::text))
         ON CONFLICT (anomaly_id, severity, url) DO NOTHING",
    )
    .bind(anomaly_id)
    .bind(severity)
    .bind(payload)
    .bind(urls)
    .execute(pool);
    Ok(db.time(DbQuery::OutboundInsert, insert).await?.rows_affected())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Claims up to `batch` due deliveries of `url`, oldest due first, by moving their next attempt
/// `lease` into the future: another replica skips them, and if this process dies mid-attempt
/// they become due again when the lease ends.
pub async fn claim_due(
    pool: &PgPool,
    db: &DbMetrics,
    url: &str,
    batch: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let claim = sqlx::query_as(
        "WITH due AS (
             SELECT id FROM outbound_deliveries
             WHERE url = $1 AND status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         UPDATE outbound_deliveries d
         SET next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
         FROM due WHERE d.id = due.id
         RETURNING d.id, d.anomaly_id, d.payload, d.attempts, d.created_at",
    )
    .bind(url)
    .bind(batch)
    .bind(secs(lease))
    .fetch_all(pool);
    db.time(DbQuery::OutboundClaim, claim).await
}

/// Gives a claimed delivery back (at shutdown, mid-attempt): due again at once.
pub async fn release(pool: &PgPool, db: &DbMetrics, id: i64) -> Result<(), sqlx::Error> {
    let release = sqlx::query(
        "UPDATE outbound_deliveries SET next_attempt_at = now(), updated_at = now() WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(pool);
    db.time(DbQuery::OutboundRelease, release).await?;
    Ok(())
}

/// When the next pending delivery of `url` falls due, if any is pending.
pub async fn next_due(pool: &PgPool, db: &DbMetrics, url: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let next = sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM outbound_deliveries WHERE url = $1 AND status = 'pending'",
    )
    .bind(url)
    .fetch_one(pool);
    db.time(DbQuery::OutboundNextDue, next).await
}

pub async fn mark_delivered(pool: &PgPool, db: &DbMetrics, id: i64, status: u16) -> Result<(), sqlx::Error> {
    let mark = sqlx::query(
        "UPDATE outbound_deliveries
         SET status = 'delivered', attempts = attempts + 1, last_status_code = $2, last_error = NULL,
             delivered_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(i32::from(status))
    .execute(pool);
    db.time(DbQuery::OutboundMarkDelivered, mark).await?;
    Ok(())
}

pub async fn mark_retry(
    pool: &PgPool,
    db: &DbMetrics,
    id: i64,
    status: Option<u16>,
    error: &str,
    after: Duration,
) -> Result<(), sqlx::Error> {
    let mark = sqlx::query(
        "UPDATE outbound_deliveries
         SET attempts = attempts + 1, last_status_code = $2, last_error = $3,
             next_attempt_at = now() + make_interval(secs => $4), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.map(i32::from))
    .bind(error)
    .bind(secs(after))
    .execute(pool);
    db.time(DbQuery::OutboundMarkRetry, mark).await?;
    Ok(())
}

pub async fn mark_failed(
    pool: &PgPool,
    db: &DbMetrics,
    id: i64,
    status: Option<u16>,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mark = sqlx::query(
        "UPDATE outbound_deliveries
         SET status = 'failed', attempts = attempts + 1, last_status_code = $2, last_error = $3, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.map(i32::from))
    .bind(error)
    .execute(pool);
    db.time(DbQuery::OutboundMarkFailed, mark).await?;
    Ok(())
}
