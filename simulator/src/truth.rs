//! The ground truth of a run: what was injected, when, and what the detector should say.
//!
//! Written as JSON by every run (`--ground-truth FILE`) and read by `vigil-check`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_schemas::{Severity, TransactionStatus};

use crate::amounts::AmountTiers;
use crate::error::{Error, Result};
use crate::scenario::{IncidentKind, OutlierTarget, Scenario, Scope};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub scenario: String,
    pub seed: u64,
    /// Event time of the first transaction's minute (inclusive).
    pub start: DateTime<Utc>,
    /// End of the event time generated so far (exclusive): the end of the last iteration begun.
    pub end: DateTime<Utc>,
    /// Scenario repetitions begun (more than one with `--loop`).
    pub iterations: u32,
    /// The detector tiers the amount expectations were computed with.
    pub amount_tiers: AmountTiers,
    pub incidents: Vec<IncidentTruth>,
}

/// An anomaly the detector may raise, by rule, dimension and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    pub rule: String,
    pub dimension: String,
    pub value: String,
}

impl RuleRef {
    pub fn new(rule: &str, dimension: &str, value: &str) -> Self {
        RuleRef { rule: rule.into(), dimension: dimension.into(), value: value.into() }
    }
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.rule, self.dimension, self.value)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentTruth {
    /// `<iteration>.<index in the scenario>`.
    pub id: String,
    pub iteration: u32,
    pub name: String,
    /// rate_spike, auth_code_surge, amount_outlier or volume (`merchant_dark` in a scenario is a
    /// volume incident; ground truth written before volume incidents existed says merchant_dark).
    pub kind: String,
    /// Event-time span, start inclusive, end exclusive.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// What the incident is about (e.g. global/denied, auth_code/51, merchant/m-1).
    pub dimension: String,
    pub value: String,
    /// Rate anomalies the detector must raise, with onset inside the span.
    pub expected: Vec<RuleRef>,
    /// Rate anomalies the incident explains but does not require (e.g. the share of a denial
    /// code rises with a denied spike).
    pub may_also: Vec<RuleRef>,
    /// Amount outliers: every injected transaction and its expected anomalies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outliers: Vec<OutlierTruth>,
    /// Why nothing is expected, when nothing is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl IncidentTruth {
    /// Whether the detector is expected to say anything about this incident.
    pub fn checkable(&self) -> bool {
        !self.expected.is_empty() || self.outliers.iter().any(|o| o.expectations.iter().any(|e| e.severity.is_some()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlierTruth {
    pub transaction_id: String,
    pub occurred_at: DateTime<Utc>,
    pub category: String,
    pub merchant_id: String,
    pub amount_minor: i64,
    /// One per baseline the detector judges it against (category and merchant).
    pub expectations: Vec<AmountExpectation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmountExpectation {
    /// category or merchant.
    pub dimension: String,
    pub value: String,
    /// z against the baseline's true mean and spread.
    pub z: f64,
    /// The anomaly severity the detector should emit; `None`: no anomaly (below the lowest
    /// emitted tier).
    pub severity: Option<Severity>,
    /// False when `z` lies within [`crate::amounts::TIER_MARGIN`] of a tier boundary: then any
    /// outcome on either side is accepted.
    pub certain: bool,
}

pub fn rate_rule(status: TransactionStatus) -> Option<&'static str> {
    match status {
        TransactionStatus::Approved => None,
        TransactionStatus::Denied => Some("denied_rate"),
        TransactionStatus::Failed => Some("failed_rate"),
        TransactionStatus::Reversed => Some("reversed_rate"),
    }
}

/// The volume rule a change of traffic by `factor` should raise: `volume_drop` below 1 (a stop
/// included), `volume_surge` above.
pub fn volume_rule(factor: f64) -> &'static str {
    if factor < 1.0 {
        "volume_drop"
    } else {
        "volume_surge"
    }
}

/// Auth codes the detector treats as approvals and does not watch.
pub const APPROVAL_CODES: [&str; 1] = ["00"];

/// Expected and possible rate anomalies of an incident, and a note when none is expected.
///
/// A scoped incident (one category or merchant) is expected on its scope's series of the
/// status it raises: a surge of one auth code at a merchant raises that merchant's rate of the
/// code's status (the detector watches auth codes globally, not per merchant). The series it
/// lifts may fire too: the wider ones (global, the merchant's category), the narrower ones
/// inside its scope (a global incident's categories and merchants, `*` matching any value; a
/// category's merchants) and the auth codes of its status. A spike or surge adds transactions
/// (it turns no approval into a denial), so the volume of its scope rises too: `volume_surge`
/// on its scope's series and the series that one lifts may fire.
///
/// A volume incident is expected on its scope's `volume_drop` (factor below 1) or
/// `volume_surge` series, and may lift the same rule's wider and narrower series.
pub fn expectations(kind: &IncidentKind, s: &Scenario) -> (String, String, Vec<RuleRef>, Vec<RuleRef>, Option<String>) {
    let watched = |c: &str| !APPROVAL_CODES.contains(&c);
    let codes_of = |st: TransactionStatus| s.codes(st).iter().map(|c| c.0.clone()).collect::<Vec<_>>();
    // The other series of the rule an incident in `scope` may lift: the wider ones (global, a
    // merchant's category) and the narrower ones inside it (every category and merchant for a
    // global incident, `*` matching any value; a category's merchants).
    let related = |rule: &str, scope: &Scope| -> Vec<RuleRef> {
        match scope {
            Scope::Global => vec![RuleRef::new(rule, "category", "*"), RuleRef::new(rule, "merchant", "*")],
            Scope::Category(c) => {
                let mut v = vec![RuleRef::new(rule, "global", "all")];
                if let Some(c) = s.category(c) {
                    v.extend(c.merchants.iter().map(|m| RuleRef::new(rule, "merchant", &m.id)));
                }
                v
            }
            Scope::Merchant(m) => {
                let mut v = Vec::new();
                if let Some((c, _)) = s.merchant(m) {
                    v.push(RuleRef::new(rule, "category", &c.name));
                }
                v.push(RuleRef::new(rule, "global", "all"));
                v
            }
        }
    };
    // The volume a spike or surge adds to its scope.
    let surge = |scope: &Scope| -> Vec<RuleRef> {
        let mut v = vec![RuleRef::new("volume_surge", scope.dimension(), scope.value())];
        v.extend(related("volume_surge", scope));
        v
    };
    match kind {
        IncidentKind::RateSpike { status, scope, .. } => {
            let mut may: Vec<RuleRef> = codes_of(*status)
                .iter()
                .filter(|c| watched(c))
                .map(|c| RuleRef::new("auth_code_rate", "auth_code", c))
                .collect();
            may.extend(surge(scope));
            let (d, v) = match scope {
                Scope::Global => ("global".to_owned(), status.to_string()),
                _ => (scope.dimension().to_owned(), scope.value().to_owned()),
            };
            match rate_rule(*status) {
                Some(rule) => {
                    may.extend(related(rule, scope));
                    (d, v, vec![RuleRef::new(rule, scope.dimension(), scope.value())], may, None)
                }
                None => (d, v, vec![], may, Some("no detector rule watches the approved rate".into())),
            }
        }
        IncidentKind::AuthCodeSurge { code, status, scope, .. } => {
            let rule = rate_rule(*status);
            match scope {
                Scope::Global => {
                    let mut may: Vec<RuleRef> =
                        rule.map(|r| vec![RuleRef::new(r, "global", "all")]).unwrap_or_default();
                    may.extend(rule.map(|r| related(r, scope)).unwrap_or_default());
                    may.extend(surge(scope));
                    if watched(code) {
                        let expected = vec![RuleRef::new("auth_code_rate", "auth_code", code)];
                        ("auth_code".into(), code.clone(), expected, may, None)
                    } else {
                        let note = format!("auth code {code} means approved; the detector does not watch it");
                        ("auth_code".into(), code.clone(), vec![], may, Some(note))
                    }
                }
                _ => {
                    let (d, v) = (scope.dimension().to_owned(), scope.value().to_owned());
                    let mut may = Vec::new();
                    if watched(code) {
                        may.push(RuleRef::new("auth_code_rate", "auth_code", code));
                    }
                    may.extend(surge(scope));
                    match rule {
                        Some(r) => {
                            may.extend(related(r, scope));
                            (d, v, vec![RuleRef::new(r, scope.dimension(), scope.value())], may, None)
                        }
                        None => {
                            let note = format!("auth code {code} means approved; no rule watches its scope's rate");
                            (d, v, vec![], may, Some(note))
                        }
                    }
                }
            }
        }
        IncidentKind::AmountOutlier { target, .. } => {
            let (d, v) = match target {
                OutlierTarget::Category(c) => ("category", c),
                OutlierTarget::Merchant(m) => ("merchant", m),
            };
            (d.into(), v.clone(), vec![], vec![], None)
        }
        IncidentKind::Volume { factor, scope } => {
            let rule = volume_rule(*factor);
            (
                scope.dimension().into(),
                scope.value().into(),
                vec![RuleRef::new(rule, scope.dimension(), scope.value())],
                related(rule, scope),
                None,
            )
        }
    }
}

impl GroundTruth {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn read(path: &str) -> Result<GroundTruth> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("Failed to read {path}"), e))?;
        serde_json::from_str(&text).map_err(|e| Error::GroundTruth { path: path.into(), message: e.to_string() })
    }

    /// Writes the file whole or not at all (a temporary file renamed over it), so a reader
    /// never sees half of it.
    pub fn write(&self, path: &str) -> Result<()> {
        write_atomically(path, &self.to_json())
    }
}

