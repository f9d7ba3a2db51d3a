//! Grafana's alerting provisioning: the rules' shape, the contact point and the policy, and
//! every rule evaluated on a seeded database the way Grafana evaluates it: query A over its
//! relative time range (macros expanded, no template variables), the series Grafana builds
//! from the rows, then the reduce and threshold expressions; the condition fires when any
//! series passes.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use vigil_ops_tests::constants::{GRAFANA_WEBHOOK_PATH, PG_DATASOURCE_UID};
use vigil_ops_tests::frames::{self, Series};
use vigil_ops_tests::grafana::expressions::{self, Instances};
use vigil_ops_tests::grafana::macros::{self, TimeRange};
use vigil_ops_tests::grafana::{self, AlertRule};
use vigil_ops_tests::repo;
use vigil_ops_tests::seed::{self, Plan};

const SEVERITIES: [&str; 3] = ["medium", "high", "critical"];

#[test]
fn alert_rules_are_well_formed_and_their_states_are_chosen_deliberately() {
    let rules = grafana::alert_rules();
    let titles: BTreeSet<&str> = rules.iter().map(|r| r.title.as_str()).collect();
    for expected in [
        "Denied rate above normal",
        "Failed rate above normal",
        "Reversed rate above normal",
        "Critical amount anomalies",
    ] {
        assert!(titles.contains(expected), "no rule {expected:?} in {titles:?}");
    }
    let uids: BTreeSet<&str> = rules.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(uids.len(), rules.len(), "rule uids must be unique");
    let datasources = grafana::datasources();
    let dashboards = repo::dashboards();
    for r in &rules {
        let who = format!("{} ({})", r.title, r.file);
        assert!(!r.uid.is_empty() && r.uid.len() <= 40, "{who}: uid must be 1-40 characters");
        assert!(!r.group.is_empty() && parse_duration(&r.interval) >= 10, "{who}: group interval {:?}", r.interval);
        assert!(
            r.data.iter().any(|q| q.ref_id == r.condition),
            "{who}: condition {} is not one of its refIds",
            r.condition
        );
        // Deliberate, documented in the file: see its header.
        assert_eq!(r.no_data_state, "OK", "{who}: noDataState");
        assert_eq!(r.exec_err_state, "Error", "{who}: execErrState");
        parse_duration(&r.for_);
        let severity = r.labels.get("severity").map(String::as_str).unwrap_or("");
        assert!(SEVERITIES.contains(&severity), "{who}: severity label {severity:?} is not one of {SEVERITIES:?}");
        assert!(
            r.labels.values().all(|v| !v.contains('$')),
            "{who}: labels are expanded from the environment; escape $ as $$"
        );
        assert!(
            r.annotations.contains_key("summary") && r.annotations.contains_key("description"),
            "{who}: annotations"
        );
        for q in &r.data {
            if q.is_expression() {
                continue;
            }
            assert!(
                datasources.contains_key(&q.datasource_uid),
                "{who}: data source {} is not provisioned",
                q.datasource_uid
            );
            assert!(
                q.from > q.to && q.to >= 0,
                "{who}: query {} has relativeTimeRange from {} to {}",
                q.ref_id,
                q.from,
                q.to
            );
            assert_eq!(q.model["format"], "time_series", "{who}: alert queries must use the time-series format");
            assert_eq!(q.model["refId"], q.ref_id.as_str(), "{who}: model refId");
        }
        // The rule links to a panel that exists.
        let dash_uid = r.dashboard_uid.as_deref().unwrap_or_else(|| panic!("{who}: no dashboardUid"));
        let (_, dash) = dashboards
            .iter()
            .find(|(_, d)| d["uid"] == dash_uid)
            .unwrap_or_else(|| panic!("{who}: no dashboard {dash_uid}"));
        let panel = r.panel_id.unwrap_or_else(|| panic!("{who}: no panelId"));
        assert!(
            grafana::all_panels(dash).iter().any(|p| p["id"] == panel),
            "{who}: dashboard {dash_uid} has no panel {panel}"
        );
    }
}

/// Prometheus-style durations (`0s`, `1m`, `5m`), in seconds.
fn parse_duration(s: &str) -> u64 {
    macros::parse_interval(s).unwrap_or_else(|e| panic!("{s:?}: {e}")).as_secs()
}

#[test]
fn the_contact_point_and_policy_send_every_alert_to_the_webhook_service_with_the_bearer_token() {
    let cps = repo::yaml("grafana/provisioning/alerting/contact-points.yaml");
    let cp = &cps["contactPoints"][0];
    let name = repo::ystr(cp, &["name"]);
    let receiver = &cp["receivers"][0];
    assert_eq!(repo::ystr(receiver, &["type"]), "webhook");
    assert!(!repo::ystr(receiver, &["uid"]).is_empty());
    let settings = &receiver["settings"];
    assert_eq!(repo::ystr(settings, &["url"]), format!("http://webhook:3001{GRAFANA_WEBHOOK_PATH}"));
    assert_eq!(repo::ystr(settings, &["httpMethod"]), "POST");
    assert_eq!(repo::ystr(settings, &["authorization_scheme"]), "Bearer");
    // Expanded by Grafana from its environment; compose gives it the webhook service's token.
    assert_eq!(repo::ystr(settings, &["authorization_credentials"]), "$WEBHOOK_TOKEN");

    let policies = repo::yaml("grafana/provisioning/alerting/notification-policies.yaml");
    let root = &policies["policies"][0];
    assert_eq!(repo::ystr(root, &["receiver"]), name);
    for route in root["routes"].as_sequence().into_iter().flatten() {
        assert_eq!(repo::ystr(route, &["receiver"]), name);
    }
    assert!(root.get("mute_time_intervals").is_none(), "a root policy cannot have mute timings");
}

