//! Grafana's alerting provisioning: the rules' shape, the contact point and the policy, and
//! every rule evaluated on a seeded database the way Grafana evaluates it: query A over its
//! relative time range (macros expanded, no template variables), the series Grafana builds
//! from the rows, then the reduce and threshold expressions; the condition fires when any
//! series passes. A rule whose query returns text columns has one instance per label set:
//! "Traffic stopped" has one per open stop, with labels that hold still while the stop lasts.
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
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Severity};
use vigil_sink::writer::{self, Row};

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
        "Traffic stopped",
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
            // One value column: an alert instance per label set (one, without text columns).
            let series = frame.series();
            let names: BTreeSet<&str> = series.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names.len(), 1, "{}: one value column ({})", rule.title, frame.describe());
            let label_sets: BTreeSet<_> = series.iter().map(|s| &s.labels).collect();
            assert_eq!(label_sets.len(), series.len(), "{}: two series with the same labels", rule.title);
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
const STOPPED: &str = "vigil-traffic-stopped";

async fn outcomes(plan: &Plan, at: DateTime<Utc>) -> BTreeMap<&'static str, Outcome> {
    let db = vigil_testkit::fresh_database().await;
    seed::seed(&db.pool, plan).await;
    let mut out = BTreeMap::new();
    for uid in [DENIED, FAILED, REVERSED, CRITICAL, STOPPED] {
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
    // The plan's stop of all traffic was resolved an hour ago: nothing is open.
    assert_eq!(o[STOPPED], Outcome::NoData);
}

