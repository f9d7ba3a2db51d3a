//! Storing one notification: the raw payload and its alert state changes, in one transaction.
//!
//! Decision on re-sends: every accepted request stores its raw payload as a new
//! `alert_notifications` row, duplicates included. That table is the audit log of what was
//! received and when (a re-send may differ in fields outside the key, such as `values`), while
//! `received_alerts` holds each alert state change exactly once, whatever the number of re-sends.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::{AlertStatus, Notification};
use crate::metrics::{DbMetrics, DbQuery};

/// What one request changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub notification_id: i64,
    /// Alert state changes stored, by status.
    pub firing: u64,
    pub resolved: u64,
    /// Alert state changes already stored before (re-sent), hence ignored.
    pub duplicates: u64,
    /// Firing rows whose `resolved_at` this request filled.
    pub closed: u64,
}

/// Stores `n` and its raw body `raw`; nothing is stored when any statement fails.
pub async fn store(pool: &PgPool, db: &DbMetrics, n: &Notification, raw: &Value) -> Result<Stored, sqlx::Error> {
    let mut tx = db.time(DbQuery::NotificationBegin, pool.begin()).await?;
    let insert = sqlx::query_scalar(
        "INSERT INTO alert_notifications (source, receiver, status, group_key, title, payload) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(n.source.as_str())
    .bind(&n.receiver)
    .bind(n.status.as_str())
    .bind(&n.group_key)
    .bind(&n.title)
    .bind(raw)
    .fetch_one(&mut *tx);
    let notification_id: i64 = db.time(DbQuery::NotificationInsert, insert).await?;

    let len = n.alerts.len();
    let mut keys = Vec::with_capacity(len);
    let mut fingerprints = Vec::with_capacity(len);
    let mut statuses = Vec::with_capacity(len);
    let mut alertnames = Vec::with_capacity(len);
    let mut severities = Vec::with_capacity(len);
    let mut labels = Vec::with_capacity(len);
    let mut annotations = Vec::with_capacity(len);
    let mut values = Vec::with_capacity(len);
    let mut value_strings = Vec::with_capacity(len);
    let mut starts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(len);
    let mut ends: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(len);
    let mut generator_urls = Vec::with_capacity(len);
    for a in &n.alerts {
        keys.push(a.dedup_key(n.source));
        fingerprints.push(a.fingerprint.clone());
        statuses.push(a.status.as_str());
        alertnames.push(a.alertname().map(str::to_owned));
        severities.push(a.severity().map(str::to_owned));
        labels.push(serde_json::to_value(&a.labels).unwrap_or_default());
        annotations.push(serde_json::to_value(&a.annotations).unwrap_or_default());
        values.push(a.values.clone());
        value_strings.push(a.value_string.clone());
        starts.push(a.starts_at);
        ends.push(a.ends_at);
        generator_urls.push(a.generator_url.clone());
    }

    // One statement for every alert; a key already stored (a re-send, or the same alert twice in
    // one body) is skipped, and only the rows really inserted come back.
    let insert = sqlx::query_scalar(
        r#"INSERT INTO received_alerts
               (dedup_key, source, notification_id, fingerprint, status, alertname, severity,
                labels, annotations, "values", value_string, starts_at, ends_at, generator_url)
           SELECT t.dedup_key, $1, $2, t.fingerprint, t.status, t.alertname, t.severity,
                  t.labels, t.annotations, t.vals, t.value_string, t.starts_at, t.ends_at, t.generator_url
           FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::jsonb[],
                       $10::jsonb[], $11::text[], $12::timestamptz[], $13::timestamptz[], $14::text[])
                WITH ORDINALITY AS t(dedup_key, fingerprint, status, alertname, severity, labels, annotations,
                                     vals, value_string, starts_at, ends_at, generator_url, ord)
           ORDER BY t.ord
           ON CONFLICT (dedup_key) DO NOTHING
           RETURNING dedup_key"#,
    )
    .bind(n.source.as_str())
    .bind(notification_id)
    .bind(&keys)
    .bind(&fingerprints)
    .bind(&statuses)
    .bind(&alertnames)
    .bind(&severities)
    .bind(&labels)
    .bind(&annotations)
    .bind(&values)
    .bind(&value_strings)
    .bind(&starts)
    .bind(&ends)
    .bind(&generator_urls)
    .fetch_all(&mut *tx);
    let inserted: Vec<String> = db.time(DbQuery::ReceivedAlertsInsert, insert).await?;

    // Each inserted key counts once: a second alert with the same key in this body is a duplicate.
    let mut uncounted: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
    let (mut firing, mut resolved) = (0u64, 0u64);
    for (a, key) in n.alerts.iter().zip(&keys) {
        if uncounted.remove(key.as_str()) {
            match a.status {
                AlertStatus::Firing => firing += 1,
                AlertStatus::Resolved => resolved += 1,
            }
        }
    }

    // Close every open firing row of these alerts that has a resolved row for the same episode
    // (same fingerprint and startsAt), whichever arrived first. The resolution time is the
    // resolved alert's endsAt, or when we received it if the sender gave none.
    let closed = if inserted.is_empty() {
        0
    } else {
        let close = sqlx::query(
            "UPDATE received_alerts f
             SET resolved_at = coalesce(r.ends_at, r.received_at)
             FROM received_alerts r
             WHERE f.source = $1 AND f.fingerprint = ANY($2) AND f.status = 'firing' AND f.resolved_at IS NULL
               AND r.source = f.source AND r.fingerprint = f.fingerprint AND r.status = 'resolved'
               AND r.starts_at IS NOT DISTINCT FROM f.starts_at",
        )
        .bind(n.source.as_str())
        .bind(&fingerprints)
        .execute(&mut *tx);
        db.time(DbQuery::ReceivedAlertsClose, close).await?.rows_affected()
    };
    db.time(DbQuery::NotificationCommit, tx.commit()).await?;
    let duplicates = (len as u64).saturating_sub(firing + resolved);
    Ok(Stored { notification_id, firing, resolved, duplicates, closed })
}
