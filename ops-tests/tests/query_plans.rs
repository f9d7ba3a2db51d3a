//! Every dashboard and alert-rule query reads the last hours through indexes, not a scan of
//! the whole history: EXPLAIN on a database holding a year of minutes (millions of rows).
//! The plans are printed (`cargo test -p vigil-ops-tests --test query_plans -- --nocapture`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DurationRound, Utc};
use serde_json::Value;
use vigil_ops_tests::constants::PG_DATASOURCE_UID;
use vigil_ops_tests::grafana::macros::{self, QueryContext, Selection, TimeRange};
use vigil_ops_tests::grafana::{self, Place};
use vigil_ops_tests::repo;

/// Tables whose size grows with history: none may be read by a sequential scan.
const LARGE: [&str; 9] = [
    "transactions",
    "transactions_auth_codes",
    "transactions_categories",
    "transactions_late",
    "merchant_minutes",
    "volume_minutes",
    "anomalies",
    "received_alerts",
    "transaction_verdicts",
];

async fn seed_a_year(pool: &sqlx::PgPool) {
    let statements = [
        "INSERT INTO transactions (minute, status, count)
         SELECT m, s, CASE s WHEN 'approved' THEN 180 WHEN 'denied' THEN 10 ELSE 5 END
         FROM generate_series(date_trunc('minute', now()) - interval '365 days', date_trunc('minute', now()), interval '1 minute') m,
              unnest(ARRAY['approved', 'denied', 'failed', 'reversed']) s",
        "INSERT INTO transactions_auth_codes (minute, auth_code, count)
         SELECT m, c, 10 FROM generate_series(date_trunc('minute', now()) - interval '365 days', date_trunc('minute', now()), interval '1 minute') m,
              unnest(ARRAY['00', '05', '51']) c",
        "INSERT INTO transactions_categories (minute, category, currency, count, amount_sum, amount_min, amount_max)
         SELECT m, c, 'EUR', 50, 50000, 100, 9000 FROM generate_series(date_trunc('minute', now()) - interval '365 days', date_trunc('minute', now()), interval '1 minute') m,
              unnest(ARRAY['food', 'travel', 'fuel']) c",
        "INSERT INTO volume_minutes (minute, total, expected, expected_low, expected_high)
         SELECT m, 200, 205.5, 170, 240 FROM generate_series(date_trunc('minute', now()) - interval '365 days', date_trunc('minute', now()), interval '1 minute') m",
        // A month of five watched merchants (216 000 rows; a year of ten took half a minute to
        // insert on a loaded 2-core machine, and a month already makes 6 hours a small share).
        "INSERT INTO merchant_minutes (minute, merchant_id, category, total, approved, denied, failed, reversed)
         SELECT m, 'm-' || k, 'food', 20, 17, 1, 1, 1 FROM generate_series(date_trunc('minute', now()) - interval '30 days', date_trunc('minute', now()), interval '1 minute') m,
              generate_series(1, 5) k",
        "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, transaction_id, category, merchant_id,
            observed, observed_count, observed_total, baseline_mean, baseline_stddev, baseline_n, scored_on, score,
            threshold, severity, state, message, first_seen, last_updated, created_at)
         SELECT 'amount_zscore:merchant:m-' || (i % 500) || ':' || i, 0, 'amount_zscore', 'merchant', 'm-' || (i % 500), i::text,
            'food', 'm-' || (i % 500), 1e6, 1, 1, 7, 0.5, 100, 'ln(1+amount)', 6, 3,
            (ARRAY['medium', 'high', 'critical'])[1 + i % 3], 'firing', 'x',
            now() - (i || ' minutes')::interval, now() - (i || ' minutes')::interval, now() - (i || ' minutes')::interval
         FROM generate_series(1, 200000) i",
        "INSERT INTO alert_notifications (source, payload) VALUES ('grafana', '{}')",
        "INSERT INTO received_alerts (dedup_key, source, notification_id, fingerprint, status, alertname, severity, starts_at, received_at)
         SELECT 'k' || i, 'grafana', (SELECT min(id) FROM alert_notifications), 'f' || (i % 300), 'firing', 'DeniedAboveNormal', 'high',
            now() - (i || ' minutes')::interval, now() - (i || ' minutes')::interval
         FROM generate_series(1, 200000) i",
        // Eight whole UTC days of stored transactions (today's included, 10 a minute, 500
        // merchants, 5 categories) in their day partitions, and a verdict for every tenth.
        "INSERT INTO transaction_records (transaction_id, occurred_at, received_at, status, auth_code, amount_minor,
            currency, category, merchant_id)
         SELECT 'tx-' || i, at, at, 'approved', '00', 1000 + i % 977, 'EUR',
            (ARRAY['food', 'travel', 'fuel', 'grocery', 'electronics'])[1 + i % 5], 'm-' || (i % 500)
         FROM generate_series(1, 8 * 14400) i,
              LATERAL (SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') + interval '1 day'
                              - interval '6 seconds' * i AS at) t",
        "INSERT INTO transaction_verdicts (transaction_id, occurred_at, decision, anomaly, severity, anomaly_ids)
         SELECT transaction_id, occurred_at, 'counted', false, NULL, '{}' FROM transaction_records
         WHERE amount_minor % 10 = 0",
        "ANALYZE",
    ];
    let today = Utc::now().date_naive();
    for back in 0..=7 {
        vigil_ops_tests::seed::ensure_partition(pool, today - chrono::Days::new(back)).await;
    }
    for s in statements {
        sqlx::query(s).execute(pool).await.unwrap();
    }
}

