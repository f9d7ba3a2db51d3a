//! The provisioned dashboards: their shape (Grafana's dashboard JSON schema, ids, grid, data
//! sources), and every PostgreSQL query they hold run on a freshly seeded database exactly as
//! Grafana would send it (macros and template variables expanded), with the columns its panel
//! needs.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{Duration as ChronoDuration, DurationRound};
use serde_json::Value;
use sqlx::PgPool;
use vigil_ops_tests::constants::{GRAFANA_BUILTIN_UIDS, PG_DATASOURCE_UID};
use vigil_ops_tests::frames::{self, Kind};
use vigil_ops_tests::grafana::macros::{self, QueryContext, Selection, TimeRange};
use vigil_ops_tests::grafana::{self, DashboardQuery, Place};
use vigil_ops_tests::seed::{self, Plan};
use vigil_ops_tests::{compose, repo};

const PANEL_TYPES: [&str; 6] = ["timeseries", "stat", "table", "bargauge", "barchart", "row"];

#[test]
fn every_dashboard_matches_grafanas_dashboard_json_schema() {
    let schema = repo::json("ops-tests/schema/dashboard.jsonschema.json");
    let validator = jsonschema::draft7::new(&schema).expect("the schema compiles");
    for (file, dash) in repo::dashboards() {
        let errors: Vec<String> =
            validator.iter_errors(&dash).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{file} does not match the dashboard schema:\n{}", errors.join("\n"));
    }
}

#[test]
fn panels_have_unique_ids_known_types_and_do_not_overlap_on_the_24_column_grid() {
    for (file, dash) in repo::dashboards() {
        let mut ids = BTreeSet::new();
        let mut cells: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for p in grafana::all_panels(&dash) {
            let id = p["id"].as_i64().unwrap_or_else(|| panic!("{file}: a panel without an integer id"));
            assert!(ids.insert(id), "{file}: panel id {id} is used twice");
            let ty = p["type"].as_str().unwrap_or("");
            assert!(PANEL_TYPES.contains(&ty), "{file}: panel {id} has type {ty:?}, not one of {PANEL_TYPES:?}");
            assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{file}: panel {id} has no title");
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_i64().unwrap(),
                g["y"].as_i64().unwrap(),
                g["w"].as_i64().unwrap(),
                g["h"].as_i64().unwrap(),
            );
            assert!(
                x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0,
                "{file}: panel {id} has gridPos {g} outside the grid"
            );
            for cx in x..x + w {
                for cy in y..y + h {
                    if let Some(other) = cells.insert((cx, cy), id) {
                        panic!("{file}: panels {other} and {id} overlap at ({cx}, {cy})");
                    }
                }
            }
            if ty != "row" {
                let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{file}: panel {id} has no targets"));
                assert!(!targets.is_empty(), "{file}: panel {id} has no query");
                let refs: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap_or("")).collect();
                assert_eq!(refs.len(), targets.len(), "{file}: panel {id} repeats a refId");
                for t in targets {
                    let q = t["rawSql"].as_str().or_else(|| t["expr"].as_str()).unwrap_or("");
                    assert!(!q.trim().is_empty(), "{file}: panel {id} target {} has no query", t["refId"]);
                }
            }
        }
    }
}

