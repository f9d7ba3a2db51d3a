//! Rate anomalies: a minute's denied / failed / reversed (or auth-code) rate against a rolling
//! baseline of previous minutes.
//!
//! A minute fires only when all hold:
//! * at least `min_count` matching transactions (tiny samples never alarm);
//! * z = (rate - baseline mean) / spread ≥ `z_threshold`, where spread is the larger of the
//!   baseline minutes' standard deviation, `spread_floor`, and the binomial standard error at
//!   this minute's volume (so a flat history does not make every wiggle infinite);
//! * the one-sided binomial tail P(X ≥ count | n, baseline rate) ≤ `max_p_value`, which accounts
//!   for the minute's volume.
//!
//! Anomalous minutes never enter the baseline, so a long incident does not become the new
//! normal. An anomaly fires once, is updated each anomalous minute, and resolves after
//! `resolve_after_minutes` normal minutes in a row (hysteresis).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Severity};

use super::config::{RateConfig, MINUTE_MS};
use super::format::{hm, pct};
use super::stats::RunningStats;

/// One baseline minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub minute: i64,
    pub count: i64,
    pub total: i64,
}

/// The baseline a minute is judged against, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub rate: f64,
    pub mean: f64,
    pub pooled: f64,
    pub spread: f64,
    pub n: usize,
    pub z: f64,
    pub p_value: Option<f64>,
    pub anomalous: bool,
}

/// Scores `count` of `total` (or a bare rate when `total` is `None`) against `history`.
/// `None` while the baseline is shorter than `min_baseline_minutes`.
pub fn score(
    history: &VecDeque<Point>,
    rate: f64,
    count_total: Option<(i64, i64)>,
    cfg: &RateConfig,
) -> Option<Judgement> {
    if history.len() < cfg.min_baseline_minutes.max(1) {
        return None;
    }
    let rates =
        RunningStats::of(history.iter().map(|p| if p.total > 0 { p.count as f64 / p.total as f64 } else { 0.0 }));
    let (sum_c, sum_n) = history.iter().fold((0i64, 0i64), |(c, n), p| (c + p.count, n + p.total));
    let pooled = if sum_n > 0 { sum_c as f64 / sum_n as f64 } else { rates.mean };
    let mut spread = rates.stddev().max(cfg.spread_floor);
    let mut p_value = None;
    let mut big_enough = true;
    if let Some((count, total)) = count_total {
        let p0 = pooled.clamp(cfg.rate_floor, 1.0 - 1e-9);
        spread = spread.max((p0 * (1.0 - p0) / total.max(1) as f64).sqrt());
        p_value = Some(binomial_upper_tail(count, total, p0));
        big_enough = count >= cfg.min_count;
    }
    let z = (rate - rates.mean) / spread;
    let anomalous = big_enough && z >= cfg.z_threshold && p_value.is_none_or(|p| p <= cfg.max_p_value);
    Some(Judgement { rate, mean: rates.mean, pooled, spread, n: history.len(), z, p_value, anomalous })
}

/// P(X ≥ k) for X ~ Binomial(n, p).
pub fn binomial_upper_tail(k: i64, n: i64, p: f64) -> f64 {
    if k <= 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    match Binomial::new(p, n as u64) {
        Ok(b) => b.sf((k - 1) as u64),
        Err(_) => 1.0,
    }
}

/// 0..1 score for a z (standard normal CDF), as the `--series` replay prints it.
pub fn unit_score(z: f64) -> f64 {
    Normal::standard().cdf(z)
}

fn severity(z: f64, cfg: &RateConfig) -> Severity {
    if z >= cfg.z_critical {
        Severity::Critical
    } else if z >= cfg.z_high {
        Severity::High
    } else {
        Severity::Medium
    }
}

/// An incident in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Active {
    id: String,
    first_seen: i64,
    sequence: i64,
    normal_streak: u32,
    severity: Severity,
    last: Anomaly,
}

/// One watched rate (e.g. the global denied rate, or the share of auth code 51).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateSeries {
    pub rule: AnomalyRule,
    pub dimension: AnomalyDimension,
    pub value: String,
    history: VecDeque<Point>,
    active: Option<Active>,
}

impl RateSeries {
    pub fn new(rule: AnomalyRule, dimension: AnomalyDimension, value: &str) -> Self {
        RateSeries { rule, dimension, value: value.to_owned(), history: VecDeque::new(), active: None }
    }