#[tokio::test]
async fn normal_traffic_fires_no_rule() {
    let plan = Plan::normal(seed::fixed_end());
    let o = outcomes(&plan, plan.end + Duration::seconds(30)).await;
    for (uid, outcome) in &o {
        // No open stop is no row (noDataState OK); the other rules read every minute.
        let expected = if *uid == STOPPED { Outcome::NoData } else { Outcome::Normal };
        assert_eq!(*outcome, expected, "{uid} on normal traffic");
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
    for uid in [DENIED, FAILED, REVERSED, STOPPED] {
        let r = rule(uid);
        assert_eq!(evaluate(&db.pool, &r, at).await, Outcome::NoData, "{uid}");
        // noDataState OK: no traffic is not an anomaly (Prometheus pages for silence).
        assert_eq!(r.no_data_state, "OK");
    }
    assert_eq!(evaluate(&db.pool, &rule(CRITICAL), at).await, Outcome::Normal);
}

// ---- Traffic stopped -------------------------------------------------------------------------

fn firing_labels(o: &Outcome) -> Vec<BTreeMap<String, String>> {
    match o {
        Outcome::Firing(instances) => instances.clone(),
        other => panic!("expected Traffic stopped to fire, got {other:?}"),
    }
}

#[tokio::test]
async fn an_open_stop_of_all_traffic_fires_traffic_stopped_once_labelled_with_its_opening_message() {
    // Traffic stopped 5 minutes before the evaluation and has not come back.
    let plan = Plan { traffic_stop: Some((5, 5)), ..Plan::normal(seed::fixed_end()) };
    let db = vigil_testkit::fresh_database().await;
    let seeded = seed::seed(&db.pool, &plan).await;
    assert_eq!(seeded.stop_minutes.len(), 5);
    let o = evaluate(&db.pool, &rule(STOPPED), plan.end + Duration::seconds(30)).await;
    let instances = firing_labels(&o);
    assert_eq!(instances.len(), 1, "{instances:?}");
    let first = seeded.stop_minutes[0];
    let (message, first_message): (String, String) =
        sqlx::query_as("SELECT message, first_message FROM anomalies WHERE rule = 'volume_drop'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_ne!(message, first_message, "the stop has been updated since it opened");
    assert_eq!(
        instances[0],
        BTreeMap::from([
            ("anomaly_id".to_owned(), format!("volume_drop:global:all:{}", first.timestamp_millis())),
            ("scope".to_owned(), "all traffic".to_owned()),
            ("first_message".to_owned(), first_message),
        ])
    );
    // The other rules are not disturbed by the stop: the view skips minutes without traffic.
    for uid in [DENIED, FAILED, REVERSED] {
        assert_eq!(evaluate(&db.pool, &rule(uid), plan.end + Duration::seconds(30)).await, Outcome::Normal, "{uid}");
    }
}

#[tokio::test]
async fn a_resolved_stop_and_a_high_merchant_drop_fire_nothing() {
    // with_incident: a stop 75 minutes before the end, resolved, and merchant m-7 dark for 6
    // minutes (high, resolved). Then m-7's drop as it stood while the merchant was dark: open,
    // but only high, so not paged as a stop.
    let plan = Plan::with_incident(seed::fixed_end());
    let db = vigil_testkit::fresh_database().await;
    let seeded = seed::seed(&db.pool, &plan).await;
    assert_eq!(seeded.stop_minutes.len(), 5);
    let at = plan.end + Duration::seconds(30);
    assert_eq!(evaluate(&db.pool, &rule(STOPPED), at).await, Outcome::NoData);
    sqlx::query("UPDATE anomalies SET state = 'updated', resolved_at = NULL WHERE dimension = 'merchant' AND rule = 'volume_drop'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(evaluate(&db.pool, &rule(STOPPED), at).await, Outcome::NoData);
}

/// A volume drop's state as the detector sends it.
fn drop_state(
    dimension: AnomalyDimension,
    value: &str,
    sequence: i64,
    state: AnomalyState,
    severity: Severity,
) -> Anomaly {
    let onset = seed::fixed_end() - Duration::minutes(10);
    let minute = onset + Duration::minutes(sequence);
    let ms = |t: chrono::DateTime<Utc>| t.timestamp_millis();
    Anomaly {
        id: format!("volume_drop:{}:{value}:{}", dimension.as_str(), ms(onset)),
        sequence,
        rule: AnomalyRule::VolumeDrop,
        dimension,
        dimension_value: value.to_owned(),
        window_start: Some(ms(minute)),
        window_end: Some(ms(minute) + 60_000),
        transaction_id: None,
        category: (dimension == AnomalyDimension::Category).then(|| value.to_owned()),
        merchant_id: (dimension == AnomalyDimension::Merchant).then(|| value.to_owned()),
        observed: 0.0,
        observed_count: 0,
        observed_total: 0,
        baseline_mean: 214.0,
        baseline_stddev: 19.0,
        baseline_n: 120,
        scored_on: "volume_cusum".into(),
        score: 30.0 + sequence as f64,
        p_value: Some(1e-90),
        threshold: 9.2,
        severity,
        state,
        message: format!("{value} dropped, state {sequence}"),
        first_seen: ms(onset),
        last_updated: ms(minute) + 60_000,
        resolved_at: (state == AnomalyState::Resolved).then(|| ms(minute) + 60_000),
    }
}

async fn deliver(pool: &PgPool, states: &[Anomaly]) {
    let rows: Vec<Row> = states.iter().cloned().map(Row::Anomaly).collect();
    writer::write_batch(pool, &rows).await.unwrap();
}

#[tokio::test]
async fn one_stop_stays_one_alert_instance_while_it_lasts_in_any_delivery_order_and_resolves() {
    use AnomalyDimension::{Global, Merchant};
    use AnomalyState::{Firing, Resolved, Updated};
    use Severity::{Critical, High};
    let db = vigil_testkit::fresh_database().await;
    let stopped = rule(STOPPED);
    let mut at = seed::fixed_end();
    let mut eval = || {
        at += Duration::seconds(30);
        let (pool, stopped) = (db.pool.clone(), stopped.clone());
        async move { evaluate(&pool, &stopped, at).await }
    };

    // Written by the sink as the detector sends them: the stop opens...
    deliver(&db.pool, &[drop_state(Global, "all", 0, Firing, Critical)]).await;
    let opened = firing_labels(&eval().await);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["first_message"], "all dropped, state 0");
    assert_eq!(opened[0]["scope"], "all traffic");
    // ...goes on (its message changes every minute), and a state is delivered twice, late:
    // still the same instance.
    deliver(&db.pool, &[drop_state(Global, "all", 1, Updated, Critical)]).await;
    assert_eq!(firing_labels(&eval().await), opened);
    deliver(
        &db.pool,
        &[drop_state(Global, "all", 3, Updated, Critical), drop_state(Global, "all", 2, Updated, Critical)],
    )
    .await;
    deliver(
        &db.pool,
        &[drop_state(Global, "all", 0, Firing, Critical), drop_state(Global, "all", 1, Updated, Critical)],
    )
    .await;
    let message: String = sqlx::query_scalar("SELECT message FROM anomalies").fetch_one(&db.pool).await.unwrap();
    assert_eq!(message, "all dropped, state 3");
    assert_eq!(firing_labels(&eval().await), opened);

    // A big merchant goes dark too (critical): a second instance; a small one (high), another
    // rule's critical anomaly and a critical surge are not stops.
    let mut others = vec![
        drop_state(Merchant, "m-big", 0, Firing, Critical),
        drop_state(Merchant, "m-small", 0, Firing, High),
        Anomaly {
            rule: AnomalyRule::VolumeSurge,
            id: "volume_surge:global:all:1".into(),
            ..drop_state(Global, "all", 0, Firing, Critical)
        },
        Anomaly {
            rule: AnomalyRule::DeniedRate,
            id: "denied_rate:global:all:1".into(),
            ..drop_state(Global, "all", 0, Firing, Critical)
        },
    ];
    deliver(&db.pool, &others).await;
    let two = firing_labels(&eval().await);
    assert_eq!(two.len(), 2, "{two:?}");
    assert!(two.contains(&opened[0]));
    let merchant = two.iter().find(|l| **l != opened[0]).unwrap();
    assert_eq!(merchant["scope"], "merchant m-big");
    assert_eq!(merchant["first_message"], "m-big dropped, state 0");

    // Traffic comes back: the stop's row leaves the result, the merchant's instance stays.
    deliver(&db.pool, &[drop_state(Global, "all", 6, Resolved, Critical)]).await;
    assert_eq!(firing_labels(&eval().await), vec![merchant.clone()]);
    // An older state delivered after the resolution does not reopen it.
    deliver(&db.pool, &[drop_state(Global, "all", 4, Updated, Critical)]).await;
    assert_eq!(firing_labels(&eval().await), vec![merchant.clone()]);
    others[0] = drop_state(Merchant, "m-big", 3, Resolved, Critical);
    deliver(&db.pool, &others[..1]).await;
    assert_eq!(eval().await, Outcome::NoData);
}
