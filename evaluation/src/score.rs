//! Scoring: one incident against the anomaly states a rule emitted, false alarms on normal
//! days, and the summary of a catalogue cell over its seeds.
//!
//! Every rule's output is first reduced to [`Emission`]s, one per anomaly state, so the
//! detector's anomalies and the SQL rule's flagged minutes are scored by the same code.
//!
//! For an incident spanning minutes `[start, end)` with expected series (rule, dimension,
//! value) taken from the simulator's ground truth:
//! * an anomaly **belongs** to the incident when it is on an expected series and open at some
//!   minute of `[start, end + LATE_MINUTES)`: from the minute it fired, through its updates, to
//!   the minute it resolved (exclusive), or to the end of the run if it never resolved;
//! * **detected**: every expected series has an anomaly that belongs to it;
//! * **delay**: the minute the first such anomaly fired (the minute judged when its firing
//!   state was emitted, i.e. its `last_updated` − 1 minute; not its `window_start`, which a
//!   sequential rule sets to the start of the evidence) minus `start`, in minutes; 0 when it
//!   was already open;
//! * **coverage**: the share of the incident's minutes with a firing or updated state of an
//!   anomaly that belongs to it;
//! * **anomalies**: how many distinct anomalies belong to it, per expected series;
//! * **resolve**: minutes from `end` to the `resolved_at` of the last one (negative when it
//!   resolved while the incident went on; `None` when it never resolved in the run).
//!
//! A false alarm is an anomaly (any rule, any dimension) on a normal day; per simulated week =
//! count × 7 × 1440 / minutes simulated. The rate rules' and the volume rules' anomalies are
//! counted apart (`catalogue::Part::of_rule`), and an incident is scored on its part's rules
//! only.

use serde::Serialize;
use vigil_schemas::{Anomaly, AnomalyRule, AnomalyState};
use vigil_simulator::truth::{IncidentTruth, RuleRef};

use crate::catalogue::Part;

pub const MINUTE_MS: i64 = 60_000;
pub const WEEK_MINUTES: f64 = 7.0 * 1440.0;
/// A detection up to this many minutes after the incident's end still counts (a rule that
/// accumulates evidence may cross its threshold a minute late).
pub const LATE_MINUTES: i64 = 2;

/// One anomaly state, of any rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Emission {
    pub id: String,
    pub rule: String,
    pub dimension: String,
    pub value: String,
    pub state: AnomalyState,
    /// The minute judged when the state was emitted (start, ms).
    pub minute: i64,
    pub resolved_at: Option<i64>,
}

impl Emission {
    /// A detector anomaly state (a rate or volume rule's); `None` for the amount rules, which
    /// the catalogue does not score.
    pub fn from_anomaly(a: &Anomaly) -> Option<Emission> {
        if matches!(a.rule, AnomalyRule::AmountZscore | AnomalyRule::AmountLowVariance) {
            return None;
        }
        Some(Emission {
            id: a.id.clone(),
            rule: a.rule.as_str().to_owned(),
            dimension: a.dimension.as_str().to_owned(),
            value: a.dimension_value.clone(),
            state: a.state,
            // Every rate state is emitted when a minute is judged and dated `last_updated` =
            // that minute's end; `window_start` may be the start of the evidence (a
            // sequential rule's run of minutes), not the minute judged.
            minute: a.last_updated - MINUTE_MS,
            resolved_at: a.resolved_at,
        })
    }

    /// Whether the state is on series `r` (a value of `*` matches any, as in the ground truth).
    fn on(&self, r: &RuleRef) -> bool {
        self.rule == r.rule && self.dimension == r.dimension && (r.value == "*" || self.value == r.value)
    }
}

/// One anomaly's life, rebuilt from its states.
#[derive(Debug, Clone, PartialEq)]
struct Life {
    id: String,
    fired: i64,
    /// Minutes with a firing or updated state.
    reported: Vec<i64>,
    resolved_at: Option<i64>,
}

fn lives<'a>(emissions: impl Iterator<Item = &'a Emission>) -> Vec<Life> {
    let mut out: Vec<Life> = Vec::new();
    for e in emissions {
        let i = match out.iter().position(|l| l.id == e.id) {
            Some(i) => i,
            None => {
                out.push(Life { id: e.id.clone(), fired: e.minute, reported: Vec::new(), resolved_at: None });
                out.len() - 1
            }
        };
        let l = &mut out[i];
        match e.state {
            AnomalyState::Firing | AnomalyState::Updated => {
                l.fired = l.fired.min(e.minute);
                l.reported.push(e.minute);
            }
            AnomalyState::Resolved => l.resolved_at = e.resolved_at.or(Some(e.minute + MINUTE_MS)),
        }
    }
    out.sort_by_key(|l| (l.fired, l.id.clone()));
    out
}

