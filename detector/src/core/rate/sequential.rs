//! The arithmetic of the sequential rate rule: binomial CUSUMs (Page's test on the
//! log-likelihood ratio), their thresholds from a false-alarm target, and the baseline they
//! judge against.
//!
//! ## The statistic
//! For a minute with `x` matching transactions of `n`, a baseline rate `p0` and a design shift
//! `p1 = r·p0`, the log-likelihood ratio of "rate p1" against "rate p0" is
//!
//! ```text
//! λ = x·ln(p1/p0) + (n − x)·ln((1 − p1)/(1 − p0))
//! ```
//!
//! and the CUSUM is `S_t = max(0, S_{t−1} + λ_t/φ)`, where `φ ≥ 1` is the baseline's dispersion
//! (quasi-likelihood: real rates wobble more than a binomial, and a minute's evidence counts for
//! that much less). `S` adds up evidence while the rate sits above `p0` and falls back to zero
//! while it does not, so a moderate shift that lasts is found as surely as a strong short one,
//! and a minute of 5 transactions moves `S` by little: its λ is small.
//!
//! ## The threshold
//! Under the baseline rate the increments have negative mean, and `e^S` started from a
//! restart is a non-negative martingale; the average run length to a false alarm of Page's
//! test with threshold `h` on log-likelihood-ratio increments is at least `e^h` (Lorden 1971;
//! Siegmund 1985, ch. II). So a target of at most `F` false alarms per week across `N` series,
//! each watched by `K` CUSUMs (one per design shift), is met by
//!
//! ```text
//! ARL₀ per CUSUM = K · N · W / F          (W = 10 080 minutes per week)
//! h = ln(ARL₀)
//! ```
//!
//! The bound is conservative (it ignores the overshoot over `h`), so the measured false-alarm
//! rate lies below the target; `tests` measure both. The target is shared out between three
//! levels, a third each: the global series (the three statuses and every auth code's share,
//! counted as they are at each minute), the categories and the merchants (counted by the
//! configured `category_series` and `merchant_series`, since no partition sees the others').
//!
//! ## The baseline
//! `p0` is estimated from the last `baseline_minutes` clean minutes (pooled count over pooled
//! total). A minute enters the baseline only after `quarantine_minutes`, and never when an
//! incident was found in it: evidence often builds for a few minutes before an alarm, and those
//! minutes must not teach the baseline that the incident is normal. While evidence builds (a
//! CUSUM past half its bar) the quarantine holds its minutes, up to eight times its length, so
//! a slow incident at low volume does not leak in before it fires. The estimate's own
//! uncertainty is charged to the baseline: `p0 = (c + 1 + √((c + 1)·φ)) / n` for `c` matching of
//! `n` baseline transactions, one standard deviation above the count (plus one), so a short or
//! quiet baseline, or a rare outcome seen only a few times, does not make the normal rate look
//! like a shift.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Point;
use crate::core::config::RateConfig;

/// While evidence builds, the quarantine holds up to this many times its length (then the oldest
/// minutes join the baseline anyway: a rate that has truly moved becomes the new normal
/// unless it fires).
const HOLD_FACTOR: usize = 8;
/// Minutes in a week, the unit of the false-alarm target.
pub const WEEK_MINUTES: f64 = 7.0 * 24.0 * 60.0;
/// Largest rate a shifted hypothesis may take (a rate of 1 makes every approval infinitely
/// surprising).
const MAX_P1: f64 = 0.999;

/// Which share of the false-alarm target a series draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The global status rates and the auth codes' shares.
    Global,
    Category,
    Merchant,
}

/// The bar a CUSUM must reach, and what it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Threshold on the CUSUM (natural log of a likelihood ratio).
    pub h: f64,
    /// Average run length to a false alarm of one CUSUM at that threshold, in minutes (a lower
    /// bound: `e^h`).
    pub arl_minutes: f64,
    /// How many series the target was divided among.
    pub series: usize,
}

