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
//!
//! Each closed minute also yields a [`MerchantMinute`] per watched merchant and category it
//! traded in that minute, for Grafana's drill-down: the watch limit bounds them (at most
//! `max_keyed_series` merchants per partition), and a merchant too quiet to be watched, or a
//! minute without its transactions, yields none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, MerchantMinute, Transaction, TransactionStatus};

use super::config::{RateConfig, MINUTE_MS};
use super::rate::RateSeries;
use super::volume::KeyTotals;

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
    /// minute folded in), and the weight the minutes seen so far carry (1 − keep^minutes), by
    /// which it is divided: a young key's average is then its true average, not one pulled
    /// towards zero by the minutes before it existed.
    volume: f64,
    weight: f64,
    as_of: i64,
    last_seen: i64,
    series: Vec<RateSeries>,
}

impl Watch {
    fn decay_to(&mut self, minute: i64) {
        if minute > self.as_of {
            let gap = ((minute - self.as_of) / MINUTE_MS) as f64;
            let keep = (-gap * std::f64::consts::LN_2 / HALF_LIFE_MINUTES).exp();
            self.volume *= keep;
            self.weight = 1.0 - (1.0 - self.weight) * keep;
            self.as_of = minute;
        }
    }

    fn observe_volume(&mut self, minute: i64, total: i64) {
        // Quiet minutes since the last one count as zeros; this one adds its count.
        self.decay_to(minute - MINUTE_MS);
        let keep = (-std::f64::consts::LN_2 / HALF_LIFE_MINUTES).exp();
        self.volume = self.volume * keep + (1.0 - keep) * total as f64;
        self.weight = self.weight * keep + (1.0 - keep);
        self.as_of = minute;
        self.last_seen = minute;
    }

    /// Average transactions per minute.
    fn per_minute(&self) -> f64 {
        if self.weight > 0.0 {
            self.volume / self.weight
        } else {
            0.0
        }
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

    fn is_watched(&self, key: &str) -> bool {
        self.watches.get(key).is_some_and(|w| !w.series.is_empty())
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
                    weight: 0.0,
                    as_of: minute - MINUTE_MS,
                    last_seen: minute,
                    series: Vec::new(),
                }),
            };
            w.observe_volume(minute, c.total);
            // Judged from its tenth minute on: an average of fewer is too young to trust.
            if w.series.is_empty() && w.weight > 0.1 && w.per_minute() >= min_volume && watched < limit {
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
            if !active && !w.series.is_empty() && w.per_minute() < min_volume / 2.0 {
                w.series.clear();
            }
            active || minute - w.last_seen < FORGET_MS
        });
    }
}

