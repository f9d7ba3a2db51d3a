//! Realistic data for the dashboards and alert rules: a few hours of per-minute aggregates as
//! the sink writes them (all four statuses of every minute, the auth-code and category
//! breakdowns summing to the same totals, the watched merchants' minutes, and each minute's
//! volume row against the expected count), an optional denied spike, an optional stop of all
//! traffic (minutes with no transaction, zeros in every count) and a merchant going dark,
//! anomalies as the detector reports them, and alerts as the webhook service stores them.
//!
//! Deterministic: the same plan gives the same rows, so the thresholds the tests rely on hold
//! every run.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::PgPool;

/// What to seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Minutes are seeded up to, not including, this minute.
    pub end: DateTime<Utc>,
    /// How many minutes before `end`.
    pub minutes: i64,
    /// A denied spike: it starts this many minutes before `end` and lasts `.1` minutes, with
    /// a denied share of 35 % (normally 5 %).
    pub denied_spike: Option<(i64, i64)>,
    /// Anomalies (the spike's, older resolved ones) and received alerts.
    pub anomalies: bool,
    /// A critical amount anomaly written 2 minutes before `end`.
    pub critical_amount_anomaly: bool,
    /// A stop of all traffic: it starts this many minutes before `end` and lasts `.1` minutes,
    /// with no transaction at all, and its critical volume_drop anomaly, resolved 2 minutes
    /// after the stop ended, or still open when the stop reaches `end`.
    pub traffic_stop: Option<(i64, i64)>,
    /// Merchant m-7 goes dark 50 minutes before `end` for 6 minutes (no minutes of its own), with
    /// its resolved high volume_drop anomaly.
    pub dark_merchant: bool,
}

/// Minutes at the start of a plan without a volume expectation (the baseline warming up).
pub const VOLUME_WARMUP_MINUTES: i64 = 15;

/// The merchant that goes dark in [`Plan::dark_merchant`], and when (minutes before `end`, length).
pub const DARK_MERCHANT: (&str, i64, i64) = ("m-7", 50, 6);

impl Plan {
    /// Three hours of normal traffic ending at `end`, nothing else.
    pub fn normal(end: DateTime<Utc>) -> Self {
        Plan {
            end,
            minutes: 180,
            denied_spike: None,
            anomalies: false,
            critical_amount_anomaly: false,
            traffic_stop: None,
            dark_merchant: false,
        }
    }

    /// Three hours with a 4-minute denied spike ending at `end`, its anomaly, a critical amount
    /// anomaly, a 5-minute stop of all traffic 75 minutes before `end` (resolved), merchant m-7
    /// going dark for 6 minutes (resolved), older resolved anomalies and received alerts.
    pub fn with_incident(end: DateTime<Utc>) -> Self {
        Plan {
            denied_spike: Some((4, 4)),
            anomalies: true,
            critical_amount_anomaly: true,
            traffic_stop: Some((75, 5)),
            dark_merchant: true,
            ..Plan::normal(end)
        }
    }

    fn minute(&self, i: i64) -> DateTime<Utc> {
        self.end - Duration::minutes(self.minutes - i)
    }

    fn in_spike(&self, m: DateTime<Utc>) -> bool {
        self.denied_spike.is_some_and(|(start, len)| {
            let first = self.end - Duration::minutes(start);
            m >= first && m < first + Duration::minutes(len)
        })
    }

    pub fn spike_minutes(&self) -> Vec<DateTime<Utc>> {
        (0..self.minutes).map(|i| self.minute(i)).filter(|m| self.in_spike(*m)).collect()
    }

    fn in_stop(&self, m: DateTime<Utc>) -> bool {
        self.traffic_stop.is_some_and(|(start, len)| {
            let first = self.end - Duration::minutes(start);
            m >= first && m < first + Duration::minutes(len)
        })
    }

    /// The minutes without any transaction.
    pub fn stop_minutes(&self) -> Vec<DateTime<Utc>> {
        (0..self.minutes).map(|i| self.minute(i)).filter(|m| self.in_stop(*m)).collect()
    }

    /// Whether the stop lasts up to `end`, its anomaly still open.
    pub fn stop_is_open(&self) -> bool {
        self.traffic_stop.is_some_and(|(start, len)| start <= len)
    }

