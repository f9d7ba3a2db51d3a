//! The filters of `GET /alerts`, read from its query parameters: each bad value is a
//! [`FieldError`] naming its parameter, and every bad one is reported at once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use vigil_common::problem::FieldError;
use vigil_schemas::{AnomalyRule, AnomalyState, Severity};

use super::err;
use super::store::AnomalyFilter;

/// The query parameters `GET /alerts` takes, filters and pagination.
pub const PARAMETERS: [&str; 14] = [
    "limit",
    "cursor",
    "transaction_id",
    "rule",
    "severity",
    "min_severity",
    "state",
    "merchant_id",
    "since",
    "from",
    "to",
    "triage_state",
    "assignee",
    "silenced",
];

/// Longest `transaction_id` accepted: the producer's longest (an Idempotency-Key's).
pub const MAX_TRANSACTION_ID_CHARS: usize = 255;
/// Longest `merchant_id` accepted: the producer's longest.
pub const MAX_MERCHANT_ID_CHARS: usize = 128;

const SEVERITIES: [Severity; 3] = [Severity::Medium, Severity::High, Severity::Critical];
const STATES: [AnomalyState; 3] = [AnomalyState::Firing, AnomalyState::Updated, AnomalyState::Resolved];

/// Every rule the detector emits, in the order the schema declares them.
pub fn rules() -> [AnomalyRule; 8] {
    // Exhaustive on purpose: a rule added to the schema fails this build until it is listed.
    fn listed(r: AnomalyRule) {
        match r {
            AnomalyRule::DeniedRate
            | AnomalyRule::FailedRate
            | AnomalyRule::ReversedRate
            | AnomalyRule::AuthCodeRate
            | AnomalyRule::AmountZscore
            | AnomalyRule::AmountLowVariance
            | AnomalyRule::VolumeDrop
            | AnomalyRule::VolumeSurge => {}
        }
    }
    let all = [
        AnomalyRule::DeniedRate,
        AnomalyRule::FailedRate,
        AnomalyRule::ReversedRate,
        AnomalyRule::AuthCodeRate,
        AnomalyRule::AmountZscore,
        AnomalyRule::AmountLowVariance,
        AnomalyRule::VolumeDrop,
        AnomalyRule::VolumeSurge,
    ];
    all.iter().copied().for_each(listed);
    all
}

/// A comma-separated list of names out of `known`, as the stored strings.
fn one_of(
    params: &HashMap<&'static str, String>,
    name: &str,
    known: &[&'static str],
    errors: &mut Vec<FieldError>,
) -> Option<Vec<String>> {
    let raw = params.get(name)?;
    let mut out = Vec::new();
    for s in raw.split(',').map(str::trim) {
        match known.iter().find(|k| **k == s) {
            Some(k) => out.push((*k).to_owned()),
            None => errors.push(err(name, format!("{s:?} is not one of {}", known.join(", ")))),
        }
    }
    Some(out)
}

/// An exact identifier: compared as given (not trimmed), 1 to `max` characters.
fn exact(
    params: &HashMap<&'static str, String>,
    name: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let raw = params.get(name)?;
    let chars = raw.chars().count();
    if chars == 0 || chars > max {
        errors.push(err(name, format!("must be 1 to {max} characters, compared exactly")));
        return None;
    }
    Some(raw.clone())
}

fn time(params: &HashMap<&'static str, String>, name: &str, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let raw = params.get(name)?;
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| errors.push(err(name, format!("must be an RFC 3339 time such as 2026-11-22T10:00:00Z ({e})"))))
        .ok()
}

