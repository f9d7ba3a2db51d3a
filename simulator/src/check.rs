//! `vigil-check`: grades the detector's anomalies (the `anomalies` table) against a run's
//! ground truth.
//!
//! * A **rate incident** is detected by an anomaly of each expected rule, dimension and value
//!   whose onset (`first_seen`, the start of its first anomalous window) lies in the incident's
//!   span, rounded out to whole minutes. The delay is the number of windows between the minute
//!   the incident began and that onset; more than `max_delay_windows` is **late**.
//! * An **amount outlier** is detected by an anomaly for its transaction id in each baseline
//!   (category, merchant) where the ground truth predicts one with confidence, with the
//!   predicted severity. Where it predicts none with confidence, an anomaly is **unexpected**;
//!   where the z lies near a tier boundary, any outcome is accepted.
//! * Anomalies an incident explains without requiring (e.g. the share of a denial code during
//!   a denied spike) are listed with it.
//! * Every other anomaly whose onset lies in the run's event time is a **false alarm**.
//!   Anomalies outside the run's event time are not considered (the table may hold other runs).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::Result;
use crate::scenario::MINUTE_MS;
use crate::truth::{GroundTruth, IncidentTruth, RuleRef};

/// One row of the `anomalies` table, as far as grading needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AnomalyRow {
    pub id: String,
    pub rule: String,
    pub dimension: String,
    pub dimension_value: String,
    pub window_start: Option<DateTime<Utc>>,
    pub transaction_id: Option<String>,
    pub severity: String,
    pub state: String,
    pub score: f64,
    pub first_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckOptions {
    /// Largest accepted delay between an incident's first minute and the anomaly's first window.
    pub max_delay_windows: i64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { max_delay_windows: 2 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing expected (no rule watches this), nothing required.
    Unchecked,
    /// Nothing expected and nothing seen.
    Quiet,
    Detected,
    Late,
    WrongSeverity,
    /// An anomaly where the ground truth confidently predicts none.
    Unexpected,
    Missed,
}

impl Verdict {
    pub fn failed(self) -> bool {
        matches!(self, Verdict::Late | Verdict::WrongSeverity | Verdict::Unexpected | Verdict::Missed)
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Unchecked => "UNCHECKED",
            Verdict::Quiet => "QUIET",
            Verdict::Detected => "DETECTED",
            Verdict::Late => "LATE",
            Verdict::WrongSeverity => "WRONG SEVERITY",
            Verdict::Unexpected => "UNEXPECTED",
            Verdict::Missed => "MISSED",
        }
    }
}

/// One expectation of an incident and what the detector did about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `rule:dimension:value`, with `:<transaction id>` for amount outliers.
    pub expected: String,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_severity: Option<String>,
    /// The first matching anomaly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly_id: Option<String>,
    /// How many anomalies matched (one per incident is the ideal).
    pub matching_anomalies: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_window: Option<DateTime<Utc>>,
    /// Event-time windows (minutes) between the incident's first minute and the first window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_windows: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentReport {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    /// Anomalies this incident explains without requiring them.
    pub also: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub max_delay_windows: i64,
    pub passed: bool,
    pub incidents: Vec<IncidentReport>,
    pub false_alarms: Vec<AnomalyRow>,
    /// Anomalies with onset in the run's event time.
    pub anomalies_considered: usize,
}

fn floor_minute(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis().div_euclid(MINUTE_MS) * MINUTE_MS
}

fn ceil_minute(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    ms.div_euclid(MINUTE_MS) * MINUTE_MS + if ms.rem_euclid(MINUTE_MS) == 0 { 0 } else { MINUTE_MS }
}

fn matches_rule(a: &AnomalyRow, r: &RuleRef) -> bool {
    a.rule == r.rule && a.dimension == r.dimension && (r.value == "*" || a.dimension_value == r.value)
}

const AMOUNT_RULES: [&str; 2] = ["amount_zscore", "amount_low_variance"];