    fn merchant_dark(&self, merchant: &str, m: DateTime<Utc>) -> bool {
        let (who, start, len) = DARK_MERCHANT;
        let first = self.end - Duration::minutes(start);
        self.dark_merchant && merchant == who && m >= first && m < first + Duration::minutes(len)
    }
}

/// A fixed minute to seed up to (data in the past, so nothing depends on the clock).
pub fn fixed_end() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z").unwrap().with_timezone(&Utc)
}

/// splitmix64: a deterministic noise in [-1, 1] for minute `i` and stream `salt`.
fn noise(i: i64, salt: u64) -> f64 {
    let mut z = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) * 2.0 - 1.0
}

/// Watched merchants: (merchant, category, transactions a minute). m-3 trades in two categories.
pub const MERCHANTS: [(&str, &str, i64); 4] =
    [("m-42", "electronics", 12), ("m-7", "fuel", 15), ("m-3", "grocery", 20), ("m-3", "food", 6)];

pub const CATEGORIES: [(&str, f64, i64); 5] = [
    ("grocery", 0.35, 4_500),
    ("fuel", 0.20, 6_000),
    ("food", 0.20, 2_500),
    ("travel", 0.15, 42_000),
    ("electronics", 0.10, 31_000),
];

/// The transactions a minute normally brings: a two-hour wave the volume baseline follows.
fn expected_total(i: i64) -> f64 {
    200.0 + 40.0 * (2.0 * std::f64::consts::PI * i as f64 / 120.0).sin()
}

/// The volume baseline's normal range around [`expected_total`]: the minute's noise (±10) and
/// the Poisson spread.
fn expected_range(i: i64) -> (f64, f64) {
    let e = expected_total(i);
    let half = 10.0 + 2.0 * e.sqrt();
    (e - half, e + half)
}

/// Counts of one minute: (approved, denied, failed, reversed).
fn statuses(plan: &Plan, i: i64, m: DateTime<Utc>) -> (i64, i64, i64, i64) {
    if plan.in_stop(m) {
        return (0, 0, 0, 0);
    }
    let total = (expected_total(i) + 10.0 * noise(i, 1)).round() as i64;
    let denied_share = if plan.in_spike(m) { 0.35 } else { 0.05 };
    let denied = (total as f64 * denied_share + 2.5 * noise(i, 2)).round().max(0.0) as i64;
    let failed = (total as f64 * 0.02 + 1.5 * noise(i, 3)).round().max(0.0) as i64;
    let reversed = (total as f64 * 0.01 + noise(i, 4)).round().max(0.0) as i64;
    (total - denied - failed - reversed, denied, failed, reversed)
}

/// What was seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub first_minute: DateTime<Utc>,
    pub last_minute: DateTime<Utc>,
    pub spike_minutes: Vec<DateTime<Utc>>,
    pub stop_minutes: Vec<DateTime<Utc>>,
    pub total_transactions: i64,
    /// The transactions stored in `transaction_records` (a sample: one per watched merchant
    /// and minute, and the amount anomalies' own).
    pub stored: Vec<StoredTransaction>,
}

/// One row of `transaction_records` as seeded, with its verdict if it asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransaction {
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    pub merchant: &'static str,
    pub category: &'static str,
    pub status: &'static str,
    pub amount_minor: i64,
    /// (decision, anomaly, severity, anomaly ids) as `transaction_verdicts` holds it.
    pub verdict: Option<(&'static str, bool, Option<&'static str>, Vec<String>)>,
}

