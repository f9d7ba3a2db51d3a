//! Amount anomalies: each transaction against its category's and its merchant's baseline.
//!
//! Amounts are heavy-tailed (roughly log-normal), so the score is taken on `ln(1 + amount)`:
//! there a z-score's tail probabilities mean what the normal distribution says they mean, and
//! the tiers keep their promise (see the false-alarm test below). Only large amounts are
//! anomalies; an unusually small amount is not flagged.
//!
//! Baselines are time-bucketed sufficient statistics (count, mean, M2), merged with Chan's
//! formulas over the buckets of the window, never lists of past amounts: memory is
//! O(keys × buckets) whatever the traffic.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Severity, Transaction};

use super::config::AmountConfig;
use super::format::{money, utc};
use super::stats::RunningStats;

/// Sufficient statistics per time bucket, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BucketedStats {
    buckets: VecDeque<(i64, RunningStats)>,
}

impl BucketedStats {
    /// Statistics over buckets `(bucket - window, bucket]`.
    pub fn baseline(&self, bucket: i64, window: i64) -> RunningStats {
        let mut s = RunningStats::default();
        for (b, st) in &self.buckets {
            if *b > bucket - window && *b <= bucket {
                s.merge(st);
            }
        }
        s
    }

    pub fn add(&mut self, bucket: i64, x: f64) {
        match self.buckets.iter().position(|(b, _)| *b >= bucket) {
            Some(i) if self.buckets[i].0 == bucket => self.buckets[i].1.push(x),
            Some(i) => self.buckets.insert(i, (bucket, RunningStats::of([x]))),
            None => self.buckets.push_back((bucket, RunningStats::of([x]))),
        }
    }

    /// Drops buckets older than `min_bucket`; true when nothing is left.
    pub fn evict_before(&mut self, min_bucket: i64) -> bool {
        while self.buckets.front().is_some_and(|(b, _)| *b < min_bucket) {
            self.buckets.pop_front();
        }
        self.buckets.is_empty()
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
}

/// Which baseline a transaction is judged against. Currency is part of every key: amounts in
/// different currencies are never mixed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BaselineKey {
    Category {
        category: String,
        currency: String,
    },
    /// A merchant's baseline is per category it trades in (transactions are partitioned by
    /// category, so this baseline lives in one partition).
    Merchant {
        category: String,
        merchant: String,
        currency: String,
    },
}

/// Every amount baseline of one partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AmountBaselines {
    keys: HashMap<BaselineKey, BucketedStats>,
    /// Highest bucket seen; eviction runs when it advances.
    max_bucket: Option<i64>,
}

/// The judgement of one transaction against one baseline (also when nothing fires).
#[derive(Debug, Clone, PartialEq)]
pub struct AmountScore {
    pub key: BaselineKey,
    pub z: f64,
    pub severity: Option<Severity>,
}

impl AmountBaselines {
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn bucket_count(&self) -> usize {
        self.keys.values().map(BucketedStats::bucket_count).sum()
    }

    /// Judges `tx`, then (unless it fired) adds it to its baselines. Returns the anomalies to
    /// emit and every score (for metrics).
    pub fn judge(&mut self, tx: &Transaction, cfg: &AmountConfig) -> (Vec<Anomaly>, Vec<AmountScore>) {
        let bucket = tx.occurred_at.div_euclid(cfg.bucket_ms.max(1));
        let window = cfg.window_buckets();
        self.evict(bucket, window);
        let x = (tx.amount_minor.max(0) as f64).ln_1p();
        let mut keys = Vec::with_capacity(2);
        if cfg.per_category {
            keys.push(BaselineKey::Category { category: tx.category.clone(), currency: tx.currency.clone() });
        }
        if cfg.per_merchant {
            keys.push(BaselineKey::Merchant {
                category: tx.category.clone(),
                merchant: tx.merchant_id.clone(),
                currency: tx.currency.clone(),
            });
        }
        let mut anomalies = Vec::new();
        let mut scores = Vec::new();
        for key in &keys {
            let base = self.keys.get(key).map(|b| b.baseline(bucket, window)).unwrap_or_default();
            if base.n < cfg.min_samples {
                continue;
            }
            let (score, anomaly) = judge_one(tx, key, x, &base, cfg);
            if let Some(a) = anomaly {
                anomalies.push(a);
            }
            scores.push(score);
        }
        // An emitted outlier does not become part of the normal it was judged against.
        if anomalies.is_empty() {
            for key in keys {
                self.keys.entry(key).or_default().add(bucket, x);
            }
        }
        (anomalies, scores)
    }

    fn evict(&mut self, bucket: i64, window: i64) {
        if self.max_bucket.is_some_and(|m| m >= bucket) {
            return;
        }
        self.max_bucket = Some(bucket);
        // Keep one bucket of slack behind the window for slightly out-of-order events.
        let min_bucket = bucket - window;
        self.keys.retain(|_, b| !b.evict_before(min_bucket));
    }
}