/// Grades `anomalies` against `truth`. Pure: no database, no clock.
pub fn classify(truth: &GroundTruth, anomalies: &[AnomalyRow], opts: &CheckOptions) -> Report {
    let (from, to) = (truth.start, truth.end);
    let considered: Vec<&AnomalyRow> = anomalies.iter().filter(|a| a.first_seen >= from && a.first_seen < to).collect();
    let mut explained: BTreeSet<&str> = BTreeSet::new();
    let mut incidents = Vec::new();
    for inc in &truth.incidents {
        let r = grade_incident(inc, &considered, opts, &mut explained);
        incidents.push(r);
    }
    let false_alarms: Vec<AnomalyRow> =
        considered.iter().filter(|a| !explained.contains(a.id.as_str())).map(|a| (*a).clone()).collect();
    let passed = false_alarms.is_empty() && incidents.iter().all(|i| !i.verdict.failed());
    Report {
        scenario: truth.scenario.clone(),
        seed: truth.seed,
        start: from,
        end: to,
        max_delay_windows: opts.max_delay_windows,
        passed,
        incidents,
        false_alarms,
        anomalies_considered: considered.len(),
    }
}

fn grade_incident<'a>(
    inc: &IncidentTruth,
    rows: &[&'a AnomalyRow],
    opts: &CheckOptions,
    explained: &mut BTreeSet<&'a str>,
) -> IncidentReport {
    let (lo, hi) = (floor_minute(inc.start), ceil_minute(inc.end));
    let in_span = |a: &AnomalyRow| {
        let t = a.first_seen.timestamp_millis();
        t >= lo && t < hi
    };
    let mut findings = Vec::new();
    for rule in &inc.expected {
        let mut hits: Vec<&&AnomalyRow> = rows.iter().filter(|a| matches_rule(a, rule) && in_span(a)).collect();
        hits.sort_by_key(|a| (a.first_seen, a.id.clone()));
        for h in &hits {
            explained.insert(h.id.as_str());
        }
        let finding = match hits.first() {
            None => Finding {
                expected: rule.to_string(),
                verdict: Verdict::Missed,
                expected_severity: None,
                anomaly_id: None,
                matching_anomalies: 0,
                first_window: None,
                delay_windows: None,
                severity: None,
                resolved_at: None,
            },
            Some(a) => {
                let delay = (a.first_seen.timestamp_millis() - lo).div_euclid(MINUTE_MS);
                Finding {
                    expected: rule.to_string(),
                    verdict: if delay <= opts.max_delay_windows { Verdict::Detected } else { Verdict::Late },
                    expected_severity: None,
                    anomaly_id: Some(a.id.clone()),
                    matching_anomalies: hits.len(),
                    first_window: Some(a.first_seen),
                    delay_windows: Some(delay),
                    severity: Some(a.severity.clone()),
                    resolved_at: if a.state == "resolved" { a.resolved_at } else { None },
                }
            }
        };
        findings.push(finding);
    }
    for o in &inc.outliers {
        for e in &o.expectations {
            let hits: Vec<&&AnomalyRow> = rows
                .iter()
                .filter(|a| {
                    AMOUNT_RULES.contains(&a.rule.as_str())
                        && a.transaction_id.as_deref() == Some(o.transaction_id.as_str())
                        && a.dimension == e.dimension
                        && a.dimension_value == e.value
                })
                .collect();
            let hit = hits.first();
            let expected_severity = e.severity.map(|s| s.as_str().to_owned());
            let verdict = match (e.certain, &expected_severity, hit) {
                (true, Some(want), Some(a)) if a.severity == *want => Verdict::Detected,
                (true, Some(_), Some(_)) => Verdict::WrongSeverity,
                (true, Some(_), None) => Verdict::Missed,
                (true, None, Some(_)) => Verdict::Unexpected,
                (_, _, None) => Verdict::Quiet,
                (false, _, Some(_)) => Verdict::Detected,
            };
            // An unexpected anomaly is not explained: it is also listed as a false alarm.
            if verdict != Verdict::Unexpected {
                for h in &hits {
                    explained.insert(h.id.as_str());
                }
            }
            findings.push(Finding {
                expected: format!("amount_zscore:{}:{}:{}", e.dimension, e.value, o.transaction_id),
                verdict,
                expected_severity: if e.certain {
                    Some(expected_severity.unwrap_or_else(|| "none".into()))
                } else {
                    Some(format!("any (z = {:.2} is near a tier boundary)", e.z))
                },
                anomaly_id: hit.map(|a| a.id.clone()),
                matching_anomalies: hits.len(),
                first_window: None,
                delay_windows: hit.map(|_| 0),
                severity: hit.map(|a| a.severity.clone()),
                resolved_at: None,
            });
        }
    }
    let mut also = Vec::new();
    for rule in &inc.may_also {
        for a in rows.iter().filter(|a| matches_rule(a, rule) && in_span(a)) {
            if explained.insert(a.id.as_str()) {
                also.push(a.id.clone());
            }
        }
    }
    let verdict = if findings.is_empty() {
        Verdict::Unchecked
    } else {
        findings.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Unchecked)
    };
    IncidentReport {
        id: inc.id.clone(),
        name: inc.name.clone(),
        kind: inc.kind.clone(),
        start: inc.start,
        end: inc.end,
        verdict,
        findings,
        also,
        note: inc.note.clone(),
    }
}

