//! The detector's rule settings changed at run time: the records of the `detector-settings`
//! topic (a control topic: JSON, one partition, compacted, keyed `<scope>@<effective_from>` so
//! every version is kept and a replay finds the settings in force at each minute).
//!
//! A record replaces its scope's overrides from `effective_from` (a minute of event time) on:
//! the overrides of a scope at minute `m` are those of its record with the greatest
//! `effective_from <= m`. For a transaction the amount rule starts from the configured defaults
//! and applies, field by field, the global scope's overrides, then its category's, then its
//! merchant's. A record with no override resets its scope to the defaults.

use serde::{Deserialize, Serialize};

use crate::Severity;

/// The minute grid settings take effect on.
pub const MINUTE_MS: i64 = 60_000;

/// Overrides of the amount rule (unset fields keep the value below them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_medium: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_high: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_critical: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
}

impl AmountOverrides {
    pub fn is_empty(&self) -> bool {
        *self == AmountOverrides::default()
    }
}

/// One settings record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// `global`, `category:<category>` or `merchant:<merchant_id>`.
    pub scope: String,
    /// Event time (ms, a whole minute) from which the record is in force.
    pub effective_from: i64,
    #[serde(default)]
    pub amount: AmountOverrides,
    /// Who published it (the webhook's acting user).
    pub actor: String,
    #[serde(default)]
    pub comment: String,
}

/// What a scope names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Global,
    Category(String),
    Merchant(String),
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s.split_once(':') {
            None if s == "global" => Some(Scope::Global),
            Some(("category", c)) if !c.is_empty() && c.len() <= 64 => Some(Scope::Category(c.to_owned())),
            Some(("merchant", m)) if !m.is_empty() && m.len() <= 128 => Some(Scope::Merchant(m.to_owned())),
            _ => None,
        }
    }
}

impl RuleSettings {
    /// The record's key on the topic: every version kept under compaction.
    pub fn key(&self) -> String {
        format!("{}@{}", self.scope, self.effective_from)
    }

    /// Every problem with the record, by field (empty when it may be published).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if Scope::parse(&self.scope).is_none() {
            out.push(("scope", "global, category:<category> or merchant:<merchant_id>".to_owned()));
        }
        if self.effective_from.rem_euclid(MINUTE_MS) != 0 {
            out.push(("effective_from", "must be a whole minute".to_owned()));
        }
        let a = &self.amount;
        for (name, z) in
            [("amount.z_medium", a.z_medium), ("amount.z_high", a.z_high), ("amount.z_critical", a.z_critical)]
        {
            if z.is_some_and(|z| !(1.0..=20.0).contains(&z)) {
                out.push((name, "between 1 and 20".to_owned()));
            }
        }
        if let (Some(m), Some(h)) = (a.z_medium, a.z_high) {
            if m >= h {
                out.push(("amount.z_high", "must be above amount.z_medium".to_owned()));
            }
        }
        if let (Some(h), Some(c)) = (a.z_high, a.z_critical) {
            if h >= c {
                out.push(("amount.z_critical", "must be above amount.z_high".to_owned()));
            }
        }
        if a.min_samples.is_some_and(|n| !(10..=10_000_000).contains(&n)) {
            out.push(("amount.min_samples", "between 10 and 10000000".to_owned()));
        }
        if self.actor.is_empty() || self.actor.len() > 64 {
            out.push(("actor", "1 to 64 characters".to_owned()));
        }
        if self.comment.chars().count() > 500 {
            out.push(("comment", "at most 500 characters".to_owned()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_checked_field_by_field_and_keyed_by_scope_and_minute() {
        let ok = RuleSettings {
            scope: "merchant:m-7".into(),
            effective_from: 1_765_713_600_000,
            amount: AmountOverrides { min_severity: Some(Severity::Critical), ..Default::default() },
            actor: "alice".into(),
            comment: String::new(),
        };
        assert!(ok.problems().is_empty());
        assert_eq!(ok.key(), "merchant:m-7@1765713600000");
        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<RuleSettings>(&json).unwrap(), ok);
        let bad = RuleSettings {
            scope: "shop:x".into(),
            effective_from: 1_765_713_600_001,
            amount: AmountOverrides {
                z_high: Some(3.0),
                z_critical: Some(2.0),
                min_samples: Some(1),
                ..Default::default()
            },
            actor: String::new(),
            comment: String::new(),
        };
        let fields: Vec<&str> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["scope", "effective_from", "amount.z_critical", "amount.min_samples", "actor"]);
        assert_eq!(Scope::parse("global"), Some(Scope::Global));
        assert_eq!(Scope::parse("category:food"), Some(Scope::Category("food".into())));
        assert_eq!(Scope::parse("merchant:"), None);
    }
}
