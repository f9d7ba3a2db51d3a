//! Every accepted transaction and every verdict the detector gave, stored for lookups, reversals
//! and drill-downs (`transaction_records`, `transaction_verdicts`).
//!
//! * `transaction_records` is partitioned by UTC day of event time, one partition a day,
//!   created here before the day's first row is written (each in a short transaction of its own,
//!   under an advisory lock so concurrent sinks do not race), and dropped whole by retention.
//!   There is no default partition: a day is always its own partition.
//! * Rows are keyed by (transaction_id, occurred_at) and written with `ON CONFLICT DO NOTHING`:
//!   a redelivered record is the same row. A verdict is keyed by transaction id; a duplicate's
//!   verdict never replaces the first one's.
//! * Retention (`RETENTION_TRANSACTIONS`, measured on event time by the wall clock) drops the
//!   days that ended before the cutoff and deletes older verdicts; rows of such days arriving
//!   later are not stored (they would only recreate a dropped day).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use sqlx::{PgPool, Postgres, Transaction as DbTransaction};
use tokio_util::sync::CancellationToken;
use vigil_schemas::{Transaction, TransactionVerdict, VerdictDecision};

use crate::metrics::{timed, DbMetrics, DbQuery, SinkMetrics, TableLabels};

const PARENT: &str = "transaction_records";
const BATCH: i64 = 10_000;

fn day_of(ms: i64) -> Option<NaiveDate> {
    Utc.timestamp_millis_opt(ms).single().map(|t| t.date_naive())
}

fn partition_name(day: NaiveDate) -> String {
    format!("{PARENT}_p{}", day.format("%Y%m%d"))
}

fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The first day retention keeps, for `retention` at wall-clock time `now`.
pub fn first_kept_day(retention: Duration, now: DateTime<Utc>) -> NaiveDate {
    (now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX)).date_naive()
}

/// Creates the partitions of `days` that do not exist yet.
pub async fn ensure_partitions(pool: &PgPool, days: &BTreeSet<NaiveDate>) -> Result<(), sqlx::Error> {
    ensure_partitions_timed(pool, days, None).await
}

/// [`ensure_partitions`], the check and the creation timed in `db` when given.
pub async fn ensure_partitions_timed(
    pool: &PgPool,
    days: &BTreeSet<NaiveDate>,
    db: Option<&DbMetrics>,
) -> Result<(), sqlx::Error> {
    for day in days {
        let name = partition_name(*day);
        let exists: Option<String> = timed(
            db,
            DbQuery::PartitionCheck,
            sqlx::query_scalar("SELECT to_regclass($1)::text").bind(&name).fetch_one(pool),
        )
        .await?;
        if exists.is_some() {
            continue;
        }
        let Some(next) = day.checked_add_days(Days::new(1)) else { continue };
        timed(db, DbQuery::PartitionCreate, create_partition(pool, &name, *day, next)).await?;
        tracing::info!(partition = %name, "Created the day's partition of transaction_records.");
    }
    Ok(())
}

/// One short transaction: the advisory lock, CREATE TABLE, COMMIT.
async fn create_partition(pool: &PgPool, name: &str, day: NaiveDate, next: NaiveDate) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Serialises concurrent sinks creating the same day; the loser finds it made.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(name).execute(&mut *tx).await?;
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {PARENT} FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')"
    );
    sqlx::query(&sql).execute(&mut *tx).await?;
    tx.commit().await
}

/// The days a batch's transactions fall on (before the batch's own transaction begins: creating
/// a partition locks its parent, which must not be held for a whole batch).
pub fn days_of<'a>(txs: impl Iterator<Item = &'a Transaction>) -> BTreeSet<NaiveDate> {
    txs.filter_map(|t| day_of(t.occurred_at)).collect()
}

/// The first columns of an insert, one array each: id, occurred_at, received_at, status, auth code.
type HeadColumns<'a> = (Vec<&'a str>, Vec<DateTime<Utc>>, Vec<DateTime<Utc>>, Vec<&'a str>, Vec<&'a str>);