pub async fn seed(pool: &PgPool, plan: &Plan) -> Seeded {
    let (mut t_min, mut t_status, mut t_count) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a_min, mut a_code, mut a_count) = (Vec::new(), Vec::new(), Vec::new());
    let (mut c_min, mut c_cat, mut c_count, mut c_sum, mut c_lo, mut c_hi) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut mm_min, mut mm_merchant, mut mm_cat, mut mm_counts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut v_min, mut v_total, mut v_expected, mut v_low, mut v_high) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut total_transactions = 0;
    for i in 0..plan.minutes {
        let m = plan.minute(i);
        let (approved, denied, failed, reversed) = statuses(plan, i, m);
        let total = approved + denied + failed + reversed;
        total_transactions += total;
        // Every minute, one without transactions too: four zero statuses and a volume row.
        for (s, n) in [("approved", approved), ("denied", denied), ("failed", failed), ("reversed", reversed)] {
            t_min.push(m);
            t_status.push(s.to_owned());
            t_count.push(n);
        }
        let warm = i >= VOLUME_WARMUP_MINUTES;
        v_min.push(m);
        v_total.push(total);
        v_expected.push(warm.then(|| expected_total(i)));
        v_low.push(warm.then(|| expected_range(i).0));
        v_high.push(warm.then(|| expected_range(i).1));
        if total == 0 {
            // No auth code, category or merchant row for a minute without transactions.
            continue;
        }
        // Approvals and reversals carry 00; declines split 05 / 51; failures 91 / 96.
        let d05 = (denied as f64 * 0.6).round() as i64;
        let f91 = failed / 2;
        for (code, n) in
            [("00", approved + reversed), ("05", d05), ("51", denied - d05), ("91", f91), ("96", failed - f91)]
        {
            a_min.push(m);
            a_code.push(code.to_owned());
            a_count.push(n);
        }
        // The spike is m-42's too: the drill-down shows it at the merchant.
        for (k, (merchant, cat, base)) in MERCHANTS.iter().enumerate() {
            if plan.merchant_dark(merchant, m) {
                continue;
            }
            let n = base + (3.0 * noise(i, 10 + k as u64)).round() as i64;
            let share = if plan.in_spike(m) && *merchant == "m-42" { 0.35 } else { 0.05 };
            let d = (n as f64 * share).round() as i64;
            let f = i64::from(noise(i, 20 + k as u64) > 0.6);
            let r = i64::from(noise(i, 30 + k as u64) > 0.8);
            mm_min.push(m);
            mm_merchant.push((*merchant).to_owned());
            mm_cat.push((*cat).to_owned());
            mm_counts.push([n, n - d - f - r, d, f, r]);
        }
        let mut left = total;
        for (k, (cat, share, avg)) in CATEGORIES.iter().enumerate() {
            let n = if k == CATEGORIES.len() - 1 { left } else { (total as f64 * share).round() as i64 };
            left -= n;
            c_min.push(m);
            c_cat.push((*cat).to_owned());
            c_count.push(n);
            c_sum.push(n * avg);
            c_lo.push(avg / 10);
            c_hi.push(avg * 4);
        }
    }
    sqlx::query("INSERT INTO transactions (minute, status, count) SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::int8[])")
        .bind(&t_min)
        .bind(&t_status)
        .bind(&t_count)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO transactions_auth_codes (minute, auth_code, count) SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::int8[])",
    )
    .bind(&a_min)
    .bind(&a_code)
    .bind(&a_count)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO transactions_categories (minute, category, currency, count, amount_sum, amount_min, amount_max)
         SELECT m, c, 'EUR', n, s, lo, hi
         FROM UNNEST($1::timestamptz[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) AS u(m, c, n, s, lo, hi)",
    )
    .bind(&c_min)
    .bind(&c_cat)
    .bind(&c_count)
    .bind(&c_sum)
    .bind(&c_lo)
    .bind(&c_hi)
    .execute(pool)
    .await
    .unwrap();
    let col = |j: usize| mm_counts.iter().map(|c| c[j]).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO merchant_minutes (minute, merchant_id, category, total, approved, denied, failed, reversed)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[])",
    )
    .bind(&mm_min)
    .bind(&mm_merchant)
    .bind(&mm_cat)
    .bind(col(0))
    .bind(col(1))
    .bind(col(2))
    .bind(col(3))
    .bind(col(4))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO volume_minutes (minute, total, expected, expected_low, expected_high)
         SELECT * FROM UNNEST($1::timestamptz[], $2::int8[], $3::float8[], $4::float8[], $5::float8[])",
    )
    .bind(&v_min)
    .bind(&v_total)
    .bind(&v_expected)
    .bind(&v_low)
    .bind(&v_high)
    .execute(pool)
    .await
    .unwrap();
    // A few late events, as the detector books them.
    sqlx::query("INSERT INTO transactions_late (minute, source, late_count) VALUES ($1, 'partition-0', 3)")
        .bind(plan.minute(plan.minutes / 2))
        .execute(pool)
        .await
        .unwrap();

    if plan.anomalies {
        seed_anomalies(pool, plan).await;
        seed_received_alerts(pool, plan).await;
    }
    if plan.traffic_stop.is_some() {
        seed_stop_anomaly(pool, plan).await;
    }
    if plan.dark_merchant {
        seed_dark_merchant_anomaly(pool, plan).await;
        seed_silences(pool, plan).await;
    }
    let stored = seed_transaction_records(pool, plan).await;
    if plan.critical_amount_anomaly {
        let at = plan.end - Duration::minutes(3);
        insert_anomaly(
            pool,
            Anomaly {
                id: "amount_zscore:merchant:m-42:tx-7f3a".into(),
                rule: "amount_zscore",
                dimension: "merchant",
                dimension_value: "m-42".into(),
                category: Some("electronics"),
                merchant: Some("m-42"),
                transaction_id: Some("tx-7f3a"),
                window: None,
                observed: 2_450_000.0,
                severity: "critical",
                state: "firing",
                message: "Amount 24500.00 EUR is 9.1 standard deviations above merchant m-42's usual amounts.".into(),
                first_seen: at,
                resolved_at: None,
                created_at: plan.end - Duration::minutes(2),
                lifecycle: None,
            },
        )
        .await;
    }
    Seeded {
        first_minute: plan.minute(0),
        last_minute: plan.minute(plan.minutes - 1),
        spike_minutes: plan.spike_minutes(),
        stop_minutes: plan.stop_minutes(),
        total_transactions,
        stored,
    }
}