pub fn write_atomically(path: &str, text: &str) -> Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(format!("Failed to write {tmp}"), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("Failed to rename {tmp} to {path}"), e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_expects_volume_drop_and_a_surge_volume_surge_on_the_incidents_scope() {
        assert_eq!(
            (volume_rule(0.0), volume_rule(0.5), volume_rule(2.0)),
            ("volume_drop", "volume_drop", "volume_surge")
        );
        // The built-in `mixed` scenario's merchant going dark, once recorded with a note only.
        let s = Scenario::builtin("mixed").unwrap();
        let dark = s.incidents.iter().find(|i| i.name.ends_with("goes dark")).unwrap();
        let (dimension, value, expected, may, note) = expectations(&dark.kind, &s);
        assert_eq!((dimension.as_str(), value.as_str(), note), ("merchant", "m-rest-2", None));
        assert_eq!(expected, [RuleRef::new("volume_drop", "merchant", "m-rest-2")]);
        assert!(may.contains(&RuleRef::new("volume_drop", "global", "all")), "{may:?}");
        assert!(may.iter().all(|r| r.rule == "volume_drop"), "{may:?}");
        let surge = IncidentKind::Volume { factor: 3.0, scope: Scope::Global };
        let (_, _, expected, may, _) = expectations(&surge, &s);
        assert_eq!(expected, [RuleRef::new("volume_surge", "global", "all")]);
        assert!(may.contains(&RuleRef::new("volume_surge", "merchant", "*")), "{may:?}");
    }

    #[test]
    fn a_spike_adds_transactions_so_it_may_lift_its_scopes_volume() {
        let s = Scenario::builtin("mixed").unwrap();
        let spike = s.incidents.iter().find(|i| matches!(i.kind, IncidentKind::RateSpike { .. })).unwrap();
        let (_, _, expected, may, _) = expectations(&spike.kind, &s);
        assert!(expected.iter().all(|r| r.rule.ends_with("_rate")), "{expected:?}");
        assert!(may.contains(&RuleRef::new("volume_surge", "global", "all")), "{may:?}");
        assert!(!may.iter().any(|r| r.rule == "volume_drop"), "{may:?}");
    }
}