/// Every `datasource` object anywhere in the document.
fn datasource_refs<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" && x.is_object() {
                    out.push((path.clone(), x));
                }
                datasource_refs(x, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                datasource_refs(x, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_datasource_uid_a_dashboard_uses_is_provisioned_with_the_same_type() {
    let provisioned = grafana::datasources();
    for (file, dash) in repo::dashboards() {
        let mut refs = Vec::new();
        datasource_refs(&dash, String::new(), &mut refs);
        assert!(!refs.is_empty(), "{file} names no data source");
        for (path, ds) in refs {
            let uid = ds["uid"].as_str().unwrap_or_else(|| panic!("{file}{path}: a data source without uid: {ds}"));
            if GRAFANA_BUILTIN_UIDS.contains(&uid) {
                continue;
            }
            let ty =
                provisioned.get(uid).unwrap_or_else(|| panic!("{file}{path}: data source {uid:?} is not provisioned"));
            assert_eq!(ds["type"].as_str(), Some(ty.as_str()), "{file}{path}: data source {uid} has type {ty}");
        }
    }
}

#[test]
fn dashboards_have_unique_uids_links_resolve_and_the_provider_reads_their_folder() {
    let dashboards = repo::dashboards();
    let uids: BTreeSet<&str> = dashboards.iter().map(|(_, d)| d["uid"].as_str().unwrap()).collect();
    assert_eq!(uids.len(), dashboards.len(), "dashboard uids must be unique");
    for (file, d) in &dashboards {
        for l in d["links"].as_array().into_iter().flatten() {
            if let Some(target) = l["url"].as_str().and_then(|u| u.strip_prefix("/d/")) {
                assert!(uids.contains(target), "{file}: link to unknown dashboard {target}");
            }
        }
    }
    // The provider reads the folder compose mounts the dashboards into.
    let provider = repo::yaml("grafana/provisioning/dashboards/vigil.yaml");
    let path = repo::ystr(&provider["providers"][0], &["options", "path"]);
    let compose = compose::load_defaults();
    let mounts: Vec<&str> = compose::service(&compose, "grafana")["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        mounts.iter().any(|m| *m == format!("../grafana/dashboards:{path}:ro")),
        "grafana does not mount the dashboards at {path}: {mounts:?}"
    );
    assert!(mounts.contains(&"../grafana/provisioning:/etc/grafana/provisioning:ro"), "{mounts:?}");
    let home = compose::environment(&compose, "grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    assert!(
        home.starts_with(path) && repo::path(&format!("grafana/dashboards/{}", &home[path.len() + 1..])).is_file(),
        "{home}"
    );
}

// ---- Queries on real PostgreSQL ---------------------------------------------------------------

fn pg_queries() -> Vec<(Value, DashboardQuery)> {
    let mut out = Vec::new();
    for (file, dash) in repo::dashboards() {
        for q in grafana::dashboard_queries(&file, &dash) {
            if q.datasource_uid == PG_DATASOURCE_UID {
                out.push((dash.clone(), q));
            }
        }
    }
    assert!(out.len() >= 10, "expected the Transactions dashboard's queries, found {}", out.len());
    out
}

fn label(q: &DashboardQuery) -> String {
    format!("{} {:?} {:?} ({})", q.dashboard, q.place, q.title, q.panel_type)
}

/// What the panel type needs of the result; returns the problems.
fn shape_problems(q: &DashboardQuery, f: &frames::Frame) -> Vec<String> {
    let has = |k: Kind| f.columns.iter().any(|c| c.kind == k);
    match (q.place, q.panel_type.as_str(), q.format.as_str()) {
        (Place::Variable, _, _) => {
            let ok = f.columns.len() == 1 && f.columns[0].kind == Kind::Text;
            if ok {
                vec![]
            } else {
                vec![format!("a variable query needs one text column, got {}", f.describe())]
            }
        }
        (Place::Annotation, _, _) => {
            let mut p = Vec::new();
            match f.column("time") {
                Some((_, c)) if matches!(c.kind, Kind::Time | Kind::Number) => {}
                _ => p.push(format!("an annotation needs a time column ({})", f.describe())),
            }
            if !f.column("text").is_some_and(|(_, c)| c.kind == Kind::Text) {
                p.push(format!("an annotation needs a text column ({})", f.describe()));
            }
            if f.column("timeend").is_some_and(|(_, c)| c.kind != Kind::Time) {
                p.push("timeend must be a timestamp".into());
            }
            if f.column("tags").is_some_and(|(_, c)| c.kind != Kind::Text) {
                p.push("tags must be text".into());
            }
            p
        }
        (_, _, "time_series") => f.time_series_problems(),
        (_, "timeseries", other) => vec![format!("a time series panel needs format time_series, has {other:?}")],
        (_, "stat", _) if !has(Kind::Number) => vec![format!("a stat needs a numeric column ({})", f.describe())],
        (_, "bargauge" | "barchart", _) if !(has(Kind::Number) && has(Kind::Text)) => {
            vec![format!("a bar gauge needs a text and a numeric column ({})", f.describe())]
        }
        (_, _, _) if f.columns.is_empty() => vec!["no columns".into()],
        _ => vec![],
    }
}

/// Runs every PostgreSQL query of the dashboards with `selection(variable name)` and the given
/// interval; returns one line per problem. Variable options come from running the variable
/// queries first, as Grafana does.
async fn run_all(
    pool: &PgPool,
    range: TimeRange,
    interval: Duration,
    selection: &dyn Fn(&str) -> Selection,
    need_rows: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (dash, q) in pg_queries() {
        let mut variables = grafana::variables(&dash);
        for v in &mut variables {
            // The variable's options: its own query over the same range.
            let vq = grafana::dashboard_queries("", &dash)
                .into_iter()
                .find(|x| x.place == Place::Variable && x.title == v.name);
            if let Some(vq) = vq {
                let ctx = QueryContext { range, interval, variables: Vec::new() };
                let sql = macros::expand_panel_query(&vq.text, &ctx).unwrap();
                let f = frames::query(pool, &sql).await.unwrap_or_else(|e| panic!("variable {}: {e}\n{sql}", v.name));
                v.options = f.rows.iter().filter_map(|r| r[0].clone()).collect();
            }
            v.selection = selection(&v.name);
        }
        let ctx = QueryContext { range, interval, variables };
        let sql = match macros::expand_panel_query(&q.text, &ctx) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: expansion failed: {e}", label(&q)));
                continue;
            }
        };
        assert!(!sql.contains('$'), "{}: something was left unexpanded:\n{sql}", label(&q));
        match frames::query(pool, &sql).await {
            Err(e) => problems.push(format!("{}: PostgreSQL refused it: {e}\n{sql}", label(&q))),
            Ok(f) if f.rows.is_empty() => {
                if need_rows {
                    problems.push(format!("{}: no rows\n{sql}", label(&q)));
                }
            }
            Ok(f) => {
                for p in shape_problems(&q, &f) {
                    problems.push(format!("{}: {p}\n{sql}", label(&q)));
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 10);
    problems
}

async fn seeded(plan: &Plan) -> (vigil_testkit::TestDb, TimeRange) {
    let db = vigil_testkit::fresh_database().await;
    let s = seed::seed(&db.pool, plan).await;
    (db, TimeRange { from: s.first_minute, to: plan.end })
}

#[tokio::test]
async fn every_postgresql_query_returns_what_its_panel_needs_with_all_selected() {
    let (db, range) = seeded(&Plan::with_incident(seed::fixed_end())).await;
    for interval in [Duration::from_secs(60), Duration::from_secs(300)] {
        let problems = run_all(&db.pool, range, interval, &|_| Selection::All, true).await;
        assert!(problems.is_empty(), "interval {interval:?}:\n{}", problems.join("\n\n"));
    }
}

#[tokio::test]
async fn every_postgresql_query_returns_what_its_panel_needs_with_chosen_categories_and_merchants() {
    let (db, range) = seeded(&Plan::with_incident(seed::fixed_end())).await;
    // The critical amount anomaly is about electronics at merchant m-42.
    let chosen = |name: &str| match name {
        "category" => Selection::Many(vec!["electronics".into(), "fuel".into()]),
        "merchant" | "merchant_id" => Selection::One("m-42".into()),
        // Empty: the merchant's transactions, not one by id.
        "transaction_id" => Selection::All,
        other => panic!("unexpected variable {other}"),
    };
    let problems = run_all(&db.pool, range, Duration::from_secs(60), &chosen, true).await;
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[tokio::test]
async fn a_quote_in_a_variable_value_cannot_break_a_query() {
    let (db, range) = seeded(&Plan::with_incident(seed::fixed_end())).await;
    // A text box holds one value; a multi-value variable several.
    let hostile = |name: &str| match name {
        "merchant_id" | "transaction_id" => Selection::One("x') OR true --".into()),
        _ => Selection::Many(vec!["o'brien".into(), "x') OR true --".into()]),
    };
    let problems = run_all(&db.pool, range, Duration::from_secs(60), &hostile, false).await;
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[tokio::test]
async fn queries_on_an_empty_database_run_without_error() {
    let db = vigil_testkit::fresh_database().await;
    let end = seed::fixed_end();
    let range = TimeRange { from: end - ChronoDuration::hours(3), to: end };
    let problems = run_all(&db.pool, range, Duration::from_secs(60), &|_| Selection::All, false).await;
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The SQL of panel `id` of the Transactions dashboard, expanded for `range`.
fn transactions_panel_sql(id: i64, range: TimeRange, interval: Duration) -> String {
    let dash = repo::json("grafana/dashboards/transactions.json");
    let panel = grafana::all_panels(&dash).into_iter().find(|p| p["id"] == id).unwrap();
    let ctx = QueryContext { range, interval, variables: grafana::variables(&dash) };
    macros::expand_panel_query(panel["targets"][0]["rawSql"].as_str().unwrap(), &ctx).unwrap()
}

#[tokio::test]
async fn the_denied_rate_panel_shows_the_spike_above_its_baseline_band_and_normal_minutes_inside_it() {
    let plan = Plan::with_incident(seed::fixed_end());
    let (db, range) = seeded(&plan).await;
    let f = frames::query(&db.pool, &transactions_panel_sql(3, range, Duration::from_secs(60))).await.unwrap();
    let col = |name: &str| f.column(name).unwrap_or_else(|| panic!("no column {name}: {}", f.describe())).0;
    let (t, rate, low, high) = (col("time"), col("denied rate"), col("baseline low"), col("baseline high"));
    let num = |row: &Vec<Option<String>>, i: usize| row[i].as_deref().map(|v| v.parse::<f64>().unwrap());
    let first_spike = plan.spike_minutes()[0];
    let mut normal_inside = 0;
    for row in &f.rows {
        let at = frames::parse_pg_timestamp(row[t].as_deref().unwrap()).unwrap();
        // The first minute has no baseline: NULL, drawn as a gap.
        let (Some(r), Some(lo), Some(hi)) = (num(row, rate), num(row, low), num(row, high)) else { continue };
        assert!(lo <= hi && lo >= 0.0, "band [{lo}, {hi}] at {at}");
        if at == first_spike {
            assert!(r > hi, "the spike's first minute ({r}) must be above the band's top ({hi})");
        } else if at < first_spike && r >= lo && r <= hi {
            normal_inside += 1;
        }
    }
    // The first minute has no baseline yet; nearly every normal minute lies in the band.
    assert!(
        normal_inside as f64 >= 0.95 * (f.rows.len() - plan.spike_minutes().len()) as f64,
        "{normal_inside} of {}",
        f.rows.len()
    );
}

#[tokio::test]
async fn transactions_per_minute_stack_up_to_the_seeded_totals_at_any_interval() {
    let plan = Plan::normal(seed::fixed_end());
    let db = vigil_testkit::fresh_database().await;
    let s = seed::seed(&db.pool, &plan).await;
    let range = TimeRange { from: s.first_minute, to: plan.end - ChronoDuration::seconds(1) };
    for (interval, minutes_per_point) in [(60, 1.0), (300, 5.0)] {
        let f =
            frames::query(&db.pool, &transactions_panel_sql(1, range, Duration::from_secs(interval))).await.unwrap();
        let stacked: f64 = f
            .rows
            .iter()
            .map(|r| r[1..].iter().map(|v| v.as_deref().unwrap_or("0").parse::<f64>().unwrap()).sum::<f64>())
            .sum();
        // Each point is a per-minute average over its bucket: points x minutes = transactions.
        assert!(
            (stacked * minutes_per_point - s.total_transactions as f64).abs() < 1e-6,
            "interval {interval}s: {stacked}"
        );
    }
}

/// A query of `file` expanded for `range` at one-minute interval, each variable set by
/// `selection(name)`.
fn expanded(
    file: &str,
    pick: &dyn Fn(&DashboardQuery) -> bool,
    range: TimeRange,
    selection: &dyn Fn(&str) -> Selection,
) -> String {
    let path = format!("grafana/dashboards/{file}");
    let dash = repo::json(&path);
    let q = grafana::dashboard_queries(&path, &dash)
        .into_iter()
        .find(|q| pick(q))
        .unwrap_or_else(|| panic!("no such query in {file}"));
    let mut variables = grafana::variables(&dash);
    for v in &mut variables {
        v.selection = selection(&v.name);
    }
    macros::expand_panel_query(&q.text, &QueryContext { range, interval: Duration::from_secs(60), variables }).unwrap()
}

fn num(row: &[Option<String>], i: usize) -> Option<f64> {
    row[i].as_deref().map(|v| v.parse::<f64>().unwrap())
}

#[tokio::test]
async fn the_volume_panel_draws_a_stop_as_zeros_under_its_band_and_normal_minutes_inside_it() {
    let plan = Plan::with_incident(seed::fixed_end());
    let db = vigil_testkit::fresh_database().await;
    let s = seed::seed(&db.pool, &plan).await;
    let range = TimeRange { from: s.first_minute, to: plan.end - ChronoDuration::seconds(1) };
    let f = frames::query(&db.pool, &transactions_panel_sql(11, range, Duration::from_secs(60))).await.unwrap();
    let col = |name: &str| f.column(name).unwrap_or_else(|| panic!("no column {name}: {}", f.describe())).0;
    let (t, total, expected, low, high) =
        (col("time"), col("transactions"), col("expected"), col("expected low"), col("expected high"));
    assert_eq!(f.rows.len() as i64, plan.minutes, "a row for every minute, the stop's too");
    for (i, row) in f.rows.iter().enumerate() {
        // $__timeGroupAlias: epoch seconds.
        let epoch = num(row, t).unwrap() as i64;
        let at = chrono::DateTime::from_timestamp(epoch, 0).unwrap();
        let n = num(row, total).unwrap();
        if (i as i64) < seed::VOLUME_WARMUP_MINUTES {
            // No expectation while the baseline warms up: a gap in the band, not a zero.
            assert_eq!((num(row, expected), num(row, low), num(row, high)), (None, None, None), "{at}");
            continue;
        }
        let (e, lo, hi) = (num(row, expected).unwrap(), num(row, low).unwrap(), num(row, high).unwrap());
        assert!(lo < e && e < hi, "{at}: band [{lo}, {hi}] around {e}");
        if s.stop_minutes.contains(&at) {
            assert!(n == 0.0 && lo > 100.0, "{at}: the stop at {n}, the band from {lo}");
        } else {
            assert!(lo <= n && n <= hi, "{at}: {n} outside [{lo}, {hi}]");
        }
    }
    // At 5 minutes a point, each point is its bucket's per-minute average: the totals still add up.
    let f = frames::query(&db.pool, &transactions_panel_sql(11, range, Duration::from_secs(300))).await.unwrap();
    let sum: f64 = f.rows.iter().map(|r| num(r, 1).unwrap() * 5.0).sum();
    assert!((sum - s.total_transactions as f64).abs() < 1e-6, "{sum} against {}", s.total_transactions);
}

#[tokio::test]
async fn volume_anomalies_are_marked_on_the_volume_panel_with_the_message_they_opened_with() {
    let plan = Plan::with_incident(seed::fixed_end());
    let db = vigil_testkit::fresh_database().await;
    let s = seed::seed(&db.pool, &plan).await;
    let range = TimeRange { from: s.first_minute, to: plan.end };
    let volume = |q: &DashboardQuery| q.place == Place::Annotation && q.title == "Volume anomalies";
    let read = |sql: String| {
        let pool = db.pool.clone();
        async move {
            let f = frames::query(&pool, &sql).await.unwrap();
            let (text, tags, end) =
                (f.column("text").unwrap().0, f.column("tags").unwrap().0, f.column("timeend").unwrap().0);
            f.rows
                .iter()
                .map(|r| (r[text].clone().unwrap(), r[tags].clone().unwrap(), r[end].is_some()))
                .collect::<Vec<_>>()
        }
    };
    let all = read(expanded("transactions.json", &volume, range, &|_| Selection::All)).await;
    assert_eq!(all.len(), 2, "{all:?}");
    // Oldest first: the stop of all traffic, then merchant m-7 going dark; both resolved.
    let (stop, m7) = (&all[0], &all[1]);
    assert!(
        stop.0.starts_with("critical volume_drop on global all: Transaction volume dropped: 0 transactions in"),
        "{}",
        stop.0
    );
    assert!(stop.0.contains(" Latest: Resolved at "), "{}", stop.0);
    assert_eq!((stop.1.as_str(), stop.2), ("volume_drop,critical", true));
    assert!(m7.0.starts_with("high volume_drop on merchant m-7: Volume of merchant m-7 dropped"), "{}", m7.0);
    // A selection of categories and merchants keeps the stop of all traffic, and only the
    // selected merchants' drops.
    let chosen = |name: &str| match name {
        "category" => Selection::Many(vec!["electronics".into()]),
        _ => Selection::One("m-42".into()),
    };
    let some = read(expanded("transactions.json", &volume, range, &chosen)).await;
    assert_eq!(some, vec![stop.clone()]);
    // The rate and amount anomalies stay on the other panels, not on the volume panel.
    let dash = repo::json("grafana/dashboards/transactions.json");
    for a in dash["annotations"]["list"].as_array().unwrap() {
        match a["name"].as_str().unwrap() {
            "Anomalies" => assert_eq!(a["filter"], serde_json::json!({"exclude": true, "ids": [11]})),
            "Volume anomalies" => assert_eq!(a["filter"], serde_json::json!({"exclude": false, "ids": [11]})),
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_merchant_drill_down_lists_a_merchant_going_dark_with_its_expected_count() {
    let plan = Plan::with_incident(seed::fixed_end());
    let db = vigil_testkit::fresh_database().await;
    let s = seed::seed(&db.pool, &plan).await;
    let range = TimeRange { from: s.first_minute, to: plan.end };
    let m7 = |_: &str| Selection::One("m-7".into());
    let table = |q: &DashboardQuery| q.panel_id == Some(4);
    let f = frames::query(&db.pool, &expanded("merchant.json", &table, range, &m7)).await.unwrap();
    let col = |name: &str| f.column(name).unwrap_or_else(|| panic!("no column {name}: {}", f.describe())).0;
    let rows: Vec<_> = f
        .rows
        .iter()
        .map(|r| {
            (r[col("rule")].clone().unwrap(), r[col("observed rate")].clone(), r[col("last minute")].clone().unwrap())
        })
        .collect();
    assert_eq!(rows, vec![("volume_drop".to_owned(), None, "14 transactions, 200 expected".to_owned())]);
    // The annotation and the open-anomalies count read it too (the count while it was open).
    let anno = |q: &DashboardQuery| q.place == Place::Annotation && q.title == "Merchant anomalies";
    let f = frames::query(&db.pool, &expanded("merchant.json", &anno, range, &m7)).await.unwrap();
    assert_eq!(f.rows.len(), 1, "{:?}", f.rows);
    sqlx::query("UPDATE anomalies SET state = 'updated', resolved_at = NULL WHERE dimension_value = 'm-7'")
        .execute(&db.pool)
        .await
        .unwrap();
    let stat = |q: &DashboardQuery| q.panel_id == Some(2);
    let f = frames::query(&db.pool, &expanded("merchant.json", &stat, range, &m7)).await.unwrap();
    assert_eq!(f.rows[0][0].as_deref(), Some("1"));
    // m-7's merchant minutes: none while it was dark.
    let dark: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM merchant_minutes WHERE merchant_id = 'm-7' AND minute >= $1 AND minute < $1 + interval '6 minutes'",
    )
    .bind(plan.end - ChronoDuration::minutes(seed::DARK_MERCHANT.1))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(dark, 0);
}

// ---- The transaction drill-down and the links to it -------------------------------------------

/// The dashboard file whose uid is `uid`.
fn dashboard_by_uid(uid: &str) -> (String, Value) {
    repo::dashboards().into_iter().find(|(_, d)| d["uid"] == uid).unwrap_or_else(|| panic!("no dashboard {uid}"))
}

/// The dashboard's variables set by `selection(name)`, each query variable's options from its
/// own query over `range`, as Grafana fills them.
async fn variables_over(
    pool: &PgPool,
    dash: &Value,
    range: TimeRange,
    selection: &dyn Fn(&str) -> Selection,
) -> Vec<macros::Variable> {
    let mut variables = grafana::variables(dash);
    for v in &mut variables {
        let vq =
            grafana::dashboard_queries("", dash).into_iter().find(|x| x.place == Place::Variable && x.title == v.name);
        if let Some(vq) = vq {
            let ctx = QueryContext { range, interval: Duration::from_secs(60), variables: Vec::new() };
            let f = frames::query(pool, &macros::expand_panel_query(&vq.text, &ctx).unwrap()).await.unwrap();
            v.options = f.rows.iter().filter_map(|r| r[0].clone()).collect();
        }
        v.selection = selection(&v.name);
    }
    variables
}

/// Panel `id` of the dashboard `uid` run over `range` with the variables `selection` gives.
async fn run_panel(
    pool: &PgPool,
    uid: &str,
    id: i64,
    range: TimeRange,
    selection: &dyn Fn(&str) -> Selection,
) -> frames::Frame {
    let (_, dash) = dashboard_by_uid(uid);
    let panel = grafana::all_panels(&dash).into_iter().find(|p| p["id"] == id).unwrap();
    let variables = variables_over(pool, &dash, range, selection).await;
    let ctx = QueryContext { range, interval: Duration::from_secs(60), variables };
    let sql = macros::expand_panel_query(panel["targets"][0]["rawSql"].as_str().unwrap(), &ctx).unwrap();
    frames::query(pool, &sql).await.unwrap_or_else(|e| panic!("{uid} panel {id}: {e}\n{sql}"))
}

/// The values of column `name`, row by row.
fn column(f: &frames::Frame, name: &str) -> Vec<Option<String>> {
    let (i, _) = f.column(name).unwrap_or_else(|| panic!("no column {name}: {}", f.describe()));
    f.rows.iter().map(|r| r[i].clone()).collect()
}

const DRILL_DOWN: &str = "vigil-transaction-list";

fn textboxes(transaction_id: &str, merchant_id: &str, category: Selection) -> impl Fn(&str) -> Selection {
    let (t, m) = (transaction_id.to_owned(), merchant_id.to_owned());
    move |name: &str| match name {
        "transaction_id" => Selection::One(t.clone()),
        "merchant_id" => Selection::One(m.clone()),
        "category" => category.clone(),
        other => panic!("unexpected variable {other}"),
    }
}

#[tokio::test]
async fn the_transaction_drill_down_lists_stored_transactions_newest_first_with_verdicts_and_anomalies() {
    let plan = Plan::with_incident(seed::fixed_end());
    let db = vigil_testkit::fresh_database().await;
    let s = seed::seed(&db.pool, &plan).await;
    let range = TimeRange { from: s.first_minute, to: plan.end };
    let newest = |keep: &dyn Fn(&seed::StoredTransaction) -> bool| {
        let mut v: Vec<&seed::StoredTransaction> = s.stored.iter().filter(|t| keep(t)).collect();
        v.sort_by(|a, b| b.occurred_at.cmp(&a.occurred_at).then(a.id.cmp(&b.id)));
        v.into_iter().take(100).map(|t| Some(t.id.clone())).collect::<Vec<_>>()
    };

    // Nothing chosen: the newest 100 of every category, newest first.
    let f = run_panel(&db.pool, DRILL_DOWN, 1, range, &textboxes("", "", Selection::All)).await;
    assert_eq!(column(&f, "transaction"), newest(&|_| true));
    assert!(s.stored.len() > 500, "more stored than the panel shows: {}", s.stored.len());

    // One merchant: its own, among them the critical amount anomaly's transaction, with its
    // verdict and the anomaly that names it.
    let f = run_panel(&db.pool, DRILL_DOWN, 1, range, &textboxes("", "m-42", Selection::All)).await;
    assert_eq!(column(&f, "transaction"), newest(&|t| t.merchant == "m-42"));
    let (id, _) = f.column("transaction").unwrap();
    let row = f.rows.iter().find(|r| r[id].as_deref() == Some("tx-7f3a")).unwrap();
    let cell = |name: &str| row[f.column(name).unwrap().0].clone();
    assert_eq!(cell("amount (minor units)").as_deref(), Some("2450000"));
    assert_eq!(
        (cell("verdict"), cell("verdict severity"), cell("anomalous")),
        (Some("counted".into()), Some("critical".into()), Some("t".into()))
    );
    assert_eq!(cell("anomalies").as_deref(), Some("critical amount_zscore (amount_zscore:merchant:m-42:tx-7f3a)"));
    // The spike's denied transactions of m-42 are there as denied; the rest are not anomalous.
    let statuses = column(&f, "status");
    assert_eq!(statuses.iter().filter(|s| s.as_deref() == Some("denied")).count(), plan.spike_minutes().len());
    assert_eq!(column(&f, "anomalous").iter().filter(|a| a.as_deref() == Some("t")).count(), 1);
    // A verdict every tenth minute, not anomalous (of the 100 shown).
    let shown = column(&f, "transaction");
    let with_verdict: Vec<Option<String>> = shown
        .iter()
        .filter(|id| s.stored.iter().any(|t| Some(&t.id) == id.as_ref() && t.verdict.is_some()))
        .cloned()
        .collect();
    let verdicts = column(&f, "verdict");
    let got: Vec<Option<String>> =
        shown.iter().zip(&verdicts).filter(|(_, v)| v.is_some()).map(|(id, _)| id.clone()).collect();
    assert!(with_verdict.len() > 5, "{with_verdict:?}");
    assert_eq!(got, with_verdict);
    // A merchant in one of its two categories.
    let f = run_panel(&db.pool, DRILL_DOWN, 1, range, &textboxes("", "m-3", Selection::One("food".into()))).await;
    assert_eq!(column(&f, "transaction"), newest(&|t| t.merchant == "m-3" && t.category == "food"));
    assert!(column(&f, "category").iter().all(|c| c.as_deref() == Some("food")));

    // Categories without a merchant.
    let fuel_travel = Selection::Many(vec!["fuel".into(), "travel".into()]);
    let f = run_panel(&db.pool, DRILL_DOWN, 1, range, &textboxes("", "", fuel_travel)).await;
    assert_eq!(column(&f, "transaction"), newest(&|t| t.category == "fuel"));

    // One transaction by id, outside the time range: the amount anomaly's, which asked for no
    // verdict and is anomalous because an anomaly names it.
    let last_minutes = TimeRange { from: plan.end - ChronoDuration::minutes(10), to: plan.end };
    let f = run_panel(&db.pool, DRILL_DOWN, 1, last_minutes, &textboxes("tx-11", "m-42", Selection::All)).await;
    assert_eq!(f.rows.len(), 1, "{:?}", f.rows);
    assert_eq!(
        (column(&f, "transaction")[0].clone(), column(&f, "verdict")[0].clone(), column(&f, "anomalous")[0].clone()),
        (Some("tx-11".into()), None, Some("t".into()))
    );
    assert_eq!(
        column(&f, "anomalies")[0].as_deref(),
        Some("medium amount_low_variance (amount_low_variance:category:fuel:tx-11)")
    );
    // An unknown id or merchant: nothing.
    for (t, m) in [("tx-none", ""), ("", "m-none")] {
        let f = run_panel(&db.pool, DRILL_DOWN, 1, range, &textboxes(t, m, Selection::All)).await;
        assert!(f.rows.is_empty(), "{t} {m}: {:?}", f.rows);
    }
}

/// Every data link of a panel (field defaults and overrides).
fn data_links(panel: &Value) -> Vec<&Value> {
    let fc = &panel["fieldConfig"];
    let mut out: Vec<&Value> = fc["defaults"]["links"].as_array().into_iter().flatten().collect();
    for o in fc["overrides"].as_array().into_iter().flatten() {
        for p in o["properties"].as_array().into_iter().flatten() {
            if p["id"] == "links" {
                out.extend(p["value"].as_array().into_iter().flatten());
            }
        }
    }
    out
}

/// Where a data link leads from one row: the dashboard uid, its time range and its variables.
fn follow(
    url: &str,
    row: &BTreeMap<String, Option<String>>,
    current: TimeRange,
) -> (String, TimeRange, Vec<(String, String)>) {
    let fields = regex::Regex::new(r"\$\{__data\.fields\.([A-Za-z0-9_]+)\}").unwrap();
    let url = url.replace(
        "${__url_time_range}",
        &format!("from={}&to={}", current.from.timestamp_millis(), current.to.timestamp_millis()),
    );
    let url = fields.replace_all(&url, |c: &regex::Captures<'_>| {
        row.get(&c[1]).unwrap_or_else(|| panic!("{url}: no field {} in {row:?}", &c[1])).clone().unwrap_or_default()
    });
    let (path, query) = url.split_once('?').unwrap();
    let uid = path.strip_prefix("/d/").unwrap().split('/').next().unwrap().to_owned();
    let (mut from, mut to) = (None, None);
    let mut vars = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let ms = || chrono::DateTime::from_timestamp_millis(v.parse().unwrap()).unwrap();
        match k {
            "from" => from = Some(ms()),
            "to" => to = Some(ms()),
            _ => vars.push((
                k.strip_prefix("var-").unwrap_or_else(|| panic!("{url}: parameter {k}")).to_owned(),
                v.to_owned(),
            )),
        }
    }
    (uid, TimeRange { from: from.unwrap(), to: to.unwrap() }, vars)
}

/// The rows of `f` as name -> value.
fn rows_by_name(f: &frames::Frame) -> Vec<BTreeMap<String, Option<String>>> {
    f.rows.iter().map(|r| f.columns.iter().map(|c| c.name.clone()).zip(r.iter().cloned()).collect()).collect()
}

/// Follows `link` from `row` and runs the drill-down's Transactions panel where it leads.
async fn open_link(
    pool: &PgPool,
    link: &Value,
    row: &BTreeMap<String, Option<String>>,
    current: TimeRange,
) -> (TimeRange, frames::Frame) {
    let (uid, range, vars) = follow(link["url"].as_str().unwrap(), row, current);
    assert_eq!(uid, DRILL_DOWN);
    let selection = move |name: &str| match vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()) {
        None | Some("$__all") => Selection::All,
        Some(v) => Selection::One(v.to_owned()),
    };
    (range, run_panel(pool, &uid, 1, range, &selection).await)
}

#[tokio::test]
async fn every_data_link_opens_a_dashboard_with_its_variables_from_fields_its_panel_returns() {
    let plan = Plan::with_incident(seed::fixed_end());
    let (db, range) = seeded(&plan).await;
    let dashboards = repo::dashboards();
    let mut checked = 0;
    for (file, dash) in &dashboards {
        for panel in grafana::all_panels(dash) {
            let links = data_links(panel);
            if links.is_empty() {
                continue;
            }
            let f = run_panel(&db.pool, dash["uid"].as_str().unwrap(), panel["id"].as_i64().unwrap(), range, &|_| {
                Selection::All
            })
            .await;
            let rows = rows_by_name(&f);
            assert!(!rows.is_empty(), "{file} panel {}: no rows to follow a link from", panel["id"]);
            for link in links {
                let url = link["url"].as_str().unwrap();
                let (uid, _, vars) = follow(url, &rows[0], range);
                let (_, target) = dashboard_by_uid(&uid);
                let names: Vec<String> = grafana::variables(&target).into_iter().map(|v| v.name).collect();
                for (k, _) in &vars {
                    assert!(names.contains(k), "{file} panel {}: {url} sets {k}, not a variable of {uid}", panel["id"]);
                }
                // Every row's link works: the drill-down runs.
                for row in rows.iter().take(20) {
                    open_link(&db.pool, link, row, range).await;
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 7, "{checked} links");
}

#[tokio::test]
async fn an_anomaly_links_to_its_transaction_or_to_its_merchants_transactions_around_it() {
    let plan = Plan::with_incident(seed::fixed_end());
    let db = vigil_testkit::fresh_database().await;
    let s = seed::seed(&db.pool, &plan).await;
    let (range, s_stored) = (TimeRange { from: s.first_minute, to: plan.end }, s.stored);
    let link_of = |uid: &str, id: i64| {
        let (_, dash) = dashboard_by_uid(uid);
        let panel = grafana::all_panels(&dash).into_iter().find(|p| p["id"] == id).unwrap().clone();
        data_links(&panel)[0].clone()
    };

    // The Recent alerts table: the critical amount anomaly leads to its transaction alone.
    let f = run_panel(&db.pool, "vigil-transactions", 8, range, &|_| Selection::All).await;
    let rows = rows_by_name(&f);
    let amount = rows.iter().find(|r| r["name"].as_deref() == Some("amount_zscore")).unwrap();
    let (_, t) = open_link(&db.pool, &link_of("vigil-transactions", 8), amount, range).await;
    assert_eq!(column(&t, "transaction"), vec![Some("tx-7f3a".to_owned())]);
    // The stop of all traffic: every category's transactions from 15 minutes before it began to
    // 5 after it resolved, none during the stop.
    let stop = rows
        .iter()
        .find(|r| r["name"].as_deref() == Some("volume_drop") && r["subject"].as_deref() == Some("global all"))
        .unwrap();
    let (window, t) = open_link(&db.pool, &link_of("vigil-transactions", 8), stop, range).await;
    let stop_minutes = plan.stop_minutes();
    assert_eq!(window.from, stop_minutes[0] - ChronoDuration::minutes(15));
    let times: Vec<_> =
        column(&t, "time").into_iter().map(|v| frames::parse_pg_timestamp(&v.unwrap()).unwrap()).collect();
    assert!(!times.is_empty());
    assert!(times.iter().all(|at| *at >= window.from && *at <= window.to), "{times:?} outside {window:?}");
    assert!(
        times.iter().all(|at| !stop_minutes.contains(&at.duration_trunc(ChronoDuration::minutes(1)).unwrap())),
        "a transaction during the stop"
    );
    let expected = s_stored.iter().filter(|x| x.occurred_at >= window.from && x.occurred_at <= window.to).count();
    assert_eq!(times.len(), expected.min(100));

    // The merchant drill-down: m-7 going dark leads to m-7's transactions around it.
    let m7 = |name: &str| if name == "merchant" { Selection::One("m-7".into()) } else { Selection::All };
    let f = run_panel(&db.pool, "vigil-merchant", 4, range, &m7).await;
    let rows = rows_by_name(&f);
    let (window, t) = open_link(&db.pool, &link_of("vigil-merchant", 4), &rows[0], range).await;
    let expected: Vec<Option<String>> = {
        let mut v: Vec<_> = s_stored
            .iter()
            .filter(|x| x.merchant == "m-7" && x.occurred_at >= window.from && x.occurred_at <= window.to)
            .collect();
        v.sort_by(|a, b| b.occurred_at.cmp(&a.occurred_at).then(a.id.cmp(&b.id)));
        v.into_iter().map(|x| Some(x.id.clone())).collect()
    };
    assert!(expected.len() > 10, "{expected:?}");
    assert_eq!(column(&t, "transaction"), expected);

    // A merchant's bar: that merchant's transactions in the dashboard's range.
    let f = run_panel(&db.pool, "vigil-transactions", 10, range, &|_| Selection::All).await;
    let rows = rows_by_name(&f);
    let m42 = rows.iter().find(|r| r["merchant"].as_deref() == Some("m-42")).unwrap();
    let (window, t) = open_link(&db.pool, &link_of("vigil-transactions", 10), m42, range).await;
    assert_eq!(window, range);
    assert!(!t.rows.is_empty() && column(&t, "merchant").iter().all(|m| m.as_deref() == Some("m-42")));
    // A category's bar: that category's.
    let f = run_panel(&db.pool, "vigil-transactions", 9, range, &|_| Selection::All).await;
    let rows = rows_by_name(&f);
    let fuel = rows.iter().find(|r| r["category"].as_deref() == Some("fuel")).unwrap();
    let (_, t) = open_link(&db.pool, &link_of("vigil-transactions", 9), fuel, range).await;
    assert!(!t.rows.is_empty() && column(&t, "category").iter().all(|c| c.as_deref() == Some("fuel")));
}