/// `transaction_records`' partition of `day`, named as the sink names it
/// (`sink/src/transactions.rs`).
pub async fn ensure_partition(pool: &PgPool, day: chrono::NaiveDate) {
    let next = day.succ_opt().unwrap();
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS transaction_records_p{} PARTITION OF transaction_records
         FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
        day.format("%Y%m%d")
    );
    sqlx::query(&sql).execute(pool).await.unwrap();
}

/// A sample of the stored transactions: one per watched merchant (its category) and minute while
/// it trades, 7 + 11k seconds into the minute; m-42's denied during the spike. Every tenth
/// minute's asked for a verdict (counted, not anomalous). The amount anomalies' transactions
/// (tx-7f3a of m-42, tx-11 of m-7) are stored too, tx-7f3a with its anomalous verdict.
async fn seed_transaction_records(pool: &PgPool, plan: &Plan) -> Vec<StoredTransaction> {
    let mut out = Vec::new();
    for i in 0..plan.minutes {
        let m = plan.minute(i);
        if plan.in_stop(m) {
            continue;
        }
        for (k, (merchant, category, _)) in MERCHANTS.iter().enumerate() {
            if plan.merchant_dark(merchant, m) {
                continue;
            }
            let avg = CATEGORIES.iter().find(|c| c.0 == *category).map_or(1_000, |c| c.2);
            let denied = plan.in_spike(m) && *merchant == "m-42";
            out.push(StoredTransaction {
                id: format!("tx-{i:03}-{k}"),
                occurred_at: m + Duration::seconds(7 + 11 * k as i64),
                merchant,
                category,
                status: if denied { "denied" } else { "approved" },
                amount_minor: avg + (avg as f64 * 0.3 * noise(i, 40 + k as u64)).round() as i64,
                verdict: (i % 10 == 0).then(|| ("counted", false, None, Vec::new())),
            });
        }
    }
    if plan.critical_amount_anomaly {
        out.push(StoredTransaction {
            id: "tx-7f3a".into(),
            occurred_at: plan.end - Duration::minutes(3),
            merchant: "m-42",
            category: "electronics",
            status: "approved",
            amount_minor: 2_450_000,
            verdict: Some(("counted", true, Some("critical"), vec!["amount_zscore:merchant:m-42:tx-7f3a".into()])),
        });
    }
    if plan.anomalies {
        out.push(StoredTransaction {
            id: "tx-11".into(),
            occurred_at: plan.end - Duration::minutes(120),
            merchant: "m-7",
            category: "fuel",
            status: "approved",
            amount_minor: 61_000,
            verdict: None,
        });
    }
    let days: std::collections::BTreeSet<chrono::NaiveDate> = out.iter().map(|t| t.occurred_at.date_naive()).collect();
    for day in days {
        ensure_partition(pool, day).await;
    }
    let col = |f: fn(&StoredTransaction) -> String| out.iter().map(f).collect::<Vec<String>>();
    sqlx::query(
        "INSERT INTO transaction_records (transaction_id, occurred_at, received_at, status, auth_code, amount_minor,
                                          currency, category, merchant_id)
         SELECT id, at, at + interval '40 milliseconds', status, CASE status WHEN 'denied' THEN '05' ELSE '00' END,
                amount, 'EUR', category, merchant
         FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::int8[], $5::text[], $6::text[])
              AS u(id, at, status, amount, category, merchant)",
    )
    .bind(col(|t| t.id.clone()))
    .bind(out.iter().map(|t| t.occurred_at).collect::<Vec<_>>())
    .bind(col(|t| t.status.to_owned()))
    .bind(out.iter().map(|t| t.amount_minor).collect::<Vec<i64>>())
    .bind(col(|t| t.category.to_owned()))
    .bind(col(|t| t.merchant.to_owned()))
    .execute(pool)
    .await
    .unwrap();
    for t in &out {
        let Some((decision, anomaly, severity, ids)) = &t.verdict else { continue };
        sqlx::query(
            "INSERT INTO transaction_verdicts (transaction_id, occurred_at, decision, anomaly, severity, anomaly_ids)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(t.occurred_at)
        .bind(decision)
        .bind(anomaly)
        .bind(severity)
        .bind(ids)
        .execute(pool)
        .await
        .unwrap();
    }
    out
}

