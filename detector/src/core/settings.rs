//! Rule settings in force at each minute of event time (records of `detector-settings`, see
//! `vigil_schemas::settings`): pure, so a replay given the same records judges every minute
//! with the settings a live detector used for it.
//!
//! Only the amount rule's tiers, minimum severity and minimum baseline size change at run time:
//! they are judged per transaction with no state that depends on them beyond the baseline's
//! exclusion of outliers, which follows the same settings. The rate and volume rules' bars come
//! from their false-alarm targets and shape their state; they change with a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigil_schemas::settings::{AmountOverrides, RuleSettings, Scope};
use vigil_schemas::Transaction;

use super::config::AmountConfig;

/// Every scope's records, by effective minute. Cheap to clone (shared).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(skip)]
    by_scope: Arc<BTreeMap<ScopeKey, BTreeMap<i64, AmountOverrides>>>,
}

/// A scope as a map key (global first, then categories, then merchants).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ScopeKey {
    Global,
    Category(String),
    Merchant(String),
}

impl Settings {
    /// The timeline of `records` (in any order; a record repeated is the same record).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a RuleSettings>) -> Settings {
        let mut s = Settings::default();
        for r in records {
            s = s.with(r);
        }
        s
    }

    /// This timeline with one more record (an invalid scope is ignored: the publisher validates).
    pub fn with(&self, r: &RuleSettings) -> Settings {
        let key = match Scope::parse(&r.scope) {
            Some(Scope::Global) => ScopeKey::Global,
            Some(Scope::Category(c)) => ScopeKey::Category(c),
            Some(Scope::Merchant(m)) => ScopeKey::Merchant(m),
            None => return self.clone(),
        };
        let mut map = (*self.by_scope).clone();
        map.entry(key).or_default().insert(r.effective_from, r.amount.clone());
        Settings { by_scope: Arc::new(map) }
    }

    pub fn is_empty(&self) -> bool {
        self.by_scope.is_empty()
    }

    /// How many records the timeline holds.
    pub fn len(&self) -> usize {
        self.by_scope.values().map(BTreeMap::len).sum()
    }

    fn at(&self, key: &ScopeKey, t: i64) -> Option<&AmountOverrides> {
        self.by_scope.get(key)?.range(..=t).next_back().map(|(_, o)| o)
    }

    /// The amount rule's settings for `tx` at its event time: the defaults, then the global,
    /// category and merchant overrides in force then. `None` when nothing overrides them.
    pub fn amount_for(&self, base: &AmountConfig, tx: &Transaction) -> Option<AmountConfig> {
        if self.is_empty() {
            return None;
        }
        let t = tx.occurred_at;
        let layers = [
            self.at(&ScopeKey::Global, t),
            self.at(&ScopeKey::Category(tx.category.clone()), t),
            self.at(&ScopeKey::Merchant(tx.merchant_id.clone()), t),
        ];
        if layers.iter().all(|l| l.is_none_or(AmountOverrides::is_empty)) {
            return None;
        }
        let mut cfg = base.clone();
        for o in layers.into_iter().flatten() {
            if let Some(z) = o.z_medium {
                cfg.z_medium = z;
            }
            if let Some(z) = o.z_high {
                cfg.z_high = z;
            }
            if let Some(z) = o.z_critical {
                cfg.z_critical = z;
            }
            if let Some(s) = o.min_severity {
                cfg.min_severity = s;
            }
            if let Some(n) = o.min_samples {
                cfg.min_samples = n;
            }
        }
        Some(cfg)
    }
}

#[cfg(test)]
mod tests {
    use vigil_schemas::{Severity, TransactionStatus};

    use super::*;

    fn tx(merchant: &str, at: i64) -> Transaction {
        Transaction {
            transaction_id: "t".into(),
            occurred_at: at,
            status: TransactionStatus::Approved,
            auth_code: "00".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            category: "food".into(),
            merchant_id: merchant.into(),
            received_at: at,
        }
    }

    fn rec(scope: &str, from: i64, amount: AmountOverrides) -> RuleSettings {
        RuleSettings { scope: scope.into(), effective_from: from, amount, actor: "a".into(), comment: String::new() }
    }

    #[test]
    fn each_minute_uses_the_records_in_force_then_merchant_over_category_over_global() {
        let base = AmountConfig::default();
        let s = Settings::from_records(&[
            rec("global", 60_000, AmountOverrides { min_samples: Some(500), ..Default::default() }),
            rec("category:food", 120_000, AmountOverrides { z_critical: Some(8.0), ..Default::default() }),
            rec(
                "merchant:m-1",
                180_000,
                AmountOverrides { min_severity: Some(Severity::Critical), z_critical: Some(6.0), ..Default::default() },
            ),
            // m-1 back to its category's settings from minute 4.
            rec("merchant:m-1", 240_000, AmountOverrides::default()),
        ]);
        assert_eq!(s.amount_for(&base, &tx("m-1", 59_999)), None, "nothing in force yet");
        assert_eq!(s.amount_for(&base, &tx("m-1", 60_000)).unwrap().min_samples, 500);
        let c = s.amount_for(&base, &tx("m-2", 130_000)).unwrap();
        assert_eq!((c.min_samples, c.z_critical, c.min_severity), (500, 8.0, base.min_severity));
        let m = s.amount_for(&base, &tx("m-1", 200_000)).unwrap();
        assert_eq!((m.z_critical, m.min_severity), (6.0, Severity::Critical));
        let back = s.amount_for(&base, &tx("m-1", 250_000)).unwrap();
        assert_eq!((back.z_critical, back.min_severity), (8.0, base.min_severity));
        // The order records arrive in does not matter.
        let reversed = Settings::from_records(&[
            rec("merchant:m-1", 240_000, AmountOverrides::default()),
            rec(
                "merchant:m-1",
                180_000,
                AmountOverrides { min_severity: Some(Severity::Critical), z_critical: Some(6.0), ..Default::default() },
            ),
            rec("category:food", 120_000, AmountOverrides { z_critical: Some(8.0), ..Default::default() }),
            rec("global", 60_000, AmountOverrides { min_samples: Some(500), ..Default::default() }),
        ]);
        for t in [0, 60_000, 130_000, 200_000, 250_000] {
            assert_eq!(reversed.amount_for(&base, &tx("m-1", t)), s.amount_for(&base, &tx("m-1", t)));
        }
    }
}