    /// Starts with a history (e.g. zeros for an auth code first seen now).
    pub fn with_history(mut self, history: impl IntoIterator<Item = Point>, cfg: &RateConfig) -> Self {
        for p in history {
            self.push_history(p, cfg);
        }
        self
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    fn push_history(&mut self, p: Point, cfg: &RateConfig) {
        self.history.push_back(p);
        while self.history.len() > cfg.baseline_minutes.max(1) {
            self.history.pop_front();
        }
    }

    /// Observes one final minute (in increasing minute order) and returns the anomaly state to
    /// emit, if any.
    pub fn observe(&mut self, minute: i64, count: i64, total: i64, cfg: &RateConfig) -> Option<Anomaly> {
        if total <= 0 {
            return None;
        }
        let rate = count as f64 / total as f64;
        let Some(j) = score(&self.history, rate, Some((count, total)), cfg) else {
            self.push_history(Point { minute, count, total }, cfg);
            return None;
        };
        if !j.anomalous {
            self.push_history(Point { minute, count, total }, cfg);
        }
        match (&mut self.active, j.anomalous) {
            (None, false) => None,
            (None, true) => {
                let sev = severity(j.z, cfg);
                let id =
                    format!("{}:{}:{}:{}", self.rule.as_str(), self.dimension.as_str(), self.value, minute_id(minute));
                let a = self.anomaly(&id, 0, AnomalyState::Firing, minute, minute, count, total, &j, sev, cfg);
                self.active = Some(Active {
                    id,
                    first_seen: minute,
                    sequence: 0,
                    normal_streak: 0,
                    severity: sev,
                    last: a.clone(),
                });
                Some(a)
            }
            (Some(act), true) => {
                act.sequence += 1;
                act.normal_streak = 0;
                act.severity = act.severity.max(severity(j.z, cfg));
                let (id, first, seq, sev) = (act.id.clone(), act.first_seen, act.sequence, act.severity);
                let a = self.anomaly(&id, seq, AnomalyState::Updated, first, minute, count, total, &j, sev, cfg);
                if let Some(act) = &mut self.active {
                    act.last = a.clone();
                }
                Some(a)
            }
            (Some(act), false) => {
                let label = self_label(self.rule, &self.value);
                act.normal_streak += 1;
                if act.normal_streak < cfg.resolve_after_minutes.max(1) {
                    return None;
                }
                let mut a = act.last.clone();
                a.sequence = act.sequence + 1;
                a.state = AnomalyState::Resolved;
                a.last_updated = minute + MINUTE_MS;
                a.resolved_at = Some(minute + MINUTE_MS);
                a.message = format!(
                    "Resolved at {} UTC after {} normal minutes: {} back to {} (baseline {}). Started {} UTC.",
                    hm(minute + MINUTE_MS),
                    act.normal_streak,
                    label,
                    pct(rate),
                    pct(j.mean),
                    hm(act.first_seen)
                );
                self.active = None;
                Some(a)
            }
        }
    }

    fn label(&self) -> String {
        self_label(self.rule, &self.value)
    }

    #[allow(clippy::too_many_arguments)]
    fn anomaly(
        &self,
        id: &str,
        sequence: i64,
        state: AnomalyState,
        first_seen: i64,
        minute: i64,
        count: i64,
        total: i64,
        j: &Judgement,
        sev: Severity,
        cfg: &RateConfig,
    ) -> Anomaly {
        let p = j.p_value.map(|p| format!(", p = {p:.1e}")).unwrap_or_default();
        let message = format!(
            "{} {} ({count} of {total}) in {}–{} UTC vs a baseline of {} ± {} over {} minutes: z = {:.1}{p} (fires at z ≥ {:.1}); {}.",
            capitalise(&self.label()),
            pct(j.rate),
            hm(minute),
            hm(minute + MINUTE_MS),
            pct(j.mean),
            pct(j.spread),
            j.n,
            j.z,
            cfg.z_threshold,
            sev.as_str()
        );
        Anomaly {
            id: id.to_owned(),
            sequence,
            rule: self.rule,
            dimension: self.dimension,
            dimension_value: self.value.clone(),
            window_start: Some(minute),
            window_end: Some(minute + MINUTE_MS),
            transaction_id: None,
            category: None,
            merchant_id: None,
            observed: j.rate,
            observed_count: count,
            observed_total: total,
            baseline_mean: j.mean,
            baseline_stddev: j.spread,
            baseline_n: j.n as i64,
            scored_on: "rate".into(),
            score: j.z,
            p_value: j.p_value,
            threshold: cfg.z_threshold,
            severity: sev,
            state,
            message,
            first_seen,
            last_updated: minute + MINUTE_MS,
            resolved_at: None,
        }
    }
}

fn self_label(rule: AnomalyRule, value: &str) -> String {
    match rule {
        AnomalyRule::DeniedRate => "denied rate".into(),
        AnomalyRule::FailedRate => "failed rate".into(),
        AnomalyRule::ReversedRate => "reversed rate".into(),
        _ => format!("share of auth code {value}"),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// Minute start as `YYYY-MM-DDTHH:MMZ`, for ids.
pub fn minute_id(minute: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(minute)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