impl Bar {
    /// The threshold for one of `series` series at `level`.
    pub fn for_level(cfg: &RateConfig, level: Level, series: usize) -> Bar {
        let series = match level {
            Level::Global => series,
            Level::Category => cfg.category_series,
            Level::Merchant => cfg.merchant_series,
        }
        .max(1);
        let per_level = cfg.false_alarms_per_week.max(1e-9) / 3.0;
        let cusums = cfg.design_shifts.len().max(1) as f64;
        let arl = cusums * series as f64 * WEEK_MINUTES / per_level;
        Bar { h: arl.ln(), arl_minutes: arl, series }
    }

    /// False alarms per week this bar allows across its level's series.
    pub fn false_alarms_per_week(&self, cusums: usize) -> f64 {
        cusums as f64 * self.series as f64 * WEEK_MINUTES / self.arl_minutes
    }
}

/// λ of `x` of `n` for rate `p1` against `p0` (both in (0, 1)).
pub fn llr(x: i64, n: i64, p0: f64, p1: f64) -> f64 {
    let (x, n) = (x as f64, n as f64);
    x * (p1 / p0).ln() + (n - x) * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// The shifted rate a design ratio stands for.
pub fn shifted(p0: f64, ratio: f64) -> f64 {
    (p0 * ratio).min(MAX_P1).max(p0 + 1e-9)
}

/// One CUSUM and the run of minutes it has added up since it last stood at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    pub s: f64,
    /// First minute of the current run (meaningful while `s > 0`).
    pub since: i64,
    /// Matching and all transactions over the run.
    pub count: i64,
    pub total: i64,
    /// Minutes in the run.
    pub minutes: u32,
}

impl Cusum {
    pub fn step(&mut self, minute: i64, x: i64, n: i64, increment: f64) {
        if self.s <= 0.0 {
            *self = Cusum { s: 0.0, since: minute, count: 0, total: 0, minutes: 0 };
        }
        self.s = (self.s + increment).max(0.0);
        if self.s > 0.0 {
            self.count += x;
            self.total += n;
            self.minutes += 1;
        }
    }

    pub fn reset(&mut self) {
        *self = Cusum::default();
    }
}

/// What the baseline says the normal rate is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Pooled rate of the baseline minutes.
    pub pooled: f64,
    /// The rate judged against: one standard deviation above the count plus one, floored.
    pub p0: f64,
    /// Standard error of the pooled rate (dispersion included).
    pub se: f64,
    /// Dispersion: Pearson χ² of the baseline minutes over its degrees of freedom, ≥ 1.
    pub phi: f64,
    pub minutes: usize,
    pub total: i64,
}

/// Clean minutes, and the recent ones waiting to join them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub points: VecDeque<Point>,
    pub quarantine: VecDeque<Point>,
}

impl Baseline {
    /// Adds a minute: straight into the baseline when there is no quarantine.
    pub fn push(&mut self, p: Point, cfg: &RateConfig) {
        self.push_holding(p, false, cfg);
    }

    /// Adds a minute; with `hold`, the quarantine keeps its minutes (up to `HOLD_FACTOR` times
    /// its length) instead of releasing the oldest into the baseline.
    pub fn push_holding(&mut self, p: Point, hold: bool, cfg: &RateConfig) {
        self.quarantine.push_back(p);
        let keep = if hold { cfg.quarantine_minutes * HOLD_FACTOR } else { cfg.quarantine_minutes };
        while self.quarantine.len() > keep {
            if let Some(q) = self.quarantine.pop_front() {
                self.points.push_back(q);
            }
        }
        while self.points.len() > cfg.baseline_minutes.max(1) {
            self.points.pop_front();
        }
    }

    /// Drops the quarantined minutes from `minute` on (they belong to an incident); the
    /// earlier ones join the baseline.
    pub fn discard_from(&mut self, minute: i64, cfg: &RateConfig) {
        let keep: Vec<Point> = self.quarantine.drain(..).filter(|p| p.minute < minute).collect();
        self.points.extend(keep);
        while self.points.len() > cfg.baseline_minutes.max(1) {
            self.points.pop_front();
        }
    }