struct Anomaly {
    id: String,
    rule: &'static str,
    dimension: &'static str,
    dimension_value: String,
    category: Option<&'static str>,
    merchant: Option<&'static str>,
    transaction_id: Option<&'static str>,
    window: Option<DateTime<Utc>>,
    observed: f64,
    severity: &'static str,
    state: &'static str,
    message: String,
    first_seen: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    /// An incident that went on after it opened; None: sequence 0 (firing) or 2 (resolved),
    /// last updated at its resolution (or onset), opened with its message.
    lifecycle: Option<Lifecycle>,
}

struct Lifecycle {
    /// The stored (latest) state's sequence.
    sequence: i64,
    last_updated: DateTime<Utc>,
    /// The message of its opening state (sequence 0), kept by the sink in first_message.
    first_message: String,
}

async fn insert_anomaly(pool: &PgPool, a: Anomaly) {
    let volume = a.rule.starts_with("volume_");
    let rate = a.window.is_some() && !volume;
    let (sequence, last_updated, first_message) = match a.lifecycle {
        Some(l) => (l.sequence, l.last_updated, l.first_message),
        None => (if a.state == "firing" { 0i64 } else { 2 }, a.resolved_at.unwrap_or(a.first_seen), a.message.clone()),
    };
    // (observed_count, observed_total, baseline_mean, baseline_stddev, baseline_n, scored_on,
    // score, p_value) as each kind of rule reports them.
    let (count, total, mean, sd, n, scored_on, score, p_value) = if volume {
        (a.observed as i64, a.observed as i64, 200.0, 18.0, 120i64, "volume_cusum", 31.0, Some(1e-80))
    } else if rate {
        (70i64, 200i64, 0.05, 0.015, 30i64, "rate", 19.6, Some(1e-12))
    } else {
        (1, 1, 8.1, 0.9, 412, "ln(amount)", 9.1, None::<f64>)
    };
    sqlx::query(
        "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, window_start, window_end,
             transaction_id, category, merchant_id, observed, observed_count, observed_total,
             baseline_mean, baseline_stddev, baseline_n, scored_on, score, p_value, threshold,
             severity, state, message, first_seen, last_updated, resolved_at, created_at, updated_at,
             first_sequence, first_message)
         VALUES ($1, $2, $3, $4, $5, $6, $6 + interval '1 minute', $7, $8, $9, $10, $11, $12, $13, $14, $15,
             $16, $17, $18, 4, $19, $20, $21, $22, $23, $24, $25, $25, 0, $26)",
    )
    .bind(&a.id)
    .bind(sequence)
    .bind(a.rule)
    .bind(a.dimension)
    .bind(&a.dimension_value)
    .bind(a.window)
    .bind(a.transaction_id)
    .bind(a.category)
    .bind(a.merchant)
    .bind(a.observed)
    .bind(count)
    .bind(total)
    .bind(mean)
    .bind(sd)
    .bind(n)
    .bind(scored_on)
    .bind(score)
    .bind(p_value)
    .bind(a.severity)
    .bind(a.state)
    .bind(&a.message)
    .bind(a.first_seen)
    .bind(last_updated)
    .bind(a.resolved_at)
    .bind(a.created_at)
    .bind(first_message)
    .execute(pool)
    .await
    .unwrap();
}

