//! Upserts keyed by the detector's deterministic keys, so redelivery, replays and concurrent
//! sinks converge on the same rows:
//!
//! * minute tables: keyed by minute (+ status / auth code / category, or merchant and
//!   category); a final minute is the same every time it is delivered, so the row is simply set.
//!   A minute aggregate writes its statuses, auth codes, categories and its `volume_minutes`
//!   row (total and expectation), also for a minute without any transaction (total 0: four
//!   zero statuses and the volume row, no auth code or category);
//! * late bookings: cumulative per (minute, source); the greatest value wins, in any order;
//! * anomalies: keyed by id; a state only replaces one with a lower sequence, so an old state
//!   delivered late never overwrites a newer one. `first_sequence` / `first_message` go the
//!   other way: they keep the lowest sequence seen (the opening state), in any order.
//!
//! A batch is one transaction: all of it is written or none of it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use vigil_schemas::{Anomaly, LateEvents, MerchantMinute, MinuteAggregate, TransactionStatus, TransactionVerdict};

use crate::metrics::{timed, DbMetrics, DbQuery};
use crate::transactions;

/// One decoded message to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Aggregate(MinuteAggregate),
    Late(LateEvents),
    MerchantMinute(MerchantMinute),
    Anomaly(Anomaly),
    /// One accepted transaction (`transaction_records`, see `transactions`).
    Transaction(vigil_schemas::Transaction),
    /// The detector's verdict on one transaction that asked for it.
    Verdict(TransactionVerdict),
}

/// Rows written per table by one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub transactions: u64,
    pub auth_codes: u64,
    pub categories: u64,
    pub late: u64,
    pub merchant_minutes: u64,
    pub volume_minutes: u64,
    pub anomalies: u64,
    pub transaction_records: u64,
    pub transaction_verdicts: u64,
    /// Transactions of a day retention has already dropped: not stored.
    pub expired: u64,
}

fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Writes `rows` in one transaction.
pub async fn write_batch(pool: &PgPool, rows: &[Row]) -> Result<Written, sqlx::Error> {
    write_batch_keeping(pool, rows, None).await
}

/// Writes `rows` in one transaction; transactions of days before `keep_from` (the first day
/// transaction retention keeps) are left out.
pub async fn write_batch_keeping(
    pool: &PgPool,
    rows: &[Row],
    keep_from: Option<NaiveDate>,
) -> Result<Written, sqlx::Error> {
    write_batch_timed(pool, rows, keep_from, None).await
}