/// Names of relations read by a sequential scan anywhere in an EXPLAIN (FORMAT JSON) plan.
fn seq_scans(plan: &Value, out: &mut Vec<String>) {
    match plan {
        Value::Object(m) => {
            if m.get("Node Type").and_then(Value::as_str) == Some("Seq Scan") {
                out.push(m.get("Relation Name").and_then(Value::as_str).unwrap_or("?").to_owned());
            }
            m.values().for_each(|v| seq_scans(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| seq_scans(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_dashboard_and_alert_query_uses_indexes_over_a_year_of_minutes() {
    let db = vigil_testkit::fresh_database().await;
    seed_a_year(&db.pool).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions").fetch_one(&db.pool).await.unwrap();
    assert!(rows > 2_000_000, "{rows} rows");

    let now = Utc::now().duration_trunc(chrono::Duration::minutes(1)).unwrap();
    let range = TimeRange { from: now - chrono::Duration::hours(6), to: now };
    let mut queries: Vec<(String, String)> = Vec::new();
    // "All", and one value chosen (a drill-down to one merchant reads its own index range); the
    // transaction drill-down's text boxes empty (All), both set (one transaction by id), or only
    // the merchant (its transactions).
    let merchant_only = Selection::Many(vec!["merchant only".into()]);
    for (file, dash, selection) in repo::dashboards().into_iter().flat_map(|(f, d)| {
        [Selection::All, Selection::One("m-1".into()), merchant_only.clone()].map(|s| (f.clone(), d.clone(), s))
    }) {
        let textboxes: Vec<&str> = dash["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["type"] == "textbox")
            .filter_map(|v| v["name"].as_str())
            .collect();
        if selection == merchant_only && textboxes.is_empty() {
            continue;
        }
        let mut variables = grafana::variables(&dash);
        for v in &mut variables {
            let textbox = textboxes.contains(&v.name.as_str());
            // A text box has no options: empty is its "All".
            if !textbox {
                v.options = vec!["food".into(), "travel".into()];
            }
            v.selection = match (&selection, v.name.as_str()) {
                (s, _) if *s != merchant_only => s.clone(),
                (_, "transaction_id") => Selection::One(String::new()),
                (_, "merchant_id") => Selection::One("m-1".into()),
                _ => Selection::All,
            };
        }
        let ctx = QueryContext { range, interval: Duration::from_secs(60), variables };
        for q in grafana::dashboard_queries(&file, &dash) {
            if q.datasource_uid != PG_DATASOURCE_UID {
                continue;
            }
            let label = format!("{file} ({selection:?}): {:?} {:?} {}", q.place, q.panel_id, q.title);
            let sql = if q.place == Place::Variable {
                macros::expand_panel_query(&q.text, &QueryContext { variables: Vec::new(), ..ctx.clone() }).unwrap()
            } else {
                macros::expand_panel_query(&q.text, &ctx).unwrap()
            };
            queries.push((label, sql));
        }
    }
    for rule in grafana::alert_rules() {
        for q in &rule.data {
            if q.datasource_uid != PG_DATASOURCE_UID {
                continue;
            }
            let r =
                TimeRange { from: now - chrono::Duration::seconds(q.from), to: now - chrono::Duration::seconds(q.to) };
            let sql =
                macros::expand_alert_query(q.model["rawSql"].as_str().unwrap(), r, Duration::from_secs(60)).unwrap();
            queries.push((format!("alert rule {}: {}", rule.title, q.ref_id), sql));
        }
    }
    assert!(queries.len() >= 15, "expected every dashboard and rule query, found {}", queries.len());

    let mut problems = Vec::new();
    for (label, sql) in &queries {
        let plan: (Value,) = sqlx::query_as(&format!("EXPLAIN (FORMAT JSON) {sql}")).fetch_one(&db.pool).await.unwrap();
        let text: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {sql}")).fetch_all(&db.pool).await.unwrap();
        println!("== {label}\n{}\n", text.iter().map(|r| r.0.as_str()).collect::<Vec<_>>().join("\n"));
        let mut scans = Vec::new();
        seq_scans(&plan.0, &mut scans);
        // transaction_records is read through its day partitions.
        let large: Vec<&String> =
            scans.iter().filter(|s| LARGE.contains(&s.as_str()) || s.starts_with("transaction_records_p")).collect();
        if !large.is_empty() {
            problems.push(format!("{label}: sequential scan of {large:?}\n{sql}"));
        }
    }
    assert!(problems.is_empty(), "queries that scan whole tables:\n{}", problems.join("\n\n"));
}
