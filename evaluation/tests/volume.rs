//! The grader on volume incidents: hand-made anomaly lists scored as the catalogue scores a
//! run (detection, a miss, coverage, resolve time), the rate and volume rules kept apart, and
//! the report's volume section.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use vigil_evaluation::catalogue::{Cell, Kind, Part, Scope, Volume};
use vigil_evaluation::report::{CellReport, FalseAlarms, Report, VolumeReport};
use vigil_evaluation::run::Rule;
use vigil_evaluation::score::{of_part, score_incident, summarise, unexplained, Emission, IncidentScore, MINUTE_MS};
use vigil_schemas::AnomalyState;
use vigil_simulator::truth::{IncidentTruth, RuleRef};

const T0: i64 = 1_767_571_200_000;

fn at(minute: i64) -> i64 {
    T0 + minute * MINUTE_MS
}

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// Merchant m-market-1 going dark over minutes [100, 110), as the simulator's ground truth has it.
fn dark_merchant() -> IncidentTruth {
    IncidentTruth {
        id: "0.0".into(),
        iteration: 0,
        name: "merchant m-market-1 goes dark".into(),
        kind: "volume".into(),
        start: utc(at(100)),
        end: utc(at(110)),
        dimension: "merchant".into(),
        value: "m-market-1".into(),
        expected: vec![RuleRef::new("volume_drop", "merchant", "m-market-1")],
        may_also: vec![RuleRef::new("volume_drop", "category", "food"), RuleRef::new("volume_drop", "global", "all")],
        outliers: vec![],
        note: None,
    }
}

fn state(id: &str, rule: &str, dimension: &str, value: &str, state: AnomalyState, minute: i64) -> Emission {
    Emission {
        id: id.into(),
        rule: rule.into(),
        dimension: dimension.into(),
        value: value.into(),
        state,
        minute: at(minute),
        resolved_at: (state == AnomalyState::Resolved).then(|| at(minute + 1)),
    }
}

/// A `volume_drop` on the merchant firing when minute `from` is judged, updated to `to`,
/// resolved when minute `resolved` is judged.
fn drop_life(id: &str, from: i64, to: i64, resolved: Option<i64>) -> Vec<Emission> {
    let s = |st, m| state(id, "volume_drop", "merchant", "m-market-1", st, m);
    let mut v = vec![s(AnomalyState::Firing, from)];
    v.extend((from + 1..=to).map(|m| s(AnomalyState::Updated, m)));
    v.extend(resolved.map(|r| s(AnomalyState::Resolved, r)));
    v
}

#[test]
fn a_dark_merchant_reported_from_its_third_minute_to_its_end_is_detected_with_its_delay_coverage_and_resolve_time() {
    // Fires on minute 102, updated through 109, resolved when 111 is judged (at 112: 2 minutes
    // after the end).
    let s = score_incident(&dark_merchant(), &drop_life("d", 102, 109, Some(111)));
    assert!(s.detected);
    assert_eq!(s.delay, Some(2));
    assert!((s.coverage - 0.8).abs() < 1e-12, "{}", s.coverage);
    assert_eq!(s.anomalies, 1.0);
    assert_eq!(s.resolve, Some(2));
    assert!(!s.unresolved);
}

#[test]
fn a_surge_or_a_drop_on_another_merchant_is_a_miss_and_unexplained() {
    let em = vec![
        state("s", "volume_surge", "merchant", "m-market-1", AnomalyState::Firing, 103),
        state("o", "volume_drop", "merchant", "m-other", AnomalyState::Firing, 104),
    ];
    let s = score_incident(&dark_merchant(), &em);
    assert_eq!(s, IncidentScore::miss());
    let ids: Vec<String> = unexplained(&dark_merchant(), &em).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["o", "s"]);
}

#[test]
fn the_category_and_global_drops_a_dark_merchant_may_cause_are_related_not_false() {
    let mut em = drop_life("d", 101, 109, Some(111));
    em.push(state("c", "volume_drop", "category", "food", AnomalyState::Firing, 104));
    let s = score_incident(&dark_merchant(), &em);
    assert_eq!((s.detected, s.related), (true, 1));
    assert!(unexplained(&dark_merchant(), &em).is_empty());
}

#[test]
fn a_drop_that_resolves_while_the_merchant_is_still_dark_has_a_negative_resolve_time_and_a_second_anomaly() {
    let mut em = drop_life("a", 101, 103, Some(105));
    em.extend(drop_life("b", 107, 109, Some(110)));
    let s = score_incident(&dark_merchant(), &em);
    assert_eq!((s.delay, s.anomalies, s.resolve), (Some(1), 2.0, Some(1)));
    assert!((s.coverage - 0.6).abs() < 1e-12, "{}", s.coverage);
    let s = score_incident(&dark_merchant(), &drop_life("a", 101, 103, Some(105)));
    assert_eq!(s.resolve, Some(-4), "resolved at 106, 4 minutes before the end");
}