/// Inserts transactions (their partitions must exist); returns rows inserted.
pub async fn write_transactions(
    tx: &mut DbTransaction<'_, Postgres>,
    txs: &[&Transaction],
) -> Result<u64, sqlx::Error> {
    let mut cols: HeadColumns<'_> = Default::default();
    let mut more: (Vec<i64>, Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    for t in txs {
        cols.0.push(&t.transaction_id);
        cols.1.push(ts(t.occurred_at));
        cols.2.push(ts(t.received_at));
        cols.3.push(t.status.as_str());
        cols.4.push(&t.auth_code);
        more.0.push(t.amount_minor);
        more.1.push(&t.currency);
        more.2.push(&t.category);
        more.3.push(&t.merchant_id);
    }
    let r = sqlx::query(
        "INSERT INTO transaction_records (transaction_id, occurred_at, received_at, status, auth_code, amount_minor,
                                          currency, category, merchant_id)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::bigint[],
                              $7::text[], $8::text[], $9::text[])
         ON CONFLICT (transaction_id, occurred_at) DO NOTHING",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(more.0)
    .bind(more.1)
    .bind(more.2)
    .bind(more.3)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

/// Upserts verdicts: a first verdict is set, a duplicate's never replaces it (a first verdict
/// arriving after a duplicate's does).
pub async fn write_verdicts(
    tx: &mut DbTransaction<'_, Postgres>,
    vs: &[&TransactionVerdict],
) -> Result<u64, sqlx::Error> {
    let ids: Vec<&str> = vs.iter().map(|v| v.transaction_id.as_str()).collect();
    let at: Vec<DateTime<Utc>> = vs.iter().map(|v| ts(v.occurred_at)).collect();
    let decision: Vec<&str> = vs.iter().map(|v| v.decision.as_str()).collect();
    let anomaly: Vec<bool> = vs.iter().map(|v| v.anomaly).collect();
    let severity: Vec<Option<&str>> = vs.iter().map(|v| v.severity.as_deref()).collect();
    // Arrays of arrays must be rectangular: pass the ids joined, split in SQL.
    let anomaly_ids: Vec<String> = vs.iter().map(|v| v.anomaly_ids.join("\n")).collect();
    let r = sqlx::query(
        "INSERT INTO transaction_verdicts (transaction_id, occurred_at, decision, anomaly, severity, anomaly_ids)
         SELECT id, at, decision, anomaly, severity,
                CASE WHEN ids = '' THEN '{}'::text[] ELSE string_to_array(ids, E'\\n') END
         FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::bool[], $5::text[], $6::text[])
              AS u(id, at, decision, anomaly, severity, ids)
         ON CONFLICT (transaction_id) DO UPDATE SET
             occurred_at = EXCLUDED.occurred_at, decision = EXCLUDED.decision, anomaly = EXCLUDED.anomaly,
             severity = EXCLUDED.severity, anomaly_ids = EXCLUDED.anomaly_ids, written_at = now()
         WHERE transaction_verdicts.decision = 'duplicate' AND EXCLUDED.decision <> 'duplicate'",
    )
    .bind(ids)
    .bind(at)
    .bind(decision)
    .bind(anomaly)
    .bind(severity)
    .bind(anomaly_ids)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

/// Keeps, per transaction id, the verdict the table should end with: the first non-duplicate.
pub fn preferred(a: &TransactionVerdict, b: &TransactionVerdict) -> bool {
    a.decision == VerdictDecision::Duplicate && b.decision != VerdictDecision::Duplicate
}

/// Drops the days that ended before `retention` and deletes older verdicts; rows removed (a
/// dropped day counts its rows) by table.
pub async fn run_retention(
    pool: &PgPool,
    retention: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    run_retention_timed(pool, retention, now, None).await
}

/// [`run_retention`], each query timed in `db` when given.
pub async fn run_retention_timed(
    pool: &PgPool,
    retention: Duration,
    now: DateTime<Utc>,
    db: Option<&DbMetrics>,
) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    let keep_from = first_kept_day(retention, now);
    let parts: Vec<String> = timed(
        db,
        DbQuery::RetentionPartitionsList,
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'transaction_records'::regclass ORDER BY 1",
        )
        .fetch_all(pool),
    )
    .await?;
    let mut dropped_rows = 0u64;
    for name in parts {
        let Some(day) =
            name.strip_prefix(&format!("{PARENT}_p")).and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
        else {
            continue;
        };
        if day >= keep_from {
            continue;
        }
        let count = format!("SELECT count(*) FROM {name}");
        let n: i64 = timed(db, DbQuery::RetentionPartitionCount, sqlx::query_scalar(&count).fetch_one(pool)).await?;
        let drop = format!("DROP TABLE IF EXISTS {name}");
        timed(db, DbQuery::RetentionPartitionDrop, sqlx::query(&drop).execute(pool)).await?;
        dropped_rows += n as u64;
        tracing::info!(partition = %name, rows = n, "Retention dropped a day of transaction_records.");
    }
    let cutoff = Utc.from_utc_datetime(&keep_from.and_hms_opt(0, 0, 0).unwrap_or_default());
    let mut verdicts = 0u64;
    loop {
        let delete = sqlx::query(
            "DELETE FROM transaction_verdicts WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM transaction_verdicts WHERE occurred_at < $1 LIMIT $2))",
        )
        .bind(cutoff)
        .bind(BATCH);
        let n = timed(db, DbQuery::RetentionVerdictsDelete, delete.execute(pool)).await?.rows_affected();
        verdicts += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(vec![(PARENT, dropped_rows), ("transaction_verdicts", verdicts)])
}

/// Runs [`run_retention`] every `every` until `shutdown`; `None` keeps everything.
pub async fn run_retention_periodically(
    pool: PgPool,
    retention: Option<Duration>,
    every: Duration,
    metrics: SinkMetrics,
    shutdown: CancellationToken,
) {
    let Some(retention) = retention else { return };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => match run_retention_timed(&pool, retention, Utc::now(), Some(&metrics.db)).await {
                Ok(report) => {
                    for (table, n) in report {
                        if n > 0 {
                            metrics.retention_deleted.get_or_create(&TableLabels { table }).inc_by(n);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Transaction retention failed; will try again next interval."),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_utc_day_and_retention_keeps_whole_days() {
        assert_eq!(day_of(1_765_713_600_000), NaiveDate::from_ymd_opt(2025, 12, 14));
        assert_eq!(partition_name(NaiveDate::from_ymd_opt(2025, 12, 14).unwrap()), "transaction_records_p20251214");
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap();
        assert_eq!(first_kept_day(Duration::from_secs(86_400), now), NaiveDate::from_ymd_opt(2026, 12, 4).unwrap());
        assert_eq!(
            first_kept_day(Duration::from_secs(30 * 86_400), now),
            NaiveDate::from_ymd_opt(2026, 11, 5).unwrap()
        );
    }
}