async fn seed_anomalies(pool: &PgPool, plan: &Plan) {
    if let Some(first) = plan.spike_minutes().first().copied() {
        insert_anomaly(
            pool,
            Anomaly {
                id: format!("denied_rate:global:all:{}", first.timestamp_millis()),
                rule: "denied_rate",
                dimension: "global",
                dimension_value: "all".into(),
                category: None,
                merchant: None,
                transaction_id: None,
                window: Some(first),
                observed: 0.35,
                severity: "high",
                state: "firing",
                message: "Denied rate 35.0% in the minute, against 5.0% usually (z = 19.6).".into(),
                first_seen: first,
                resolved_at: None,
                created_at: first + Duration::seconds(95),
                lifecycle: None,
            },
        )
        .await;
    }
    // An earlier incident of one merchant's denied rate, reported as that merchant's anomaly.
    let merchant_onset = plan.end - Duration::minutes(40);
    insert_anomaly(
        pool,
        Anomaly {
            id: format!("denied_rate:merchant:m-42:{}", merchant_onset.timestamp_millis()),
            rule: "denied_rate",
            dimension: "merchant",
            dimension_value: "m-42".into(),
            category: None,
            merchant: Some("m-42"),
            transaction_id: None,
            window: Some(merchant_onset),
            observed: 0.3,
            severity: "medium",
            state: "resolved",
            message: "Denied rate of merchant m-42 at 30.0% over 3 minutes, against 5.0% usually.".into(),
            first_seen: merchant_onset,
            resolved_at: Some(merchant_onset + Duration::minutes(8)),
            created_at: merchant_onset + Duration::minutes(3),
            lifecycle: None,
        },
    )
    .await;
    let old = plan.end - Duration::minutes(120);
    insert_anomaly(
        pool,
        Anomaly {
            id: "amount_low_variance:category:fuel:tx-11".into(),
            rule: "amount_low_variance",
            dimension: "category",
            dimension_value: "fuel".into(),
            category: Some("fuel"),
            merchant: Some("m-7"),
            transaction_id: Some("tx-11"),
            window: None,
            observed: 61_000.0,
            severity: "medium",
            state: "resolved",
            message: "Amount 610.00 EUR is far above fuel's narrow usual range.".into(),
            first_seen: old,
            resolved_at: Some(old + Duration::minutes(20)),
            created_at: old + Duration::minutes(1),
            lifecycle: None,
        },
    )
    .await;
    let older = plan.end - Duration::minutes(90);
    insert_anomaly(
        pool,
        Anomaly {
            id: format!("auth_code_rate:auth_code:51:{}", older.timestamp_millis()),
            rule: "auth_code_rate",
            dimension: "auth_code",
            dimension_value: "51".into(),
            category: None,
            merchant: None,
            transaction_id: None,
            window: Some(older),
            observed: 0.04,
            severity: "high",
            state: "resolved",
            message: "Auth code 51 (insufficient funds) at 4.0% of the minute, against 2.0% usually.".into(),
            first_seen: older,
            resolved_at: Some(older + Duration::minutes(4)),
            created_at: older + Duration::minutes(2),
            lifecycle: None,
        },
    )
    .await;
}