    pub fn estimate(&self, cfg: &RateConfig) -> Option<Estimate> {
        if self.points.len() < cfg.min_baseline_minutes.max(1) {
            return None;
        }
        let (c, n) = self.points.iter().fold((0i64, 0i64), |(c, n), p| (c + p.count, n + p.total));
        if n <= 0 {
            return None;
        }
        let pooled = c as f64 / n as f64;
        let pf = pooled.clamp(cfg.rate_floor, 1.0 - cfg.rate_floor);
        let chi2: f64 = self
            .points
            .iter()
            .filter(|p| p.total > 0)
            .map(|p| {
                let e = p.total as f64 * pf;
                (p.count as f64 - e).powi(2) / (e * (1.0 - pf))
            })
            .sum();
        let df = (self.points.len() - 1).max(1) as f64;
        let phi = (chi2 / df).clamp(1.0, cfg.max_dispersion.max(1.0));
        let se = (pf * (1.0 - pf) * phi / n as f64).sqrt();
        // One (Poisson) standard deviation above the count plus one: about the pooled rate
        // plus one standard error for a large count, and still cautious for a count near zero
        // (a quiet series' rare outcome seen 0 or 2 times in its baseline).
        let c1 = (c + 1) as f64;
        let p0 = ((c1 + (c1 * phi).sqrt()) / n as f64).clamp(cfg.rate_floor, 0.5);
        Some(Estimate { pooled, p0, se, phi, minutes: self.points.len(), total: n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_log_of_the_run_length_the_target_asks_for() {
        let cfg = RateConfig::default();
        // K CUSUMs, 6 series, a third of one false alarm per week.
        let k = cfg.design_shifts.len();
        let bar = Bar::for_level(&cfg, Level::Global, 6);
        let arl = k as f64 * 6.0 * WEEK_MINUTES * 3.0;
        assert!((bar.arl_minutes - arl).abs() < 1e-6);
        assert!((bar.h - arl.ln()).abs() < 1e-9);
        assert!((bar.false_alarms_per_week(k) - 1.0 / 3.0).abs() < 1e-9);
        // More series, a stricter bar for each.
        assert!(Bar::for_level(&cfg, Level::Merchant, 0).h > Bar::for_level(&cfg, Level::Category, 0).h);
        assert!(Bar::for_level(&cfg, Level::Global, 20).h > bar.h);
    }

    #[test]
    fn the_llr_favours_the_shift_only_above_the_crossover_rate() {
        let (p0, p1) = (0.05, 0.10);
        assert!(llr(5, 100, p0, p1) < 0.0);
        assert!(llr(10, 100, p0, p1) > 0.0);
        // A minute of no traffic is no evidence.
        assert_eq!(llr(0, 0, p0, p1), 0.0);
    }

    #[test]
    fn a_cusum_restarts_its_run_after_touching_zero() {
        let mut c = Cusum::default();
        c.step(0, 1, 10, 2.0);
        c.step(60_000, 1, 10, -5.0);
        assert_eq!(c.s, 0.0);
        c.step(120_000, 3, 10, 1.5);
        assert_eq!((c.since, c.count, c.total, c.minutes), (120_000, 3, 10, 1));
    }

    #[test]
    fn dispersion_is_one_for_binomial_minutes_and_grows_with_extra_noise() {
        let cfg = RateConfig { quarantine_minutes: 0, ..RateConfig::default() };
        let mut b = Baseline::default();
        for i in 0..60 {
            b.push(Point { minute: i, count: 10, total: 200 }, &cfg);
        }
        assert_eq!(b.estimate(&cfg).unwrap().phi, 1.0);
        let mut b = Baseline::default();
        for i in 0..60 {
            b.push(Point { minute: i, count: if i % 2 == 0 { 2 } else { 18 }, total: 200 }, &cfg);
        }
        let e = b.estimate(&cfg).unwrap();
        assert!(e.phi > 5.0, "{e:?}");
        assert!(e.p0 > e.pooled);
    }

    #[test]
    fn quarantined_minutes_of_an_incident_never_reach_the_baseline() {
        let cfg = RateConfig { quarantine_minutes: 5, ..RateConfig::default() };
        let mut b = Baseline::default();
        for i in 0..10 {
            b.push(Point { minute: i, count: 1, total: 10 }, &cfg);
        }
        assert_eq!(b.points.len(), 5);
        b.discard_from(7, &cfg);
        assert_eq!(b.points.iter().map(|p| p.minute).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(b.quarantine.is_empty());
    }
}