/// How one rule did on one incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentScore {
    pub detected: bool,
    /// Minutes from onset to the first firing (of the slowest expected series).
    pub delay: Option<i64>,
    /// Share of the incident's minutes reported as firing or updated (mean over expected series).
    pub coverage: f64,
    /// Distinct anomalies per expected series (mean over them).
    pub anomalies: f64,
    /// Minutes from the incident's end to the last anomaly's resolution (latest over series).
    pub resolve: Option<i64>,
    /// Detected but some anomaly of it never resolved within the run.
    pub unresolved: bool,
    /// Distinct anomalies on the series it may lift (`may_also`: wider scopes, the categories
    /// and merchants inside it, auth codes) open during it or its late margin.
    pub related: usize,
}

impl IncidentScore {
    /// An incident no anomaly of the rule detected.
    pub fn miss() -> IncidentScore {
        IncidentScore {
            detected: false,
            delay: None,
            coverage: 0.0,
            anomalies: 0.0,
            resolve: None,
            unresolved: false,
            related: 0,
        }
    }
}

/// Scores one incident; `emissions` may hold anything the rule emitted during the run.
pub fn score_incident(truth: &IncidentTruth, emissions: &[Emission]) -> IncidentScore {
    let start = truth.start.timestamp_millis();
    let end = truth.end.timestamp_millis();
    let minutes = ((end - start) / MINUTE_MS).max(1);
    let until = end + LATE_MINUTES * MINUTE_MS;
    let mut detected = !truth.expected.is_empty();
    let (mut delay, mut coverage, mut anomalies, mut resolve, mut unresolved) = (None::<i64>, 0.0, 0.0, None, false);
    for r in &truth.expected {
        let belong: Vec<Life> = lives(emissions.iter().filter(|e| e.on(r)))
            .into_iter()
            .filter(|l| l.fired < until && l.resolved_at.is_none_or(|t| t > start))
            .collect();
        if belong.is_empty() {
            detected = false;
            continue;
        }
        let first = belong.iter().map(|l| l.fired).min().unwrap_or(start);
        let d = ((first - start) / MINUTE_MS).max(0);
        delay = Some(delay.map_or(d, |x| x.max(d)));
        let covered = (0..minutes)
            .filter(|k| {
                let m = start + k * MINUTE_MS;
                belong.iter().any(|l| l.reported.contains(&m))
            })
            .count();
        coverage += covered as f64 / minutes as f64;
        anomalies += belong.len() as f64;
        match belong.last().and_then(|l| l.resolved_at) {
            Some(t) => {
                let x = (t - end) / MINUTE_MS;
                resolve = Some(resolve.map_or(x, |y: i64| y.max(x)));
            }
            None => unresolved = true,
        }
    }
    let n = truth.expected.len().max(1) as f64;
    let mut related: Vec<&str> = emissions
        .iter()
        .filter(|e| truth.may_also.iter().any(|r| e.on(r)) && !truth.expected.iter().any(|r| e.on(r)))
        .filter(|e| e.minute >= start && e.minute < until)
        .map(|e| e.id.as_str())
        .collect();
    related.sort_unstable();
    related.dedup();
    IncidentScore {
        detected,
        delay: if detected { delay } else { None },
        coverage: coverage / n,
        anomalies: anomalies / n,
        resolve: if detected && !unresolved { resolve } else { None },
        unresolved: detected && unresolved,
        related: related.len(),
    }
}

