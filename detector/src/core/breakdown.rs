//! Rates per category and per merchant, judged in stage 1.
//!
//! The topic is keyed by category, so every transaction of a category, and of a merchant
//! within it, reaches one partition: its rate series are judged there, on the partition's own
//! final minutes, without waiting for other partitions or coordinating with them. (A merchant
//! that trades in several categories may be spread over several partitions; each judges the
//! share it sees, and the anomaly names the merchant.)
//!
//! Only keys with enough volume to judge get series: a key's volume is an exponentially
//! weighted average of its transactions per minute (half-life one hour, quiet minutes counting
//! as zero), and a key is watched from `category_min_per_minute` / `merchant_min_per_minute`
//! on, at most `max_keyed_series` keys per partition (first come, first watched: a bound on
//! state whatever keys clients send). A watched key whose volume falls below half its
//! threshold, with no incident open, is dropped; keys not seen for a day are forgotten.
//!
//! An incident confined to one merchant is reported as that merchant's anomaly (and as its
//! category's when it moves the category's rate); the global series judge the global rate on
//! their own, so they report it only when the global rate is itself anomalous.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, Transaction, TransactionStatus};

use super::config::{RateConfig, MINUTE_MS};
use super::rate::RateSeries;

/// Volume half-life, in minutes.
const HALF_LIFE_MINUTES: f64 = 60.0;
/// How often (event time) every key's volume is brought up to date and the quiet ones dropped.
const SWEEP_MS: i64 = 60 * MINUTE_MS;
/// A key with no open incident and no transaction for this long is forgotten.
const FORGET_MS: i64 = 24 * 60 * MINUTE_MS;

const RULES: [(AnomalyRule, TransactionStatus); 3] = [
    (AnomalyRule::DeniedRate, TransactionStatus::Denied),
    (AnomalyRule::FailedRate, TransactionStatus::Failed),
    (AnomalyRule::ReversedRate, TransactionStatus::Reversed),
];

/// One key's transactions in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub total: i64,
    pub denied: i64,
    pub failed: i64,
    pub reversed: i64,
}

impl StatusCounts {
    fn add(&mut self, s: TransactionStatus) {
        self.total += 1;
        match s {
            TransactionStatus::Denied => self.denied += 1,
            TransactionStatus::Failed => self.failed += 1,
            TransactionStatus::Reversed => self.reversed += 1,
            TransactionStatus::Approved => {}
        }
    }

    fn merge(&mut self, o: &StatusCounts) {
        self.total += o.total;
        self.denied += o.denied;
        self.failed += o.failed;
        self.reversed += o.reversed;
    }

    pub fn count(&self, s: TransactionStatus) -> i64 {
        match s {
            TransactionStatus::Denied => self.denied,
            TransactionStatus::Failed => self.failed,
            TransactionStatus::Reversed => self.reversed,
            TransactionStatus::Approved => self.total - self.denied - self.failed - self.reversed,
        }
    }
}

/// A key's volume and, once it has enough, its three rate series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Watch {
    /// Transactions per minute, exponentially weighted, as of `as_of` (the start of the last
    /// minute folded in).
    volume: f64,
    as_of: i64,
    last_seen: i64,
    series: Vec<RateSeries>,
}

impl Watch {
    fn decay_to(&mut self, minute: i64) {
        if minute > self.as_of {
            let gap = ((minute - self.as_of) / MINUTE_MS) as f64;
            self.volume *= (-gap * std::f64::consts::LN_2 / HALF_LIFE_MINUTES).exp();
            self.as_of = minute;
        }
    }

    fn observe_volume(&mut self, minute: i64, total: i64) {
        // Quiet minutes since the last one count as zeros; this one adds its count.
        self.decay_to(minute - MINUTE_MS);
        let keep = (-std::f64::consts::LN_2 / HALF_LIFE_MINUTES).exp();
        self.volume = self.volume * keep + (1.0 - keep) * total as f64;
        self.as_of = minute;
        self.last_seen = minute;
    }