/// The filter the parameters describe; bad values are added to `errors`.
pub fn anomaly_filter(params: &HashMap<&'static str, String>, errors: &mut Vec<FieldError>) -> AnomalyFilter {
    let severity_names = SEVERITIES.map(Severity::as_str);
    let rule_names = rules().map(AnomalyRule::as_str);
    let state_names = STATES.map(AnomalyState::as_str);
    let min_severity = params.get("min_severity").and_then(|raw| match Severity::parse(raw.trim()) {
        Some(min) => Some(SEVERITIES.iter().filter(|s| **s >= min).map(|s| s.as_str().to_owned()).collect::<Vec<_>>()),
        None => {
            errors.push(err("min_severity", format!("{raw:?} is not one of {}", severity_names.join(", "))));
            None
        }
    });
    // Both given: the severities both allow (possibly none).
    let severities = match (one_of(params, "severity", &severity_names, errors), min_severity) {
        (Some(listed), Some(min)) => Some(listed.into_iter().filter(|s| min.contains(s)).collect()),
        (listed, min) => listed.or(min),
    };
    let from = time(params, "from", errors);
    let to = time(params, "to", errors);
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            errors.push(err(
                "from",
                format!("{} is after to ({}): the range would be empty", f.to_rfc3339(), t.to_rfc3339()),
            ));
        }
    }
    AnomalyFilter {
        transaction_id: exact(params, "transaction_id", MAX_TRANSACTION_ID_CHARS, errors),
        rules: one_of(params, "rule", &rule_names, errors),
        severities,
        states: one_of(params, "state", &state_names, errors),
        merchant_id: exact(params, "merchant_id", MAX_MERCHANT_ID_CHARS, errors),
        since: time(params, "since", errors),
        from,
        to,
        triage_states: one_of(params, "triage_state", &["open", "acknowledged", "closed"], errors),
        assignee: exact(params, "assignee", 64, errors),
        silenced: one_of(params, "silenced", &["true", "false"], errors).and_then(|v| match v.as_slice() {
            [one] => Some(one == "true"),
            // An unknown value is already reported by one_of.
            [] => None,
            _ => {
                errors.push(err("silenced", "one of true or false, not both"));
                None
            }
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&'static str, &str)]) -> (AnomalyFilter, Vec<String>) {
        let params: HashMap<&'static str, String> = pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut errors = Vec::new();
        let f = anomaly_filter(&params, &mut errors);
        (f, errors.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn min_severity_means_that_severity_and_every_higher_one_and_narrows_a_severity_list() {
        let (f, errors) = parse(&[("min_severity", "high")]);
        assert!(errors.is_empty());
        assert_eq!(f.severities.unwrap(), ["high", "critical"]);
        let (f, _) = parse(&[("min_severity", "medium")]);
        assert_eq!(f.severities.unwrap(), ["medium", "high", "critical"]);
        let (f, _) = parse(&[("min_severity", "high"), ("severity", "medium,critical")]);
        assert_eq!(f.severities.unwrap(), ["critical"]);
        let (f, _) = parse(&[("min_severity", "critical"), ("severity", "medium")]);
        assert_eq!(f.severities.unwrap(), Vec::<String>::new());
        assert_eq!(parse(&[("min_severity", "high,critical")]).1, ["min_severity"]);
    }

    #[test]
    fn every_rule_the_schema_names_is_accepted_and_others_are_refused() {
        for r in rules() {
            let (f, errors) = parse(&[("rule", r.as_str())]);
            assert!(errors.is_empty(), "{}", r.as_str());
            assert_eq!(f.rules.unwrap(), [r.as_str()]);
        }
        let (f, _) = parse(&[("rule", "denied_rate, volume_drop")]);
        assert_eq!(f.rules.unwrap(), ["denied_rate", "volume_drop"]);
        assert_eq!(parse(&[("rule", "denied")]).1, ["rule"]);
        assert_eq!(parse(&[("state", "open")]).1, ["state"]);
        assert_eq!(parse(&[("severity", "high,")]).1, ["severity"]);
        let (f, _) = parse(&[("triage_state", "open,closed")]);
        assert_eq!(f.triage_states.unwrap(), ["open", "closed"]);
        assert_eq!(parse(&[("triage_state", "firing")]).1, ["triage_state"]);
    }

    #[test]
    fn identifiers_are_exact_and_bounded() {
        let (f, errors) = parse(&[("transaction_id", " tx-1"), ("merchant_id", "m-1")]);
        assert!(errors.is_empty());
        assert_eq!(f.transaction_id.as_deref(), Some(" tx-1"));
        assert_eq!(f.merchant_id.as_deref(), Some("m-1"));
        assert_eq!(parse(&[("transaction_id", "")]).1, ["transaction_id"]);
        let long = "é".repeat(MAX_MERCHANT_ID_CHARS + 1);
        assert_eq!(parse(&[("merchant_id", &long)]).1, ["merchant_id"]);
        let longest = "é".repeat(MAX_MERCHANT_ID_CHARS);
        assert!(parse(&[("merchant_id", &longest)]).1.is_empty());
    }

    #[test]
    fn a_range_that_ends_before_it_starts_is_refused_naming_from_and_an_empty_one_is_allowed() {
        assert_eq!(parse(&[("from", "2026-12-05T10:00:00Z"), ("to", "2026-12-05T09:59:59Z")]).1, ["from"]);
        assert!(parse(&[("from", "2026-12-05T10:00:00Z"), ("to", "2026-12-05T10:00:00Z")]).1.is_empty());
        // Offsets are times too: 11:00+01:00 is 10:00Z.
        assert!(parse(&[("from", "2026-12-05T10:00:00Z"), ("to", "2026-12-05T11:00:00+01:00")]).1.is_empty());
        assert_eq!(parse(&[("from", "yesterday"), ("to", "2026-13-01T00:00:00Z")]).1, ["from", "to"]);
    }
}