/// What closing final minutes yields, oldest minute first: the rate anomalies, and each watched
/// merchant's counts per category (in (category, merchant) order within a minute).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Closed {
    pub anomalies: Vec<Anomaly>,
    pub merchant_minutes: Vec<MerchantMinute>,
    /// Each closed minute's transactions per category and per merchant (for the volume rules).
    pub totals: BTreeMap<i64, KeyTotals>,
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

    /// Whether a category's or merchant's rates are watched (it has the volume to judge).
    pub fn is_watched(&self, dimension: AnomalyDimension, key: &str) -> bool {
        match dimension {
            AnomalyDimension::Category => self.categories.is_watched(key),
            AnomalyDimension::Merchant => self.merchants.is_watched(key),
            _ => false,
        }
    }

    /// Whether a category or merchant is still known: seen within the last day, watched or
    /// not (a key watched by day and too quiet at night stays known).
    pub fn is_known(&self, dimension: AnomalyDimension, key: &str) -> bool {
        match dimension {
            AnomalyDimension::Category => self.categories.watches.contains_key(key),
            AnomalyDimension::Merchant => self.merchants.watches.contains_key(key),
            _ => false,
        }
    }

    /// Series watched: (categories, merchants).
    pub fn watched(&self) -> (usize, usize) {
        (self.categories.watched(), self.merchants.watched())
    }

    /// The partition's minute `minute` is final: judges every watched key on it (and any
    /// earlier open minute, oldest first), and reports each watched merchant's counts.
    pub fn close(&mut self, minute: i64, cfg: &RateConfig) -> Closed {
        let mut closed = Closed::default();
        let out = &mut closed.anomalies;
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
            closed.totals.insert(
                m,
                KeyTotals {
                    categories: by_category.iter().map(|(k, c)| ((*k).to_owned(), c.total)).collect(),
                    merchants: by_merchant.iter().map(|(k, c)| ((*k).to_owned(), c.total)).collect(),
                },
            );
            if cfg.by_category {
                self.categories.close(
                    AnomalyDimension::Category,
                    m,
                    &by_category,
                    cfg.category_min_per_minute,
                    cfg.max_keyed_series,
                    cfg,
                    out,
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
                    out,
                );
                // Watched as of this minute (a merchant that reached its threshold now included),
                // so the drill-down starts with the first minute its rates are judged.
                closed.merchant_minutes.extend(
                    keys.iter().filter(|((_, merchant), _)| self.merchants.is_watched(merchant)).map(
                        |((category, merchant), c)| MerchantMinute {
                            minute_start: m,
                            category: category.clone(),
                            merchant_id: merchant.clone(),
                            total: c.total,
                            approved: c.count(TransactionStatus::Approved),
                            denied: c.denied,
                            failed: c.failed,
                            reversed: c.reversed,
                        },
                    ),
                );
            }
            if m - self.last_sweep >= SWEEP_MS {
                self.categories.sweep(m, cfg.category_min_per_minute);
                self.merchants.sweep(m, cfg.merchant_min_per_minute);
                self.last_sweep = m;
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

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
            out.extend(b.close(minute, cfg).anomalies.into_iter().map(|a| (i, a)));
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
    fn watched_merchants_minutes_are_emitted_per_category_and_unwatched_ones_are_not() {
        let cfg = RateConfig { max_keyed_series: 2, ..RateConfig::default() };
        let run = |cfg: &RateConfig| {
            let mut b = Breakdown::default();
            let mut closed = Vec::new();
            for i in 0..150i64 {
                let minute = T0 + i * MINUTE_MS;
                // Three busy merchants (the watch limit is two: the first two to qualify), one
                // quiet one that never qualifies; busy-0 also trades in travel, and pauses in
                // minute 140.
                for m in 0..3 {
                    if m == 0 && i == 140 {
                        continue;
                    }
                    for k in 0..10 {
                        let s = if k < 2 { TransactionStatus::Denied } else { TransactionStatus::Approved };
                        b.add(minute, &tx("food", &format!("busy-{m}"), s), cfg);
                    }
                }
                if i != 140 {
                    b.add(minute, &tx("travel", "busy-0", TransactionStatus::Failed), cfg);
                }
                b.add(minute, &tx("food", "quiet", TransactionStatus::Reversed), cfg);
                closed.push((i, b.close(minute, cfg)));
            }
            closed
        };
        let closed = run(&cfg);
        let rows: Vec<(i64, &MerchantMinute)> =
            closed.iter().flat_map(|(i, c)| c.merchant_minutes.iter().map(move |r| (*i, r))).collect();
        let merchants: BTreeSet<&str> = rows.iter().map(|(_, r)| r.merchant_id.as_str()).collect();
        assert_eq!(merchants, BTreeSet::from(["busy-0", "busy-1"]), "only the watched merchants");
        // Watched once its volume qualifies, then a row for every minute in which it traded, one
        // per category.
        let first = |m: &str| rows.iter().find(|(_, r)| r.merchant_id == m).map(|(i, _)| *i).unwrap();
        let (first0, first1) = (first("busy-0"), first("busy-1"));
        assert!(first0 < 100 && first1 < 100, "first rows in minutes {first0} and {first1}");
        for i in first0.min(first1)..150 {
            let of = |m: &str| -> Vec<&MerchantMinute> {
                rows.iter().filter(|(j, r)| *j == i && r.merchant_id == m).map(|(_, r)| *r).collect()
            };
            assert_eq!(of("busy-1").len(), usize::from(i >= first1), "minute {i}");
            if i < first0 {
                continue;
            }
            let busy0 = of("busy-0");
            if i == 140 {
                assert!(busy0.is_empty(), "no row for a minute without transactions");
                continue;
            }
            assert_eq!(busy0.len(), 2, "minute {i}: food and travel");
            let food = MerchantMinute {
                minute_start: T0 + i * MINUTE_MS,
                category: "food".into(),
                merchant_id: "busy-0".into(),
                total: 10,
                approved: 8,
                denied: 2,
                failed: 0,
                reversed: 0,
            };
            let travel = MerchantMinute {
                category: "travel".into(),
                total: 1,
                approved: 0,
                denied: 0,
                failed: 1,
                ..food.clone()
            };
            assert_eq!(busy0, vec![&food, &travel]);
        }
        // Deterministic: the same input gives the same rows in the same order.
        assert_eq!(run(&cfg), closed);
        // Without per-merchant series, no merchant rows.
        let off = RateConfig { by_merchant: false, ..cfg.clone() };
        assert!(run(&off).iter().all(|(_, c)| c.merchant_minutes.is_empty()));
    }

    #[test]
    fn a_breakdown_restored_from_its_checkpoint_emits_the_same_merchant_minutes_as_one_that_never_stopped() {
        let cfg = RateConfig::default();
        let minute_of = |i: i64| T0 + i * MINUTE_MS;
        let feed = |b: &mut Breakdown, i: i64| {
            for m in 0..4 {
                for k in 0..(12 + m + i % 3) {
                    let s = if k % 7 == 0 { TransactionStatus::Denied } else { TransactionStatus::Approved };
                    b.add(minute_of(i), &tx("food", &format!("m-{m}"), s), &cfg);
                }
            }
        };
        let mut straight = Breakdown::default();
        let mut expected = Vec::new();
        for i in 0..200 {
            feed(&mut straight, i);
            expected.push(straight.close(minute_of(i), &cfg));
        }
        // Stopped after minute 100 with minute 101 still open, restored from the checkpoint bytes.
        let mut first = Breakdown::default();
        let mut got = Vec::new();
        for i in 0..=100 {
            feed(&mut first, i);
            got.push(first.close(minute_of(i), &cfg));
        }
        feed(&mut first, 101);
        let mut restored: Breakdown = postcard::from_bytes(&postcard::to_stdvec(&first).unwrap()).unwrap();
        got.push(restored.close(minute_of(101), &cfg));
        for i in 102..200 {
            feed(&mut restored, i);
            got.push(restored.close(minute_of(i), &cfg));
        }
        // Watched well before the stop, so rows on both sides of it are compared.
        assert!(expected[..100].iter().map(|c| c.merchant_minutes.len()).sum::<usize>() > 100);
        assert_eq!(expected[101..].iter().map(|c| c.merchant_minutes.len()).sum::<usize>(), 99 * 4);
        assert_eq!(got, expected);
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