    fn is_active(&self) -> bool {
        self.series.iter().any(RateSeries::is_active)
    }
}

/// Per-key watches of one dimension.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Keyed {
    watches: BTreeMap<String, Watch>,
}

impl Keyed {
    fn watched(&self) -> usize {
        self.watches.values().filter(|w| !w.series.is_empty()).count()
    }

    #[allow(clippy::too_many_arguments)]
    fn close(
        &mut self,
        dimension: AnomalyDimension,
        minute: i64,
        counts: &BTreeMap<&str, StatusCounts>,
        min_volume: f64,
        limit: usize,
        cfg: &RateConfig,
        out: &mut Vec<Anomaly>,
    ) {
        let mut watched = self.watched();
        for (key, c) in counts {
            let w = match self.watches.get_mut(*key) {
                Some(w) => w,
                None => self.watches.entry((*key).to_owned()).or_insert(Watch {
                    volume: 0.0,
                    as_of: minute - MINUTE_MS,
                    last_seen: minute,
                    series: Vec::new(),
                }),
            };
            w.observe_volume(minute, c.total);
            if w.series.is_empty() && w.volume >= min_volume && watched < limit {
                w.series = RULES.iter().map(|(rule, _)| RateSeries::new(*rule, dimension, key)).collect();
                watched += 1;
            }
            for (series, (_, status)) in w.series.iter_mut().zip(RULES) {
                if let Some(a) = series.observe(minute, c.count(status), c.total, 0, cfg) {
                    out.push(a);
                }
            }
        }
    }

    fn sweep(&mut self, minute: i64, min_volume: f64) {
        self.watches.retain(|_, w| {
            w.decay_to(minute);
            let active = w.is_active();
            if !active && !w.series.is_empty() && w.volume < min_volume / 2.0 {
                w.series.clear();
            }
            active || minute - w.last_seen < FORGET_MS
        });
    }
}

/// Stage 1's per-category and per-merchant rate state. Serializable: part of a partition's
/// checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Open minutes: (category, merchant) → counts.
    open: BTreeMap<i64, BTreeMap<(String, String), StatusCounts>>,
    categories: Keyed,
    merchants: Keyed,
    last_sweep: i64,
}

impl Breakdown {
    /// Counts a transaction of an open minute.
    pub fn add(&mut self, minute: i64, tx: &Transaction, cfg: &RateConfig) {
        if !cfg.by_category && !cfg.by_merchant {
            return;
        }
        let m = self.open.entry(minute).or_default();
        let key = (tx.category.clone(), tx.merchant_id.clone());
        m.entry(key).or_default().add(tx.status);
    }

    /// Series watched: (categories, merchants).
    pub fn watched(&self) -> (usize, usize) {
        (self.categories.watched(), self.merchants.watched())
    }