/// [`write_batch_keeping`], each query timed in `db` (`vigil_sink_db_query_duration_seconds`)
/// when given.
pub async fn write_batch_timed(
    pool: &PgPool,
    rows: &[Row],
    keep_from: Option<NaiveDate>,
    db: Option<&DbMetrics>,
) -> Result<Written, sqlx::Error> {
    let mut txs: BTreeMap<(&str, i64), &vigil_schemas::Transaction> = BTreeMap::new();
    let mut verdicts: BTreeMap<&str, &TransactionVerdict> = BTreeMap::new();
    let mut expired = 0;
    let expired_by = |ms: i64| {
        let day = Utc.timestamp_millis_opt(ms).single().map(|d| d.date_naive());
        keep_from.is_some_and(|k| day.is_none_or(|d| d < k))
    };
    // Collapse duplicates inside the batch: one statement may not touch a row twice.
    let mut minutes: BTreeMap<i64, &MinuteAggregate> = BTreeMap::new();
    let mut late: BTreeMap<(i64, &str), i64> = BTreeMap::new();
    let mut merchants: BTreeMap<(i64, &str, &str), &MerchantMinute> = BTreeMap::new();
    let mut anomalies: BTreeMap<&str, &Anomaly> = BTreeMap::new();
    // The lowest sequence of each id in the batch: its opening state, for first_message.
    let mut openings: BTreeMap<&str, &Anomaly> = BTreeMap::new();
    for r in rows {
        match r {
            Row::Aggregate(a) => {
                minutes.insert(a.minute_start, a);
            }
            Row::Late(l) => {
                let e = late.entry((l.minute_start, l.source.as_str())).or_default();
                *e = (*e).max(l.late_count);
            }
            Row::MerchantMinute(m) => {
                merchants.insert((m.minute_start, m.merchant_id.as_str(), m.category.as_str()), m);
            }
            Row::Transaction(t) if expired_by(t.occurred_at) => expired += 1,
            Row::Verdict(v) if expired_by(v.occurred_at) => expired += 1,
            Row::Transaction(t) => {
                txs.insert((t.transaction_id.as_str(), t.occurred_at), t);
            }
            Row::Verdict(v) => {
                let e = verdicts.entry(v.transaction_id.as_str()).or_insert(v);
                if transactions::preferred(e, v) {
                    *e = v;
                }
            }
            Row::Anomaly(a) => {
                let e = anomalies.entry(a.id.as_str()).or_insert(a);
                if a.sequence > e.sequence {
                    *e = a;
                }
                let o = openings.entry(a.id.as_str()).or_insert(a);
                if a.sequence < o.sequence {
                    *o = a;
                }
            }
        }
    }
    if !txs.is_empty() {
        transactions::ensure_partitions_timed(pool, &transactions::days_of(txs.values().copied()), db).await?;
    }
    let mut tx = timed(db, DbQuery::BatchBegin, pool.begin()).await?;
    let mut w = Written { expired, ..Written::default() };
    if !txs.is_empty() {
        let list: Vec<&vigil_schemas::Transaction> = txs.into_values().collect();
        w.transaction_records =
            timed(db, DbQuery::TransactionRecordsInsert, transactions::write_transactions(&mut tx, &list)).await?;
    }
    if !verdicts.is_empty() {
        let list: Vec<&TransactionVerdict> = verdicts.into_values().collect();
        w.transaction_verdicts =
            timed(db, DbQuery::TransactionVerdictsUpsert, transactions::write_verdicts(&mut tx, &list)).await?;
    }
    if !minutes.is_empty() {
        let aggs: Vec<&MinuteAggregate> = minutes.into_values().collect();
        w.transactions = timed(db, DbQuery::StatusesUpsert, write_statuses(&mut tx, &aggs)).await?;
        w.auth_codes = timed(db, DbQuery::AuthCodesUpsert, write_auth_codes(&mut tx, &aggs)).await?;
        w.categories = timed(db, DbQuery::CategoriesUpsert, write_categories(&mut tx, &aggs)).await?;
        w.volume_minutes = timed(db, DbQuery::VolumeMinutesUpsert, write_volume(&mut tx, &aggs)).await?;
    }
    if !late.is_empty() {
        w.late = timed(db, DbQuery::LateUpsert, write_late(&mut tx, &late)).await?;
    }
    if !merchants.is_empty() {
        let list: Vec<&MerchantMinute> = merchants.into_values().collect();
        w.merchant_minutes = timed(db, DbQuery::MerchantMinutesUpsert, write_merchant_minutes(&mut tx, &list)).await?;
    }
    if !anomalies.is_empty() {
        let list: Vec<&Anomaly> = anomalies.into_values().collect();
        let openings: Vec<&Anomaly> = openings.into_values().collect();
        w.anomalies = write_anomalies(&mut tx, &list, &openings, db).await?;
    }
    timed(db, DbQuery::BatchCommit, tx.commit()).await?;
    Ok(w)
}