#[test]
fn a_stop_judged_only_after_it_ends_still_counts_within_the_late_margin() {
    // A stop in all traffic of a replay: its minutes are judged when traffic resumes. An alarm
    // dated the minute after the end counts (late margin), with no coverage.
    let s = score_incident(&dark_merchant(), &drop_life("d", 111, 112, Some(114)));
    assert!(s.detected);
    assert_eq!((s.delay, s.coverage), (Some(11), 0.0));
    let s = score_incident(&dark_merchant(), &drop_life("d", 112, 113, Some(115)));
    assert!(!s.detected, "beyond the 2-minute late margin");
}

#[test]
fn each_part_is_scored_on_its_own_rules_so_a_spikes_volume_surge_leaves_the_rate_score_alone() {
    let spike = IncidentTruth {
        name: "denied spike".into(),
        kind: "rate_spike".into(),
        dimension: "global".into(),
        value: "denied".into(),
        expected: vec![RuleRef::new("denied_rate", "global", "all")],
        may_also: vec![RuleRef::new("volume_surge", "global", "all")],
        ..dark_merchant()
    };
    let mut em = vec![state("r", "denied_rate", "global", "all", AnomalyState::Firing, 101)];
    em.push(state("v", "volume_surge", "global", "all", AnomalyState::Firing, 100));
    em.push(state("x", "volume_drop", "merchant", "m-9", AnomalyState::Firing, 50));
    let rate = of_part(&em, Part::Rate);
    assert_eq!(rate.len(), 1);
    let s = score_incident(&spike, &rate);
    assert_eq!((s.detected, s.delay, s.related), (true, Some(1), 0));
    // The surge is explained by the spike's extra transactions; the drop elsewhere is not.
    let stray: Vec<String> = unexplained(&spike, &of_part(&em, Part::Volume)).into_iter().map(|(id, _)| id).collect();
    assert_eq!(stray, ["x"]);
    assert_eq!(Part::of_rule("volume_surge"), Part::Volume);
    assert_eq!(Part::of_rule("auth_code_rate"), Part::Rate);
}

fn hit(delay: i64, coverage: f64, resolve: i64) -> IncidentScore {
    IncidentScore {
        detected: true,
        delay: Some(delay),
        coverage,
        anomalies: 1.0,
        resolve: Some(resolve),
        ..IncidentScore::miss()
    }
}

#[test]
fn the_report_shows_the_volume_incidents_apart_and_the_rule_sets_without_a_volume_rule_as_such() {
    let cell = Cell { kind: Kind::Volume, strength: 0.0, duration: 10, volume: Volume::Peak, scope: Scope::Merchant };
    let scores = vec![hit(2, 0.8, 2), IncidentScore::miss()];
    let fa = FalseAlarms {
        count: 1,
        minutes: 3 * 10_080,
        per_week: 1.0 / 3.0,
        by_dimension: BTreeMap::from([("merchant".into(), 1)]),
    };
    let report = Report {
        rules: vec![Rule::Sequential, Rule::Minute, Rule::Sql],
        seeds: 2,
        days: 21,
        weeks: 0,
        cells: vec![],
        false_alarms: BTreeMap::new(),
        unexplained: BTreeMap::new(),
        targets: vec![],
        volume: VolumeReport {
            rules: vec![Rule::Sequential],
            cells: vec![CellReport {
                cell,
                scope_volume: 60.0,
                total_volume: 300.0,
                results: BTreeMap::from([(Rule::Sequential, summarise(&scores))]),
                scores: BTreeMap::from([(Rule::Sequential, scores)]),
            }],
            false_alarms: BTreeMap::from([(Rule::Sequential, fa)]),
            ..VolumeReport::default()
        },
        transactions: 0,
        seconds: 0.0,
        threads: 1,
    };
    let md = report.markdown();
    assert!(md.contains("## Volume incidents"), "{md}");
    assert!(!md.contains("## Targets"), "no rate cells, no rate targets: {md}");
    assert!(
        md.contains(
            "| 0 | 10 | peak | merchant | 60 / 300 | 1/2 · 2/2 · 40% · 1 · 2 | no volume rule | no volume rule |"
        ),
        "{md}"
    );
    assert!(md.contains("| per-minute (before) | no volume rule |"), "{md}");
    assert!(md.contains("| sequential (new default) | 0.33 | 1 in 21.0 days | merchant 1 |"), "{md}");
    assert!(md.contains("recall × 0 / 0.5 / 2 / 3"), "{md}");
    assert!(
        md.contains("| sequential (new default) | 1/2 · 2/2 · 40% · 1 · 2 | 50 % / 0 % / 0 % / 0 % | 0 % / 50 % / 0 % | 0 % / 50 % / 0 % | 0.0 | 0.33 |"),
        "{md}"
    );
}