    /// The partition's minute `minute` is final: judges every watched key on it (and any
    /// earlier open minute, oldest first).
    pub fn close(&mut self, minute: i64, cfg: &RateConfig) -> Vec<Anomaly> {
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() > minute {
                break;
            }
            let m = *entry.key();
            let keys = entry.remove();
            let mut by_category: BTreeMap<&str, StatusCounts> = BTreeMap::new();
            let mut by_merchant: BTreeMap<&str, StatusCounts> = BTreeMap::new();
            for ((category, merchant), c) in &keys {
                by_category.entry(category.as_str()).or_default().merge(c);
                by_merchant.entry(merchant.as_str()).or_default().merge(c);
            }
            if cfg.by_category {
                self.categories.close(
                    AnomalyDimension::Category,
                    m,
                    &by_category,
                    cfg.category_min_per_minute,
                    cfg.max_keyed_series,
                    cfg,
                    &mut out,
                );
            }
            if cfg.by_merchant {
                self.merchants.close(
                    AnomalyDimension::Merchant,
                    m,
                    &by_merchant,
                    cfg.merchant_min_per_minute,
                    cfg.max_keyed_series,
                    cfg,
                    &mut out,
                );
            }
            if m - self.last_sweep >= SWEEP_MS {
                self.categories.sweep(m, cfg.category_min_per_minute);
                self.merchants.sweep(m, cfg.merchant_min_per_minute);
                self.last_sweep = m;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use vigil_schemas::AnomalyState;

    use super::*;

    const T0: i64 = 1_765_713_600_000;

    fn tx(category: &str, merchant: &str, status: TransactionStatus) -> Transaction {
        Transaction {
            transaction_id: String::new(),
            occurred_at: 0,
            status,
            auth_code: "00".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            category: category.into(),
            merchant_id: merchant.into(),
            received_at: 0,
        }
    }

    /// Three merchants of one category at 30/min each; from minute 200, merchant m2's denied
    /// rate goes from 5 % to 25 % for 20 minutes.
    fn run(seed: u64, cfg: &RateConfig) -> Vec<(i64, Anomaly)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut b = Breakdown::default();
        let mut out = Vec::new();
        for i in 0..260i64 {
            let minute = T0 + i * MINUTE_MS;
            for m in ["m1", "m2", "m3"] {
                let p = if m == "m2" && (200..220).contains(&i) { 0.25 } else { 0.05 };
                for _ in 0..30 {
                    let s = if rng.gen_bool(p) { TransactionStatus::Denied } else { TransactionStatus::Approved };
                    b.add(minute, &tx("food", m, s), cfg);
                }
            }
            out.extend(b.close(minute, cfg).into_iter().map(|a| (i, a)));
        }
        out
    }

    #[test]
    fn an_incident_of_one_merchant_is_that_merchants_anomaly() {
        let cfg = RateConfig::default();
        for seed in 0..5 {
            let out = run(seed, &cfg);
            let merchant: Vec<&(i64, Anomaly)> =
                out.iter().filter(|(_, a)| a.dimension == AnomalyDimension::Merchant).collect();
            assert!(
                merchant.iter().all(|(_, a)| a.dimension_value == "m2" && a.rule == AnomalyRule::DeniedRate),
                "seed {seed}: {:?}",
                merchant.iter().map(|(_, a)| &a.id).collect::<Vec<_>>()
            );
            let firing: Vec<i64> =
                merchant.iter().filter(|(_, a)| a.state == AnomalyState::Firing).map(|(i, _)| *i).collect();
            assert_eq!(firing.len(), 1, "seed {seed}: one incident, one anomaly");
            // 30 a minute, 5 % to 25 %, merchant level (h ≈ 18): about 3.5 minutes of evidence.
            assert!((200..208).contains(&firing[0]), "seed {seed}: fired at minute {}", firing[0]);
            assert_eq!(merchant[0].1.merchant_id.as_deref(), Some("m2"));
            assert!(merchant.iter().any(|(_, a)| a.state == AnomalyState::Resolved), "seed {seed}");
        }
    }

    #[test]
    fn quiet_keys_are_not_watched_and_the_number_watched_is_bounded() {
        let cfg = RateConfig { max_keyed_series: 10, ..RateConfig::default() };
        let mut b = Breakdown::default();
        for i in 0..120i64 {
            let minute = T0 + i * MINUTE_MS;
            // 50 busy merchants, and one new merchant each minute with a single transaction.
            for m in 0..50 {
                for _ in 0..10 {
                    b.add(minute, &tx("food", &format!("busy-{m}"), TransactionStatus::Approved), &cfg);
                }
            }
            b.add(minute, &tx("food", &format!("once-{i}"), TransactionStatus::Denied), &cfg);
            b.close(minute, &cfg);
        }
        let (categories, merchants) = b.watched();
        assert_eq!(categories, 1);
        assert_eq!(merchants, 10);
        assert!(b
            .merchants
            .watches
            .keys()
            .filter(|k| k.starts_with("once-"))
            .all(|k| b.merchants.watches[k].series.is_empty()));
    }
}