/// What Grafana would conclude for a rule at one evaluation.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Every query returned no rows: the rule takes its noDataState.
    NoData,
    /// The condition's instances that passed (their labels).
    Firing(Vec<BTreeMap<String, String>>),
    Normal,
}

async fn evaluate(pool: &PgPool, rule: &AlertRule, at: DateTime<Utc>) -> Outcome {
    let mut series: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    let mut numbers: BTreeMap<String, Instances> = BTreeMap::new();
    let mut any_rows = false;
    for q in &rule.data {
        if q.is_expression() {
            let out =
                expressions::evaluate(&q.model, &series, &numbers).unwrap_or_else(|e| panic!("{}: {e}", rule.title));
            numbers.insert(q.ref_id.clone(), out);
            continue;
        }
        assert_eq!(q.datasource_uid, PG_DATASOURCE_UID);
        let range = TimeRange { from: at - Duration::seconds(q.from), to: at - Duration::seconds(q.to) };
        let raw = q.model["rawSql"].as_str().unwrap();
        let sql =
            macros::expand_alert_query(raw, range, q.interval()).unwrap_or_else(|e| panic!("{}: {e}", rule.title));
        let frame = frames::query(pool, &sql)
            .await
            .unwrap_or_else(|e| panic!("{}: PostgreSQL refused the query: {e}\n{sql}", rule.title));
        if !frame.rows.is_empty() {
            any_rows = true;
            let problems = frame.time_series_problems();
            assert!(problems.is_empty(), "{}: {problems:?}\n{sql}", rule.title);
            assert_eq!(
                frame.series().len(),
                1,
                "{}: one series, one alert instance ({})",
                rule.title,
                frame.describe()
            );
        }
        series.insert(q.ref_id.clone(), frame.series());
    }
    if !any_rows {
        return Outcome::NoData;
    }
    let firing: Vec<_> = numbers[&rule.condition].iter().filter(|(_, v)| *v != 0.0).map(|(l, _)| l.clone()).collect();
    if firing.is_empty() {
        Outcome::Normal
    } else {
        Outcome::Firing(firing)
    }
}

fn rule(uid: &str) -> AlertRule {
    grafana::alert_rules().into_iter().find(|r| r.uid == uid).unwrap_or_else(|| panic!("no rule {uid}"))
}

const DENIED: &str = "vigil-denied-above-normal";
const FAILED: &str = "vigil-failed-above-normal";
const REVERSED: &str = "vigil-reversed-above-normal";
const CRITICAL: &str = "vigil-critical-amount-anomalies";

async fn outcomes(plan: &Plan, at: DateTime<Utc>) -> BTreeMap<&'static str, Outcome> {
    let db = vigil_testkit::fresh_database().await;
    seed::seed(&db.pool, plan).await;
    let mut out = BTreeMap::new();
    for uid in [DENIED, FAILED, REVERSED, CRITICAL] {
        out.insert(uid, evaluate(&db.pool, &rule(uid), at).await);
    }
    assert_eq!(out.len(), grafana::alert_rules().len(), "a rule is not covered by these tests");
    out
}

#[tokio::test]
async fn a_denied_spike_fires_the_denied_rule_and_a_critical_amount_anomaly_fires_its_rule() {
    let plan = Plan::with_incident(seed::fixed_end());
    // Evaluated 30 s after the last seeded minute ended, as the scheduler would.
    let at = plan.end + Duration::seconds(30);
    let o = outcomes(&plan, at).await;
    assert!(matches!(o[DENIED], Outcome::Firing(ref i) if i.len() == 1), "denied: {:?}", o[DENIED]);
    assert_eq!(o[FAILED], Outcome::Normal);
    assert_eq!(o[REVERSED], Outcome::Normal);
    assert!(matches!(o[CRITICAL], Outcome::Firing(_)), "critical: {:?}", o[CRITICAL]);
}

#[tokio::test]
async fn normal_traffic_fires_no_rule() {
    let plan = Plan::normal(seed::fixed_end());
    let o = outcomes(&plan, plan.end + Duration::seconds(30)).await;
    for (uid, outcome) in &o {
        assert_eq!(*outcome, Outcome::Normal, "{uid} on normal traffic");
    }
}

#[tokio::test]
async fn the_denied_rule_stops_firing_once_the_spike_is_older_than_its_window() {
    // The spike ended 30 minutes before the evaluation; traffic went on normally since.
    let plan = Plan { denied_spike: Some((34, 4)), ..Plan::normal(seed::fixed_end()) };
    let o = outcomes(&plan, plan.end + Duration::seconds(30)).await;
    assert_eq!(o[DENIED], Outcome::Normal);
    // ...and it did fire while the spike was in the window.
    let db = vigil_testkit::fresh_database().await;
    seed::seed(&db.pool, &plan).await;
    let during = plan.spike_minutes()[1] + Duration::seconds(90);
    assert!(matches!(evaluate(&db.pool, &rule(DENIED), during).await, Outcome::Firing(_)));
}

#[tokio::test]
async fn without_traffic_the_rate_rules_have_no_data_and_the_count_rule_reads_zero() {
    let db = vigil_testkit::fresh_database().await;
    let at = seed::fixed_end();
    for uid in [DENIED, FAILED, REVERSED] {
        let r = rule(uid);
        assert_eq!(evaluate(&db.pool, &r, at).await, Outcome::NoData, "{uid}");
        // noDataState OK: no traffic is not an anomaly (Prometheus pages for silence).
        assert_eq!(r.no_data_state, "OK");
    }
    assert_eq!(evaluate(&db.pool, &rule(CRITICAL), at).await, Outcome::Normal);
}