fn tier(z: f64, cfg: &AmountConfig) -> Option<Severity> {
    if z >= cfg.z_critical {
        Some(Severity::Critical)
    } else if z >= cfg.z_high {
        Some(Severity::High)
    } else if z >= cfg.z_medium {
        Some(Severity::Medium)
    } else {
        None
    }
}

fn tier_threshold(s: Severity, cfg: &AmountConfig) -> f64 {
    match s {
        Severity::Medium => cfg.z_medium,
        Severity::High => cfg.z_high,
        Severity::Critical => cfg.z_critical,
    }
}

fn judge_one(
    tx: &Transaction,
    key: &BaselineKey,
    x: f64,
    base: &RunningStats,
    cfg: &AmountConfig,
) -> (AmountScore, Option<Anomaly>) {
    let sd = base.stddev();
    let typical = base.mean.exp_m1(); // geometric mean of (1 + amount), minus 1
    let (dimension, value) = match key {
        BaselineKey::Category { category, .. } => (AnomalyDimension::Category, category.clone()),
        BaselineKey::Merchant { merchant, .. } => (AnomalyDimension::Merchant, merchant.clone()),
    };
    let who = match key {
        BaselineKey::Category { category, .. } => format!("category {category}"),
        BaselineKey::Merchant { category, merchant, .. } => format!("merchant {merchant} ({category})"),
    };
    let amount = tx.amount_minor as f64;

    if sd < cfg.low_variance_spread {
        // Flat history: a z-score would be infinite for any change. Flag only an amount at
        // least `low_variance_ratio` times the usual one, and materially larger.
        let ratio = if typical > 0.0 { amount / typical } else { f64::INFINITY };
        let excess = amount - typical;
        let fires = ratio >= cfg.low_variance_ratio && excess >= cfg.materiality_minor as f64;
        let severity = if ratio >= 5.0 * cfg.low_variance_ratio { Severity::Critical } else { Severity::High };
        let score = AmountScore { key: key.clone(), z: f64::INFINITY, severity: fires.then_some(severity) };
        if !fires || severity < cfg.min_severity {
            return (score, None);
        }
        let message = format!(
            "Amount {} at {who} is {ratio:.1}x its usual {} (the last {} transactions barely varied); {}.",
            money(tx.amount_minor, &tx.currency),
            money(typical.round() as i64, &tx.currency),
            base.n,
            severity.as_str()
        );
        let a = amount_anomaly(
            tx,
            AnomalyRule::AmountLowVariance,
            dimension,
            value,
            base,
            typical,
            sd,
            "amount",
            ratio,
            None,
            cfg.low_variance_ratio,
            severity,
            message,
        );
        return (score, Some(a));
    }

    let z = (x - base.mean) / sd;
    let severity = tier(z, cfg);
    let score = AmountScore { key: key.clone(), z, severity };
    let Some(severity) = severity.filter(|s| *s >= cfg.min_severity) else {
        return (score, None);
    };
    let p = Normal::standard().sf(z);
    let message = format!(
        "Amount {} at {who} is {z:.1}σ above its {}-day baseline (typical {}, n = {}); {} (threshold {:.1}σ).",
        money(tx.amount_minor, &tx.currency),
        cfg.window_days,
        money(typical.round() as i64, &tx.currency),
        base.n,
        severity.as_str(),
        tier_threshold(severity, cfg),
    );
    let threshold = tier_threshold(cfg.min_severity, cfg);
    let a = amount_anomaly(
        tx,
        AnomalyRule::AmountZscore,
        dimension,
        value,
        base,
        base.mean,
        sd,
        "ln(1+amount)",
        z,
        Some(p),
        threshold,
        severity,
        message,
    );
    (score, Some(a))
}

#[allow(clippy::too_many_arguments)]
fn amount_anomaly(
    tx: &Transaction,
    rule: AnomalyRule,
    dimension: AnomalyDimension,
    value: String,
    base: &RunningStats,
    mean: f64,
    sd: f64,
    scored_on: &str,
    score: f64,
    p_value: Option<f64>,
    threshold: f64,
    severity: Severity,
    message: String,
) -> Anomaly {
    Anomaly {
        id: format!("{}:{}:{}:{}", rule.as_str(), dimension.as_str(), value, tx.transaction_id),
        sequence: 0,
        rule,
        dimension,
        dimension_value: value,
        window_start: None,
        window_end: None,
        transaction_id: Some(tx.transaction_id.clone()),
        category: Some(tx.category.clone()),
        merchant_id: Some(tx.merchant_id.clone()),
        observed: tx.amount_minor as f64,
        observed_count: 1,
        observed_total: 1,
        baseline_mean: mean,
        baseline_stddev: sd,
        baseline_n: base.n as i64,
        scored_on: scored_on.to_owned(),
        score,
        p_value,
        threshold,
        severity,
        state: AnomalyState::Firing,
        message: format!("{message} Transaction {} at {}.", tx.transaction_id, utc(tx.occurred_at)),
        first_seen: tx.occurred_at,
        last_updated: tx.occurred_at,
        resolved_at: None,
    }
}

#[cfg(test)]
mod tests;