/// The stop's volume_drop anomaly of all traffic, as the sink stores it: opened with the stop's
/// first minute, updated every minute of it, and resolved 2 minutes after traffic came back
/// (or still open when the stop reaches `end`).
async fn seed_stop_anomaly(pool: &PgPool, plan: &Plan) {
    let minutes = plan.stop_minutes();
    let (Some(first), Some(last)) = (minutes.first().copied(), minutes.last().copied()) else { return };
    let hm = |t: DateTime<Utc>| t.format("%H:%M").to_string();
    let n = minutes.len() as i64;
    let opening = format!(
        "Transaction volume dropped: 0 transactions in {}–{} UTC against 214 expected (normal range 175–253); critical.",
        hm(first),
        hm(first + Duration::minutes(1))
    );
    // (state, message, the minute judged last, its count, resolved_at, sequence)
    let (state, message, judged, observed, resolved_at, sequence) = if plan.stop_is_open() {
        let message = format!(
            "Transaction volume dropped: 0 transactions in {}–{} UTC; 0 against {} expected since {} UTC; critical.",
            hm(last),
            hm(last + Duration::minutes(1)),
            214 * n,
            hm(first)
        );
        ("updated", message, last, 0.0, None, n - 1)
    } else {
        let back = last + Duration::minutes(3);
        let message = format!(
            "Resolved at {} UTC after 2 minutes back in range: transaction volume at 205 a minute (209 expected). Started {} UTC.",
            hm(back),
            hm(first)
        );
        ("resolved", message, back - Duration::minutes(1), 205.0, Some(back), n + 2)
    };
    insert_anomaly(
        pool,
        Anomaly {
            id: format!("volume_drop:global:all:{}", first.timestamp_millis()),
            rule: "volume_drop",
            dimension: "global",
            dimension_value: "all".into(),
            category: None,
            merchant: None,
            transaction_id: None,
            window: Some(judged),
            observed,
            severity: "critical",
            state,
            message,
            first_seen: first,
            resolved_at,
            created_at: first + Duration::seconds(75),
            lifecycle: Some(Lifecycle {
                sequence,
                last_updated: judged + Duration::minutes(1),
                first_message: opening,
            }),
        },
    )
    .await;
}

/// Merchant m-7's volume_drop while it was dark: high (a small merchant's stop is not paged as
/// "Traffic stopped"), resolved.
async fn seed_dark_merchant_anomaly(pool: &PgPool, plan: &Plan) {
    let (merchant, start, len) = DARK_MERCHANT;
    let first = plan.end - Duration::minutes(start);
    let back = first + Duration::minutes(len + 2);
    insert_anomaly(
        pool,
        Anomaly {
            id: format!("volume_drop:merchant:{merchant}:{}", first.timestamp_millis()),
            rule: "volume_drop",
            dimension: "merchant",
            dimension_value: merchant.into(),
            category: None,
            merchant: Some(merchant),
            transaction_id: None,
            window: Some(back - Duration::minutes(1)),
            observed: 14.0,
            severity: "high",
            state: "resolved",
            message: format!(
                "Resolved after 2 minutes back in range: volume of merchant {merchant} at 14 a minute (15 expected)."
            ),
            first_seen: first,
            resolved_at: Some(back),
            created_at: first + Duration::minutes(3),
            lifecycle: Some(Lifecycle {
                sequence: len + 2,
                last_updated: back,
                first_message: format!(
                    "Volume of merchant {merchant} dropped: 0 transactions against 15 expected over 3 minutes; high."
                ),
            }),
        },
    )
    .await;
}