async fn write_statuses(tx: &mut Transaction<'_, Postgres>, aggs: &[&MinuteAggregate]) -> Result<u64, sqlx::Error> {
    let (mut m, mut s, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for a in aggs {
        for status in TransactionStatus::ALL {
            m.push(ts(a.minute_start));
            s.push(status.as_str().to_owned());
            c.push(a.count(status));
        }
    }
    let r = sqlx::query(
        "INSERT INTO transactions (minute, status, count)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::bigint[])
         ON CONFLICT (minute, status) DO UPDATE SET count = EXCLUDED.count, written_at = now()
         WHERE transactions.count IS DISTINCT FROM EXCLUDED.count",
    )
    .bind(m)
    .bind(s)
    .bind(c)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

async fn write_auth_codes(tx: &mut Transaction<'_, Postgres>, aggs: &[&MinuteAggregate]) -> Result<u64, sqlx::Error> {
    let (mut m, mut code, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for a in aggs {
        for (k, v) in &a.auth_codes {
            m.push(ts(a.minute_start));
            code.push(k.clone());
            c.push(*v);
        }
    }
    if m.is_empty() {
        return Ok(0);
    }
    let r = sqlx::query(
        "INSERT INTO transactions_auth_codes (minute, auth_code, count)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::bigint[])
         ON CONFLICT (minute, auth_code) DO UPDATE SET count = EXCLUDED.count, written_at = now()
         WHERE transactions_auth_codes.count IS DISTINCT FROM EXCLUDED.count",
    )
    .bind(m)
    .bind(code)
    .bind(c)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

async fn write_categories(tx: &mut Transaction<'_, Postgres>, aggs: &[&MinuteAggregate]) -> Result<u64, sqlx::Error> {
    let (mut m, mut cat, mut cur, mut n, mut sum, mut min, mut max) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for a in aggs {
        for c in &a.categories {
            m.push(ts(a.minute_start));
            cat.push(c.category.clone());
            cur.push(c.currency.clone());
            n.push(c.count);
            sum.push(c.amount_sum);
            min.push(c.amount_min);
            max.push(c.amount_max);
        }
    }
    if m.is_empty() {
        return Ok(0);
    }
    let r = sqlx::query(
        "INSERT INTO transactions_categories (minute, category, currency, count, amount_sum, amount_min, amount_max)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
         ON CONFLICT (minute, category, currency) DO UPDATE SET
           count = EXCLUDED.count, amount_sum = EXCLUDED.amount_sum,
           amount_min = EXCLUDED.amount_min, amount_max = EXCLUDED.amount_max, written_at = now()
         WHERE (transactions_categories.count, transactions_categories.amount_sum)
               IS DISTINCT FROM (EXCLUDED.count, EXCLUDED.amount_sum)",
    )
    .bind(m)
    .bind(cat)
    .bind(cur)
    .bind(n)
    .bind(sum)
    .bind(min)
    .bind(max)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

/// The minute's total against the global volume expectation. An expectation that is not a
/// finite number is stored as NULL (none): it must not cost the minute its counts.
async fn write_volume(tx: &mut Transaction<'_, Postgres>, aggs: &[&MinuteAggregate]) -> Result<u64, sqlx::Error> {
    let opt = |f: fn(&MinuteAggregate) -> Option<f64>| {
        aggs.iter().map(|a| f(a).filter(|x| x.is_finite())).collect::<Vec<Option<f64>>>()
    };
    let r = sqlx::query(
        "INSERT INTO volume_minutes (minute, total, expected, expected_low, expected_high)
         SELECT * FROM UNNEST($1::timestamptz[], $2::bigint[], $3::float8[], $4::float8[], $5::float8[])
         ON CONFLICT (minute) DO UPDATE SET
           total = EXCLUDED.total, expected = EXCLUDED.expected, expected_low = EXCLUDED.expected_low,
           expected_high = EXCLUDED.expected_high, written_at = now()
         WHERE (volume_minutes.total, volume_minutes.expected, volume_minutes.expected_low, volume_minutes.expected_high)
               IS DISTINCT FROM (EXCLUDED.total, EXCLUDED.expected, EXCLUDED.expected_low, EXCLUDED.expected_high)",
    )
    .bind(aggs.iter().map(|a| ts(a.minute_start)).collect::<Vec<_>>())
    .bind(aggs.iter().map(|a| a.total).collect::<Vec<i64>>())
    .bind(opt(|a| a.expected_total))
    .bind(opt(|a| a.expected_low))
    .bind(opt(|a| a.expected_high))
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

async fn write_late(tx: &mut Transaction<'_, Postgres>, late: &BTreeMap<(i64, &str), i64>) -> Result<u64, sqlx::Error> {
    let m: Vec<DateTime<Utc>> = late.keys().map(|(m, _)| ts(*m)).collect();
    let s: Vec<String> = late.keys().map(|(_, s)| (*s).to_owned()).collect();
    let c: Vec<i64> = late.values().copied().collect();
    let r = sqlx::query(
        "INSERT INTO transactions_late (minute, source, late_count)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::bigint[])
         ON CONFLICT (minute, source) DO UPDATE SET late_count = EXCLUDED.late_count, written_at = now()
         WHERE transactions_late.late_count < EXCLUDED.late_count",
    )
    .bind(m)
    .bind(s)
    .bind(c)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

async fn write_merchant_minutes(
    tx: &mut Transaction<'_, Postgres>,
    list: &[&MerchantMinute],
) -> Result<u64, sqlx::Error> {
    let i64s = |f: fn(&MerchantMinute) -> i64| list.iter().map(|m| f(m)).collect::<Vec<i64>>();
    let r = sqlx::query(
        "INSERT INTO merchant_minutes (minute, merchant_id, category, total, approved, denied, failed, reversed)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
            $7::bigint[], $8::bigint[])
         ON CONFLICT (minute, merchant_id, category) DO UPDATE SET
           total = EXCLUDED.total, approved = EXCLUDED.approved, denied = EXCLUDED.denied,
           failed = EXCLUDED.failed, reversed = EXCLUDED.reversed, written_at = now()
         WHERE (merchant_minutes.total, merchant_minutes.approved, merchant_minutes.denied,
                merchant_minutes.failed, merchant_minutes.reversed)
               IS DISTINCT FROM (EXCLUDED.total, EXCLUDED.approved, EXCLUDED.denied, EXCLUDED.failed, EXCLUDED.reversed)",
    )
    .bind(list.iter().map(|m| ts(m.minute_start)).collect::<Vec<_>>())
    .bind(list.iter().map(|m| m.merchant_id.clone()).collect::<Vec<String>>())
    .bind(list.iter().map(|m| m.category.clone()).collect::<Vec<String>>())
    .bind(i64s(|m| m.total))
    .bind(i64s(|m| m.approved))
    .bind(i64s(|m| m.denied))
    .bind(i64s(|m| m.failed))
    .bind(i64s(|m| m.reversed))
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

/// `list`: each id's newest state in the batch; `openings`: each id's oldest, in the same order.
async fn write_anomalies(
    tx: &mut Transaction<'_, Postgres>,
    list: &[&Anomaly],
    openings: &[&Anomaly],
    db: Option<&DbMetrics>,
) -> Result<u64, sqlx::Error> {
    let col = |f: fn(&Anomaly) -> String| list.iter().map(|a| f(a)).collect::<Vec<String>>();
    let i64s = |f: fn(&Anomaly) -> i64| list.iter().map(|a| f(a)).collect::<Vec<i64>>();
    let f64s = |f: fn(&Anomaly) -> f64| list.iter().map(|a| f(a)).collect::<Vec<f64>>();
    let opt_ts =
        |f: fn(&Anomaly) -> Option<i64>| list.iter().map(|a| f(a).map(ts)).collect::<Vec<Option<DateTime<Utc>>>>();
    let opt_s = |f: fn(&Anomaly) -> Option<String>| list.iter().map(|a| f(a)).collect::<Vec<Option<String>>>();
    let upsert = sqlx::query(
        "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, window_start, window_end,
            transaction_id, category, merchant_id, observed, observed_count, observed_total,
            baseline_mean, baseline_stddev, baseline_n, scored_on, score, p_value, threshold,
            severity, state, message, first_seen, last_updated, resolved_at, first_sequence, first_message)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
            $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[],
            $11::float8[], $12::bigint[], $13::bigint[], $14::float8[], $15::float8[], $16::bigint[],
            $17::text[], $18::float8[], $19::float8[], $20::float8[], $21::text[], $22::text[], $23::text[],
            $24::timestamptz[], $25::timestamptz[], $26::timestamptz[], $27::bigint[], $28::text[])
         ON CONFLICT (id) DO UPDATE SET
            sequence = EXCLUDED.sequence, observed = EXCLUDED.observed,
            observed_count = EXCLUDED.observed_count, observed_total = EXCLUDED.observed_total,
            baseline_mean = EXCLUDED.baseline_mean, baseline_stddev = EXCLUDED.baseline_stddev,
            baseline_n = EXCLUDED.baseline_n, score = EXCLUDED.score, p_value = EXCLUDED.p_value,
            threshold = EXCLUDED.threshold, severity = EXCLUDED.severity, state = EXCLUDED.state,
            message = EXCLUDED.message, window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
            last_updated = EXCLUDED.last_updated, resolved_at = EXCLUDED.resolved_at, updated_at = now()
         WHERE anomalies.sequence < EXCLUDED.sequence",
    )
    .bind(col(|a| a.id.clone()))
    .bind(i64s(|a| a.sequence))
    .bind(col(|a| a.rule.as_str().to_owned()))
    .bind(col(|a| a.dimension.as_str().to_owned()))
    .bind(col(|a| a.dimension_value.clone()))
    .bind(opt_ts(|a| a.window_start))
    .bind(opt_ts(|a| a.window_end))
    .bind(opt_s(|a| a.transaction_id.clone()))
    .bind(opt_s(|a| a.category.clone()))
    .bind(opt_s(|a| a.merchant_id.clone()))
    .bind(f64s(|a| a.observed))
    .bind(i64s(|a| a.observed_count))
    .bind(i64s(|a| a.observed_total))
    .bind(f64s(|a| a.baseline_mean))
    .bind(f64s(|a| finite(a.baseline_stddev)))
    .bind(i64s(|a| a.baseline_n))
    .bind(col(|a| a.scored_on.clone()))
    .bind(f64s(|a| finite(a.score)))
    .bind(list.iter().map(|a| a.p_value).collect::<Vec<Option<f64>>>())
    .bind(f64s(|a| a.threshold))
    .bind(col(|a| a.severity.as_str().to_owned()))
    .bind(col(|a| a.state.as_str().to_owned()))
    .bind(col(|a| a.message.clone()))
    .bind(list.iter().map(|a| ts(a.first_seen)).collect::<Vec<_>>())
    .bind(list.iter().map(|a| ts(a.last_updated)).collect::<Vec<_>>())
    .bind(opt_ts(|a| a.resolved_at))
    .bind(openings.iter().map(|a| a.sequence).collect::<Vec<i64>>())
    .bind(openings.iter().map(|a| a.message.clone()).collect::<Vec<String>>());
    let r = timed(db, DbQuery::AnomaliesUpsert, upsert.execute(&mut **tx)).await?;
    // A row already stored from a later state (delivered first) takes an earlier one's opening.
    let first_state = sqlx::query(
        "UPDATE anomalies a SET first_sequence = u.first_sequence, first_message = u.first_message
         FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS u(id, first_sequence, first_message)
         WHERE a.id = u.id AND (a.first_sequence IS NULL OR a.first_sequence > u.first_sequence)",
    )
    .bind(openings.iter().map(|a| a.id.clone()).collect::<Vec<String>>())
    .bind(openings.iter().map(|a| a.sequence).collect::<Vec<i64>>())
    .bind(openings.iter().map(|a| a.message.clone()).collect::<Vec<String>>());
    timed(db, DbQuery::AnomaliesFirstState, first_state.execute(&mut **tx)).await?;
    Ok(r.rows_affected())
}

/// Infinity (the low-variance rule's z) is stored as the largest finite double, which every
/// SQL client and Grafana can read.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else if x > 0.0 {
        f64::MAX
    } else if x < 0.0 {
        f64::MIN
    } else {
        0.0
    }
}