/// Reads the anomalies whose onset lies in `[from, to)`.
pub async fn load_anomalies(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<AnomalyRow>> {
    Ok(sqlx::query_as::<_, AnomalyRow>(
        "SELECT id, rule, dimension, dimension_value, window_start, transaction_id, severity, state, score,
                first_seen, resolved_at, message
         FROM anomalies WHERE first_seen >= $1 AND first_seen < $2 ORDER BY first_seen, id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// Reads the anomalies of a `detector replay` output (NDJSON; other lines are skipped), the
/// latest state (highest sequence) of each, as the sink would store them.
pub fn anomalies_from_replay(ndjson: &str) -> std::result::Result<Vec<AnomalyRow>, String> {
    let mut latest: std::collections::BTreeMap<String, (i64, AnomalyRow)> = std::collections::BTreeMap::new();
    for (i, line) in ndjson.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if v["type"] != "anomaly" {
            continue;
        }
        let a: vigil_schemas::Anomaly =
            serde_json::from_value(v["value"].clone()).map_err(|e| format!("line {}: not an anomaly: {e}", i + 1))?;
        let ms = |t: i64| DateTime::from_timestamp_millis(t).unwrap_or_default();
        let row = AnomalyRow {
            id: a.id.clone(),
            rule: a.rule.as_str().into(),
            dimension: a.dimension.as_str().into(),
            dimension_value: a.dimension_value,
            window_start: a.window_start.map(ms),
            transaction_id: a.transaction_id,
            severity: a.severity.as_str().into(),
            state: a.state.as_str().into(),
            score: a.score,
            first_seen: ms(a.first_seen),
            resolved_at: a.resolved_at.map(ms),
            message: a.message,
        };
        match latest.get(&a.id) {
            Some((seq, _)) if *seq >= a.sequence => {}
            _ => {
                latest.insert(a.id, (a.sequence, row));
            }
        }
    }
    let mut rows: Vec<AnomalyRow> = latest.into_values().map(|(_, r)| r).collect();
    rows.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
    Ok(rows)
}

/// Loads the anomalies of the run's event time and grades them.
pub async fn check(truth: &GroundTruth, pool: &PgPool, opts: &CheckOptions) -> Result<Report> {
    let rows = load_anomalies(pool, truth.start, truth.end).await?;
    Ok(classify(truth, &rows, opts))
}

fn hm(t: DateTime<Utc>) -> String {
    t.format("%H:%M").to_string()
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Failed findings and false alarms, one line each (for assertion messages).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in &self.incidents {
            for f in i.findings.iter().filter(|f| f.verdict.failed()) {
                out.push(format!("incident {} ({}): {} {}", i.id, i.name, f.verdict.label(), f.expected));
            }
        }
        for a in &self.false_alarms {
            out.push(format!("false alarm {} ({}): {}", a.id, a.severity, a.message));
        }
        out
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Scenario {} (seed {}), event time {} to {} UTC: {} anomalies with onset in that span.",
            self.scenario,
            self.seed,
            self.start.format("%Y-%m-%d %H:%M"),
            self.end.format("%Y-%m-%d %H:%M"),
            self.anomalies_considered
        );
        for i in &self.incidents {
            let _ = writeln!(
                s,
                "\n[{}] incident {} {} ({}), {}–{} UTC",
                i.verdict.label(),
                i.id,
                i.name,
                i.kind,
                hm(i.start),
                hm(i.end)
            );
            if let Some(n) = &i.note {
                let _ = writeln!(s, "    note: {n}");
            }
            for f in &i.findings {
                let mut line = format!("    {:<14} {}", f.verdict.label(), f.expected);
                if let Some(d) = f.delay_windows.filter(|_| f.first_window.is_some()) {
                    let _ = write!(line, ", first window {} (+{d} min)", f.first_window.map(hm).unwrap_or_default());
                }
                if let Some(sev) = &f.severity {
                    let _ = write!(line, ", severity {sev}");
                }
                if let Some(want) = &f.expected_severity {
                    let _ = write!(line, " (expected {want})");
                }
                if f.first_window.is_some() {
                    match f.resolved_at {
                        Some(r) => {
                            let _ = write!(line, ", resolved {}", hm(r));
                        }
                        None => line.push_str(", not resolved"),
                    }
                }
                if f.matching_anomalies > 1 {
                    let _ = write!(line, ", {} anomalies", f.matching_anomalies);
                }
                let _ = writeln!(s, "{line}");
            }
            if !i.also.is_empty() {
                let _ = writeln!(s, "    also explained: {}", i.also.join(", "));
            }
        }
        if self.false_alarms.is_empty() {
            let _ = writeln!(s, "\nFalse alarms: none.");
        } else {
            let _ = writeln!(s, "\nFalse alarms ({}):", self.false_alarms.len());
            for a in &self.false_alarms {
                let _ = writeln!(s, "    {} [{}] {}", a.id, a.severity, a.message);
            }
        }
        let checked = self.incidents.iter().filter(|i| i.verdict != Verdict::Unchecked).count();
        let ok = self.incidents.iter().filter(|i| i.verdict != Verdict::Unchecked && !i.verdict.failed()).count();
        let _ = writeln!(
            s,
            "\n{}: {ok} of {checked} checkable incidents as expected (delay ≤ {} windows), {} false alarm{}.",
            if self.passed { "PASS" } else { "FAIL" },
            self.max_delay_windows,
            self.false_alarms.len(),
            if self.false_alarms.len() == 1 { "" } else { "s" }
        );
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::amounts::AmountTiers;
    use crate::truth::{AmountExpectation, OutlierTruth};

    fn t(hm: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-01-05T{hm}:00Z")).map(|t| t.with_timezone(&Utc)).unwrap()
    }

    fn row(
        id: &str,
        rule: &str,
        dim: &str,
        value: &str,
        onset: &str,
        severity: &str,
        resolved: Option<&str>,
    ) -> AnomalyRow {
        AnomalyRow {
            id: id.into(),
            rule: rule.into(),
            dimension: dim.into(),
            dimension_value: value.into(),
            window_start: Some(t(onset)),
            transaction_id: None,
            severity: severity.into(),
            state: if resolved.is_some() { "resolved".into() } else { "firing".into() },
            score: 10.0,
            first_seen: t(onset),
            resolved_at: resolved.map(t),
            message: format!("{id} message"),
        }
    }

    fn spike(id: &str, rule: &str, start: &str, end: &str) -> IncidentTruth {
        IncidentTruth {
            id: id.into(),
            iteration: 0,
            name: format!("{rule} spike"),
            kind: "rate_spike".into(),
            start: t(start),
            end: t(end),
            dimension: "global".into(),
            value: "x".into(),
            expected: vec![RuleRef::new(rule, "global", "all")],
            may_also: vec![RuleRef::new("auth_code_rate", "auth_code", "05")],
            outliers: vec![],
            note: None,
        }
    }

    fn outlier(id: &str, tx: &str, z_m: f64, z_c: f64) -> IncidentTruth {
        let tiers = AmountTiers::default();
        let e = |d: &str, v: &str, z: f64| AmountExpectation {
            dimension: d.into(),
            value: v.into(),
            z,
            severity: tiers.emitted(z),
            certain: tiers.certain(z),
        };
        IncidentTruth {
            id: id.into(),
            iteration: 0,
            name: "outlier".into(),
            kind: "amount_outlier".into(),
            start: t("12:40"),
            end: t("12:41"),
            dimension: "merchant".into(),
            value: "m-1".into(),
            expected: vec![],
            may_also: vec![],
            outliers: vec![OutlierTruth {
                transaction_id: tx.into(),
                occurred_at: t("12:40"),
                category: "food".into(),
                merchant_id: "m-1".into(),
                amount_minor: 99_999,
                expectations: vec![e("category", "food", z_c), e("merchant", "m-1", z_m)],
            }],
            note: None,
        }
    }

    fn amount_row(id: &str, dim: &str, value: &str, tx: &str, severity: &str) -> AnomalyRow {
        let mut r = row(id, "amount_zscore", dim, value, "12:40", severity, None);
        r.transaction_id = Some(tx.into());
        r.window_start = None;
        r
    }

    fn truth(incidents: Vec<IncidentTruth>) -> GroundTruth {
        GroundTruth {
            scenario: "t".into(),
            seed: 1,
            start: t("12:00"),
            end: t("13:00"),
            iterations: 1,
            amount_tiers: AmountTiers::default(),
            incidents,
        }
    }

    #[test]
    fn a_spike_found_at_onset_is_detected_with_its_delay_severity_and_resolution() {
        let gt = truth(vec![spike("0.0", "denied_rate", "12:30", "12:33")]);
        let rows = vec![
            row(
                "denied_rate:global:all:2026-01-05T12:31Z",
                "denied_rate",
                "global",
                "all",
                "12:31",
                "high",
                Some("12:36"),
            ),
            row("auth_code_rate:auth_code:05:x", "auth_code_rate", "auth_code", "05", "12:30", "medium", None),
        ];
        let r = classify(&gt, &rows, &CheckOptions::default());
        assert!(r.passed, "{}", r.human());
        let f = &r.incidents[0].findings[0];
        assert_eq!(f.verdict, Verdict::Detected);
        assert_eq!(f.delay_windows, Some(1));
        assert_eq!(f.severity.as_deref(), Some("high"));
        assert_eq!(f.resolved_at, Some(t("12:36")));
        assert_eq!(r.incidents[0].also, vec!["auth_code_rate:auth_code:05:x".to_string()]);
        assert!(r.false_alarms.is_empty());
    }

    #[test]
    fn a_spike_found_after_the_allowed_delay_is_late_and_fails() {
        let gt = truth(vec![spike("0.0", "failed_rate", "12:30", "12:40")]);
        let rows = vec![row("f", "failed_rate", "global", "all", "12:33", "high", None)];
        let r = classify(&gt, &rows, &CheckOptions { max_delay_windows: 2 });
        assert_eq!(r.incidents[0].verdict, Verdict::Late);
        assert!(!r.passed);
        let r = classify(&gt, &rows, &CheckOptions { max_delay_windows: 3 });
        assert_eq!(r.incidents[0].verdict, Verdict::Detected);
        assert!(r.human().contains("not resolved"));
    }

    #[test]
    fn a_spike_without_a_matching_anomaly_is_missed_and_others_are_false_alarms() {
        let gt = truth(vec![spike("0.0", "reversed_rate", "12:30", "12:33")]);
        let rows = vec![
            // Right rule, but its onset is outside the span.
            row("r-early", "reversed_rate", "global", "all", "12:20", "high", None),
            // Inside the span, wrong rule.
            row("d", "denied_rate", "global", "all", "12:31", "high", None),
            // Outside the run's event time: not considered at all.
            row("old", "denied_rate", "global", "all", "11:00", "high", None),
        ];
        let r = classify(&gt, &rows, &CheckOptions::default());
        assert_eq!(r.incidents[0].verdict, Verdict::Missed);
        let fa: Vec<&str> = r.false_alarms.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(fa, ["r-early", "d"]);
        assert_eq!(r.anomalies_considered, 2);
        assert!(!r.passed);
        assert_eq!(r.failures().len(), 3, "{:?}", r.failures());
    }

    #[test]
    fn amount_outliers_need_their_predicted_tier_per_baseline() {
        let gt = truth(vec![outlier("0.0", "tx-1", 8.0, 7.8)]);
        let good = vec![
            amount_row("a1", "merchant", "m-1", "tx-1", "critical"),
            amount_row("a2", "category", "food", "tx-1", "critical"),
        ];
        let r = classify(&gt, &good, &CheckOptions::default());
        assert!(r.passed, "{}", r.human());
        assert_eq!(r.incidents[0].verdict, Verdict::Detected);

        let wrong = vec![amount_row("a1", "merchant", "m-1", "tx-1", "high")];
        let r = classify(&gt, &wrong, &CheckOptions::default());
        let verdicts: Vec<Verdict> = r.incidents[0].findings.iter().map(|f| f.verdict).collect();
        assert_eq!(verdicts, [Verdict::Missed, Verdict::WrongSeverity]);
        assert!(!r.passed);
    }

    #[test]
    fn an_amount_anomaly_where_none_is_predicted_is_unexpected_and_a_boundary_case_accepts_anything() {
        // Merchant z 4 (high, certain); category z 2 (nothing, certain).
        let gt = truth(vec![outlier("0.0", "tx-2", 4.0, 2.0)]);
        let rows = vec![
            amount_row("a1", "merchant", "m-1", "tx-2", "high"),
            amount_row("a2", "category", "food", "tx-2", "high"),
        ];
        let r = classify(&gt, &rows, &CheckOptions::default());
        assert_eq!(r.incidents[0].findings[0].verdict, Verdict::Unexpected);
        assert_eq!(r.false_alarms.len(), 1);
        assert!(!r.passed);

        // Category z 3.2: too near the high boundary to predict; either outcome passes.
        let gt = truth(vec![outlier("0.0", "tx-3", 4.0, 3.2)]);
        for rows in [
            vec![amount_row("a1", "merchant", "m-1", "tx-3", "high")],
            vec![
                amount_row("a1", "merchant", "m-1", "tx-3", "high"),
                amount_row("a2", "category", "food", "tx-3", "high"),
            ],
        ] {
            let r = classify(&gt, &rows, &CheckOptions::default());
            assert!(r.passed, "{}", r.human());
        }
    }

    #[test]
    fn an_unchecked_incident_neither_passes_nor_fails_a_run() {
        let mut dark = spike("0.1", "x", "12:10", "12:20");
        dark.kind = "merchant_dark".into();
        dark.expected.clear();
        dark.may_also.clear();
        dark.note = Some("no rule".into());
        let r = classify(&truth(vec![dark]), &[], &CheckOptions::default());
        assert_eq!(r.incidents[0].verdict, Verdict::Unchecked);
        assert!(r.passed);
        assert!(r.human().contains("UNCHECKED"));
    }

    #[test]
    fn the_report_reads_back_from_its_json() {
        let gt = truth(vec![spike("0.0", "denied_rate", "12:30", "12:33")]);
        let r = classify(&gt, &[], &CheckOptions::default());
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