async fn seed_received_alerts(pool: &PgPool, plan: &Plan) {
    let alerts = [
        (
            "grafana",
            "firing",
            "Denied rate above normal",
            "high",
            json!({"alertname": "Denied rate above normal", "grafana_folder": "Vigil", "severity": "high", "source": "vigil-sql"}),
            json!({"summary": "Denied rate 35%, above its 30-minute baseline"}),
            plan.end - Duration::minutes(2),
        ),
        (
            "alertmanager",
            "resolved",
            "VigilTargetDown",
            "high",
            json!({"alertname": "VigilTargetDown", "job": "sink", "instance": "sink:3004", "severity": "high"}),
            json!({"summary": "sink is down"}),
            plan.end - Duration::minutes(60),
        ),
    ];
    for (i, (source, status, name, severity, labels, annotations, at)) in alerts.into_iter().enumerate() {
        let payload = json!({"status": status, "alerts": [{"labels": labels, "annotations": annotations}]});
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alert_notifications (source, receiver, status, group_key, title, payload, received_at)
             VALUES ($1, 'vigil-webhook', $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(source)
        .bind(status)
        .bind(format!("{{}}:{{alertname=\"{name}\"}}"))
        .bind(name)
        .bind(&payload)
        .bind(at)
        .fetch_one(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO received_alerts (dedup_key, source, notification_id, fingerprint, status, alertname, severity,
                 labels, annotations, starts_at, received_at, resolved_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(format!("{source}:fp{i}:{}:{status}", at.timestamp()))
        .bind(source)
        .bind(id)
        .bind(format!("fp{i}"))
        .bind(status)
        .bind(name)
        .bind(severity)
        .bind(&labels)
        .bind(&annotations)
        .bind(at - Duration::minutes(1))
        .bind(at)
        .bind((status == "resolved").then_some(at))
        .execute(pool)
        .await
        .unwrap();
    }
}

/// A maintenance window of the dark merchant covering its outage (so its volume_drop is
/// silenced), and an expired silence of another merchant, as the webhook's POST /silences writes
/// them.
async fn seed_silences(pool: &PgPool, plan: &Plan) {
    let (merchant, start, len) = DARK_MERCHANT;
    let first = plan.end - Duration::minutes(start);
    for (id, merchant, from, to, expired) in [
        (
            "6f1c2a7e-5100-4000-8000-000000000001",
            merchant,
            first - Duration::minutes(5),
            first + Duration::minutes(len + 10),
            false,
        ),
        (
            "6f1c2a7e-5100-4000-8000-000000000002",
            "m-3",
            plan.end - Duration::minutes(90),
            plan.end - Duration::minutes(60),
            true,
        ),
    ] {
        sqlx::query(
            "INSERT INTO silences (id, merchant_id, starts_at, ends_at, comment, created_by, expired_at, expired_by)
             VALUES ($1::uuid, $2, $3, $4, 'planned maintenance', 'ops', CASE WHEN $5 THEN $4 END, CASE WHEN $5 THEN 'ops' END)",
        )
        .bind(id)
        .bind(merchant)
        .bind(from)
        .bind(to)
        .bind(expired)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_bounded() {
        for i in 0..1000 {
            let n = noise(i, 7);
            assert!((-1.0..=1.0).contains(&n));
            assert_eq!(n, noise(i, 7));
        }
    }

    #[test]
    fn statuses_sum_to_the_total_and_the_spike_raises_denials() {
        let plan = Plan::with_incident(fixed_end());
        for i in 0..plan.minutes {
            let m = plan.minute(i);
            let (a, d, f, r) = statuses(&plan, i, m);
            if plan.in_stop(m) {
                assert_eq!((a, d, f, r), (0, 0, 0, 0));
                continue;
            }
            assert!(a > 0 && d >= 0 && f >= 0 && r >= 0);
            let share = d as f64 / (a + d + f + r) as f64;
            if plan.in_spike(m) {
                assert!(share > 0.3, "{share}");
            } else {
                assert!(share < 0.08, "{share}");
            }
        }
        assert_eq!(plan.spike_minutes().len(), 4);
        assert_eq!(*plan.spike_minutes().last().unwrap(), fixed_end() - Duration::minutes(1));
        assert_eq!(plan.stop_minutes().len(), 5);
        assert!(!plan.stop_is_open());
        assert!(Plan { traffic_stop: Some((5, 5)), ..Plan::normal(fixed_end()) }.stop_is_open());
    }

    #[test]
    fn every_normal_minute_lies_in_the_volume_baselines_range() {
        for i in 0..180 {
            let total = (expected_total(i) + 10.0 * noise(i, 1)).round();
            let (lo, hi) = expected_range(i);
            assert!(lo > 0.0 && lo <= total && total <= hi, "minute {i}: {total} outside [{lo}, {hi}]");
        }
    }
}