/// Distinct anomalies of an incident's run on series the incident neither expects nor may
/// lift: `(id, dimension)`.
pub fn unexplained(truth: &IncidentTruth, emissions: &[Emission]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = emissions
        .iter()
        .filter(|e| !truth.expected.iter().chain(&truth.may_also).any(|r| e.on(r)))
        .map(|e| (e.id.clone(), e.dimension.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The emissions of one part's rules (the rate rules' or the volume rules'), which is what an
/// incident of that part is scored on.
pub fn of_part(emissions: &[Emission], part: Part) -> Vec<Emission> {
    emissions.iter().filter(|e| Part::of_rule(&e.rule) == part).cloned().collect()
}

/// Distinct anomalies in a run of normal traffic.
pub fn false_alarms(emissions: &[Emission]) -> Vec<String> {
    let mut ids: Vec<String> = emissions.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A cell's results over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellSummary {
    pub runs: usize,
    pub recall: f64,
    pub delay_median: Option<f64>,
    pub delay_p90: Option<f64>,
    pub delay_max: Option<i64>,
    /// Mean over every run (0 for a miss).
    pub coverage_mean: f64,
    pub coverage_min: f64,
    /// Mean over detected runs.
    pub anomalies_mean: Option<f64>,
    pub anomalies_max: Option<f64>,
    pub resolve_median: Option<f64>,
    pub resolve_min: Option<i64>,
    pub resolve_max: Option<i64>,
    /// Detected runs whose anomaly never resolved.
    pub unresolved: usize,
    /// Mean anomalies per run on the series the incident may lift.
    pub related_mean: f64,
}

pub fn summarise(scores: &[IncidentScore]) -> CellSummary {
    let runs = scores.len();
    let hits: Vec<&IncidentScore> = scores.iter().filter(|s| s.detected).collect();
    let mut delays: Vec<f64> = hits.iter().filter_map(|s| s.delay).map(|d| d as f64).collect();
    let mut resolves: Vec<f64> = hits.iter().filter_map(|s| s.resolve).map(|d| d as f64).collect();
    let anomalies: Vec<f64> = hits.iter().map(|s| s.anomalies).collect();
    CellSummary {
        runs,
        recall: if runs == 0 { 0.0 } else { hits.len() as f64 / runs as f64 },
        delay_median: quantile(&mut delays, 0.5),
        delay_p90: quantile(&mut delays, 0.9),
        delay_max: hits.iter().filter_map(|s| s.delay).max(),
        coverage_mean: if runs == 0 { 0.0 } else { scores.iter().map(|s| s.coverage).sum::<f64>() / runs as f64 },
        coverage_min: scores.iter().map(|s| s.coverage).fold(f64::INFINITY, f64::min).min(1.0),
        anomalies_mean: (!anomalies.is_empty()).then(|| anomalies.iter().sum::<f64>() / anomalies.len() as f64),
        anomalies_max: anomalies.iter().copied().reduce(f64::max),
        resolve_median: quantile(&mut resolves, 0.5),
        resolve_min: hits.iter().filter_map(|s| s.resolve).min(),
        resolve_max: hits.iter().filter_map(|s| s.resolve).max(),
        unresolved: hits.iter().filter(|s| s.unresolved).count(),
        related_mean: if runs == 0 {
            0.0
        } else {
            scores.iter().map(|s| s.related).sum::<usize>() as f64 / runs as f64
        },
    }
}

/// The `q` quantile by linear interpolation between order statistics; `None` when empty.
pub fn quantile(xs: &mut [f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (xs.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    const T0: i64 = 1_767_571_200_000;

    fn at(minute: i64) -> i64 {
        T0 + minute * MINUTE_MS
    }

    fn utc(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    /// An incident on the global denied rate over minutes [10, 20).
    fn incident() -> IncidentTruth {
        IncidentTruth {
            id: "0.0".into(),
            iteration: 0,
            name: "denied ×3".into(),
            kind: "rate_spike".into(),
            start: utc(at(10)),
            end: utc(at(20)),
            dimension: "global".into(),
            value: "denied".into(),
            expected: vec![RuleRef::new("denied_rate", "global", "all")],
            may_also: vec![RuleRef::new("auth_code_rate", "auth_code", "05")],
            outliers: vec![],
            note: None,
        }
    }

    fn e(id: &str, rule: &str, state: AnomalyState, minute: i64) -> Emission {
        Emission {
            id: id.into(),
            rule: rule.into(),
            dimension: if rule == "auth_code_rate" { "auth_code" } else { "global" }.into(),
            value: if rule == "auth_code_rate" { "05" } else { "all" }.into(),
            state,
            minute: at(minute),
            resolved_at: (state == AnomalyState::Resolved).then(|| at(minute + 1)),
        }
    }

    /// An anomaly firing at `from`, updated every minute to `to` inclusive, resolved when minute
    /// `resolved` is judged (resolved_at = its end).
    fn life(id: &str, from: i64, to: i64, resolved: Option<i64>) -> Vec<Emission> {
        let mut v = vec![e(id, "denied_rate", AnomalyState::Firing, from)];
        v.extend((from + 1..=to).map(|m| e(id, "denied_rate", AnomalyState::Updated, m)));
        v.extend(resolved.map(|r| e(id, "denied_rate", AnomalyState::Resolved, r)));
        v
    }

    #[test]
    fn an_anomaly_that_follows_the_incident_scores_full_coverage_and_its_delay_and_resolve_time() {
        // Fires on minute 11 (delay 1), updated to 19, resolved when minute 22 is judged: at 23,
        // 3 minutes after the end.
        let s = score_incident(&incident(), &life("a", 11, 19, Some(22)));
        assert!(s.detected);
        assert_eq!(s.delay, Some(1));
        assert!((s.coverage - 0.9).abs() < 1e-12, "{}", s.coverage);
        assert_eq!(s.anomalies, 1.0);
        assert_eq!(s.resolve, Some(3));
        assert!(!s.unresolved);
    }

    #[test]
    fn an_incident_reported_for_its_first_minute_then_resolved_early_has_low_coverage_and_a_negative_resolve_time() {
        // Today's rule on a long doubling: one minute, resolved 4 minutes later, while the
        // incident goes on; then a second anomaly for the same incident near its end.
        let mut em = life("a", 10, 10, Some(13));
        em.extend(life("b", 18, 18, Some(21)));
        let s = score_incident(&incident(), &em);
        assert!(s.detected);
        assert_eq!(s.delay, Some(0));
        assert!((s.coverage - 0.2).abs() < 1e-12);
        assert_eq!(s.anomalies, 2.0, "two anomalies for one incident");
        assert_eq!(s.resolve, Some(2), "the last one resolved at 22");
        let s = score_incident(&incident(), &life("a", 10, 10, Some(13)));
        assert_eq!(s.resolve, Some(-6), "resolved at 14, 6 minutes before the end");
    }

    #[test]
    fn anomalies_on_other_series_before_the_incident_or_after_its_late_margin_do_not_count() {
        let mut em = vec![e("c", "auth_code_rate", AnomalyState::Firing, 11)];
        em.extend(life("early", 2, 3, Some(6)));
        em.extend(life("late", 20 + LATE_MINUTES, 25, Some(28)));
        let s = score_incident(&incident(), &em);
        assert!(!s.detected);
        assert_eq!((s.delay, s.resolve, s.coverage, s.anomalies), (None, None, 0.0, 0.0));
        // One minute after the end still counts (within the late margin), with coverage 0.
        let s = score_incident(&incident(), &life("x", 21, 21, Some(24)));
        assert!(s.detected);
        assert_eq!((s.delay, s.coverage), (Some(11), 0.0));
    }

    #[test]
    fn an_anomaly_already_open_at_onset_counts_with_delay_zero_and_one_never_resolved_is_flagged() {
        let s = score_incident(&incident(), &life("a", 7, 25, None));
        assert!(s.detected && s.unresolved);
        assert_eq!((s.delay, s.resolve), (Some(0), None));
        assert_eq!(s.coverage, 1.0);
    }

    #[test]
    fn anomalies_on_the_series_an_incident_may_lift_are_counted_as_related_not_unexplained() {
        let mut truth = incident();
        truth.may_also.push(RuleRef::new("denied_rate", "merchant", "*"));
        let mut em = life("a", 11, 19, Some(22));
        for (id, m) in [("m1", "m-1"), ("m2", "m-2")] {
            em.push(Emission {
                dimension: "merchant".into(),
                value: m.into(),
                ..e(id, "denied_rate", AnomalyState::Firing, 12)
            });
        }
        em.push(e("c", "auth_code_rate", AnomalyState::Firing, 30));
        let s = score_incident(&truth, &em);
        assert_eq!(s.related, 2, "the merchants, not the auth code after the late margin");
        assert!(unexplained(&truth, &em).is_empty());
    }

    #[test]
    fn anomalies_on_series_the_incident_does_not_touch_are_unexplained() {
        let mut em = life("a", 11, 19, Some(22));
        em.push(e("c", "auth_code_rate", AnomalyState::Firing, 12));
        em.push(Emission {
            dimension: "merchant".into(),
            value: "m-9".into(),
            ..e("m", "failed_rate", AnomalyState::Firing, 40)
        });
        assert_eq!(unexplained(&incident(), &em), vec![("m".to_string(), "merchant".to_string())]);
    }

    #[test]
    fn false_alarms_count_distinct_anomalies_of_every_series() {
        let mut em = life("a", 100, 102, Some(105));
        em.push(e("c", "auth_code_rate", AnomalyState::Firing, 300));
        assert_eq!(false_alarms(&em), vec!["a".to_string(), "c".to_string()]);
    }

    #[test]
    fn a_cell_summary_takes_recall_quantiles_and_means_over_its_runs() {
        let hit = |delay, coverage, anomalies, resolve| IncidentScore {
            detected: true,
            delay: Some(delay),
            coverage,
            anomalies,
            resolve: Some(resolve),
            unresolved: false,
            related: 0,
        };
        let miss = IncidentScore::miss();
        let s = summarise(&[hit(0, 1.0, 1.0, 3), hit(2, 0.8, 1.0, 3), hit(4, 0.6, 2.0, 5), miss]);
        assert_eq!(s.runs, 4);
        assert_eq!(s.recall, 0.75);
        assert_eq!(s.delay_median, Some(2.0));
        assert!((s.delay_p90.unwrap() - 3.6).abs() < 1e-12);
        assert_eq!(s.delay_max, Some(4));
        assert!((s.coverage_mean - 0.6).abs() < 1e-12);
        assert_eq!(s.coverage_min, 0.0);
        assert!((s.anomalies_mean.unwrap() - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.resolve_median, Some(3.0));
        assert_eq!((s.resolve_min, s.resolve_max), (Some(3), Some(5)));
    }
}
