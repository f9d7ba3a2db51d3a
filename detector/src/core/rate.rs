//! Rate anomalies: a series' denied / failed / reversed (or auth-code) rate, minute by minute,
//! against its own baseline. One series per rule and dimension: global, per auth code, per
//! category and per merchant.
//!
//! Two ways to judge a minute (`RateConfig::method`):
//!
//! * **Sequential** (the default, [`sequential`]): evidence accumulates over minutes in binomial
//!   CUSUMs, one per design shift (1.5×, 2× and 4× the normal rate by default). A strong spike fires
//!   within a minute or two, a moderate shift that lasts fires once enough minutes have added up,
//!   and a minute of a handful of transactions contributes little evidence either way. The
//!   threshold comes from a false-alarm target (one per week across every rate series by
//!   default); see `sequential.rs` for the derivation.
//! * **Minute test** (the rule before): each minute alone must pass z ≥ `z_threshold` and a
//!   binomial tail ≤ `max_p_value`; kept so the evaluation can score both side by side.
//!
//! **Life cycle.** An anomaly fires once (`firing`, sequence 0) and is `updated` every minute
//! the rate is still above its normal range. With the sequential method "still above" is a
//! lower bar than firing: a second statistic adds up the evidence that the rate is back at
//! normal rather than at the incident's level, and a minute counts as back in range once that
//! evidence reaches `back_odds` to one. The anomaly resolves after `resolve_after_minutes`
//! minutes back in range in a row; one incident is one anomaly per series, whatever its length.
//! Severity escalates with the size of the shift (the incident's rate over the normal one) and
//! with the evidence piled up; an update reports the highest severity reached.
//!
//! **Baseline.** Minutes of an incident never enter the baseline, so a long incident does not
//! become the new normal; with the sequential method a minute joins only after a quarantine,
//! and the minutes whose evidence led to an alarm are dropped.

pub mod sequential;

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Severity};

use self::sequential::{llr, shifted, Bar, Baseline, Cusum, Estimate, Level};
use super::config::{RateConfig, RateMethod, MINUTE_MS};
use super::format::{capitalise, count as fmt_count, hm, pct};
use super::legacy::RateSeriesV2;
use super::stats::RunningStats;

/// One baseline minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub minute: i64,
    pub count: i64,
    pub total: i64,
}

/// The minute test's judgement of one minute against its baseline.
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

/// The minute test: scores `count` of `total` (or a bare rate when `total` is `None`) against
/// `history`. `None` while the baseline is shorter than `min_baseline_minutes`.
pub fn score<'a>(
    history: impl IntoIterator<Item = &'a Point> + Clone,
    rate: f64,
    count_total: Option<(i64, i64)>,
    cfg: &RateConfig,
) -> Option<Judgement> {
    let n = history.clone().into_iter().count();
    if n < cfg.min_baseline_minutes.max(1) {
        return None;
    }
    let rates = RunningStats::of(history.clone().into_iter().map(|p| {
        if p.total > 0 {
            p.count as f64 / p.total as f64
        } else {
            0.0
        }
    }));
    let (sum_c, sum_n) = history.into_iter().fold((0i64, 0i64), |(c, n), p| (c + p.count, n + p.total));
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
    Some(Judgement { rate, mean: rates.mean, pooled, spread, n, z, p_value, anomalous })
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

/// See `Active::quiet`.
const QUIET_FACTOR: u32 = 5;

/// An incident in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Active {
    id: String,
    first_seen: i64,
    sequence: i64,
    normal_streak: u32,
    severity: Severity,
    last: Anomaly,
    /// Sequential: evidence that the rate is back at normal rather than at the incident's level.
    back: f64,
    /// Sequential: matching and all transactions since the alarm (the incident's level).
    count: i64,
    total: i64,
    /// Sequential: the incident's evidence, added up since its run began (uncapped).
    evidence: f64,
    /// Sequential: minutes in a row whose own rate was under the midpoint between normal and
    /// the smallest design shift.
    quiet: u32,
}

/// One watched rate (e.g. the global denied rate, or the share of auth code 51).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateSeries {
    pub rule: AnomalyRule,
    pub dimension: AnomalyDimension,
    pub value: String,
    baseline: Baseline,
    /// One per design shift (`RateConfig::design_shifts`).
    cusums: Vec<Cusum>,
    active: Option<Active>,
}

/// What a minute said, for the life cycle.
struct Verdict {
    fire: bool,
    still_bad: bool,
    severity: Severity,
    explain: Explain,
}

/// The numbers an anomaly state reports.
struct Explain {
    window_start: i64,
    window_end: i64,
    count: i64,
    total: i64,
    expected: f64,
    spread: f64,
    baseline_n: i64,
    scored_on: &'static str,
    score: f64,
    p_value: Option<f64>,
    threshold: f64,
    detail: String,
}

impl Explain {
    /// A sequential state: the minute judged against the baseline's rate, the CUSUM `score`
    /// against its bar.
    fn sequential(p: Point, est: &Estimate, bar: Bar, score: f64, detail: String) -> Explain {
        Explain {
            window_start: p.minute,
            window_end: p.minute + MINUTE_MS,
            count: p.count,
            total: p.total,
            expected: est.p0 * p.total as f64,
            spread: est.se,
            baseline_n: est.minutes as i64,
            scored_on: "rate_cusum",
            score,
            p_value: Some(binomial_upper_tail(p.count, p.total, est.p0)),
            threshold: bar.h,
            detail,
        }
    }
}

impl RateSeries {
    pub fn new(rule: AnomalyRule, dimension: AnomalyDimension, value: &str) -> Self {
        RateSeries {
            rule,
            dimension,
            value: value.to_owned(),
            baseline: Baseline::default(),
            cusums: Vec::new(),
            active: None,
        }
    }

    /// Starts with a history (e.g. zeros for an auth code first seen now).
    pub fn with_history(mut self, history: impl IntoIterator<Item = Point>, cfg: &RateConfig) -> Self {
        for p in history {
            self.baseline.push(p, cfg);
        }
        self
    }

    /// A series from a checkpoint of version 1 or 2: its baseline minutes and its incident carry
    /// over; the CUSUMs start from zero (an open incident stays open).
    pub fn from_v2(v2: RateSeriesV2) -> Self {
        let mut s = RateSeries::new(v2.rule, v2.dimension, &v2.value);
        s.baseline.points =
            v2.history.iter().map(|p| Point { minute: p.minute, count: p.count, total: p.total }).collect();
        s.active = v2.active.map(|a| Active {
            id: a.id,
            first_seen: a.first_seen,
            sequence: a.sequence,
            normal_streak: a.normal_streak,
            severity: a.severity,
            count: a.last.observed_count,
            total: a.last.observed_total,
            last: a.last,
            back: 0.0,
            evidence: 0.0,
            quiet: 0,
        });
        s
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Which share of the false-alarm target this series draws on.
    pub fn level(&self) -> Level {
        match self.dimension {
            AnomalyDimension::Global | AnomalyDimension::AuthCode => Level::Global,
            AnomalyDimension::Category => Level::Category,
            AnomalyDimension::Merchant => Level::Merchant,
        }
    }

    /// Observes one final minute (in increasing minute order) and returns the anomaly state to
    /// emit, if any. `series` is how many series of this one's level are judged now (used by
    /// the global level's threshold; the others use the configured counts).
    pub fn observe(&mut self, minute: i64, count: i64, total: i64, series: usize, cfg: &RateConfig) -> Option<Anomaly> {
        if total <= 0 {
            return None;
        }
        let point = Point { minute, count, total };
        let verdict = match cfg.method {
            RateMethod::MinuteTest => self.minute_test(point, cfg),
            RateMethod::Sequential => self.sequential(point, Bar::for_level(cfg, self.level(), series), cfg),
        }?;
        self.life_cycle(minute, count, total, verdict, cfg)
    }

    fn minute_test(&mut self, p: Point, cfg: &RateConfig) -> Option<Verdict> {
        let rate = p.count as f64 / p.total as f64;
        let Some(j) = score(
            self.baseline.points.iter().chain(self.baseline.quarantine.iter()),
            rate,
            Some((p.count, p.total)),
            cfg,
        ) else {
            self.baseline.push(p, cfg);
            return None;
        };
        if !j.anomalous {
            self.baseline.push(p, cfg);
        }
        let severity = if j.z >= cfg.z_critical {
            Severity::Critical
        } else if j.z >= cfg.z_high {
            Severity::High
        } else {
            Severity::Medium
        };
        let pv = j.p_value.map(|p| format!(", p = {p:.1e}")).unwrap_or_default();
        let detail = format!(
            "vs a baseline of {} ± {} over {} minutes: z = {:.1}{pv} (fires at z ≥ {:.1})",
            pct(j.mean),
            pct(j.spread),
            j.n,
            j.z,
            cfg.z_threshold
        );
        Some(Verdict {
            fire: j.anomalous,
            still_bad: j.anomalous,
            severity,
            explain: Explain {
                window_start: p.minute,
                window_end: p.minute + MINUTE_MS,
                count: p.count,
                total: p.total,
                expected: j.mean * p.total as f64,
                spread: j.spread,
                baseline_n: j.n as i64,
                scored_on: "rate",
                score: j.z,
                p_value: j.p_value,
                threshold: cfg.z_threshold,
                detail,
            },
        })
    }

    fn sequential(&mut self, p: Point, bar: Bar, cfg: &RateConfig) -> Option<Verdict> {
        let shifts = &cfg.design_shifts;
        if self.cusums.len() != shifts.len() {
            self.cusums = vec![Cusum::default(); shifts.len()];
        }
        let Some(est) = self.baseline.estimate(cfg) else {
            self.baseline.push(p, cfg);
            return None;
        };
        let (x, n) = (p.count, p.total);
        for (c, r) in self.cusums.iter_mut().zip(shifts) {
            c.step(p.minute, x, n, llr(x, n, est.p0, shifted(est.p0, *r)) / est.phi);
        }
        // The CUSUM furthest past its bar fires; its run is the evidence.
        let (k, best) = self
            .cusums
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.s.total_cmp(&b.1.s))
            .map(|(k, c)| (k, *c))
            .unwrap_or((0, Cusum::default()));
        match &mut self.active {
            None => {
                let fire = best.s >= bar.h && best.count >= cfg.min_count;
                if fire {
                    // The run's minutes were the incident building up: none joins the baseline.
                    self.baseline.discard_from(best.since, cfg);
                } else {
                    // While evidence is building (past half the bar), the quarantine holds its
                    // minutes: a slow incident must not leak into the baseline before it fires.
                    self.baseline.push_holding(p, best.s >= bar.h / 2.0, cfg);
                }
                // Above the bar without the count: hold at the bar until the count is there.
                for c in &mut self.cusums {
                    c.s = c.s.min(bar.h);
                }
                let ratio = rate_of(best.count, best.total) / est.pooled.max(cfg.rate_floor);
                let severity = severity_of(ratio, best.s, bar.h, cfg);
                let explain = self.explain_run(p, &best, shifts.get(k).copied().unwrap_or(1.0), &est, bar, cfg);
                Some(Verdict { fire, still_bad: fire, severity, explain })
            }
            Some(act) => {
                act.count += x;
                act.total += n;
                // The incident's level: its own pooled rate, at least the smallest design shift.
                let smallest = shifts.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
                let p_incident = rate_of(act.count, act.total).max(shifted(est.p0, smallest));
                act.back = (act.back + llr(x, n, p_incident, est.p0) / est.phi).max(0.0);
                act.evidence += llr(x, n, est.p0, p_incident).max(0.0) / est.phi;
                let back_bar = cfg.back_odds.max(1.0).ln();
                // Back in range once the evidence reaches the odds; then it stays so while any
                // evidence for normal remains (one noisy minute does not restart the count).
                let midpoint = est.p0 * (1.0 + (smallest - 1.0) / 2.0);
                act.quiet = if rate_of(x, n) <= midpoint { act.quiet + 1 } else { 0 };
                // A weak incident's return is slow to prove at low volume: a long enough run of
                // quiet minutes (QUIET_FACTOR × RESOLVE_AFTER_MINUTES) counts as back too.
                let quiet_enough = act.quiet >= QUIET_FACTOR * cfg.resolve_after_minutes.max(1);
                let still_bad =
                    !quiet_enough && if act.normal_streak > 0 { act.back <= 0.0 } else { act.back < back_bar };
                for c in &mut self.cusums {
                    c.s = c.s.min(bar.h);
                }
                let ratio = rate_of(x, n) / est.pooled.max(cfg.rate_floor);
                let incident_ratio = rate_of(act.count, act.total) / est.pooled.max(cfg.rate_floor);
                let severity = severity_of(ratio.max(incident_ratio), act.evidence, bar.h, cfg);
                let detail = format!(
                    "against a normal {} ({} expected of {n}); {} of {} ({}) since the alarm; back-to-normal evidence ln LR = {:.1} (back in range at {:.1})",
                    pct(est.pooled),
                    fmt_count(est.p0 * n as f64),
                    act.count,
                    act.total,
                    pct(rate_of(act.count, act.total)),
                    act.back,
                    back_bar
                );
                let explain = Explain::sequential(p, &est, bar, best.s, detail);
                if !still_bad {
                    // Back in range: the minute is normal again and may join the baseline.
                    self.baseline.push(p, cfg);
                }
                Some(Verdict { fire: false, still_bad, severity, explain })
            }
        }
    }

    /// The minute judged is the anomaly's window and observation; the evidence that fired it
    /// (the CUSUM's run of minutes, observed against expected counts, the statistic, the bar
    /// and the false-alarm rate the bar stands for) is in the message.
    fn explain_run(&self, p: Point, run: &Cusum, ratio: f64, est: &Estimate, bar: Bar, cfg: &RateConfig) -> Explain {
        let expected = est.p0 * run.total as f64;
        let weeks = bar.false_alarms_per_week(cfg.design_shifts.len());
        let detail = format!(
            "(normal {}); evidence over {} minute{} from {} UTC: {} of {} ({}) against {} expected (baseline {} minutes, dispersion {:.2}), ln LR = {:.1} for a {ratio}× shift, fires at {:.1}, a bar that allows {} false alarm{} a week across {} series of this level",
            pct(est.pooled),
            run.minutes,
            if run.minutes == 1 { "" } else { "s" },
            hm(run.since),
            run.count,
            run.total,
            pct(rate_of(run.count, run.total)),
            fmt_count(expected),
            est.minutes,
            est.phi,
            run.s,
            bar.h,
            fmt_count(weeks),
            if (weeks - 1.0).abs() < 1e-9 { "" } else { "s" },
            bar.series
        );
        Explain::sequential(p, est, bar, run.s, detail)
    }

    fn life_cycle(&mut self, minute: i64, count: i64, total: i64, v: Verdict, cfg: &RateConfig) -> Option<Anomaly> {
        match &mut self.active {
            None if !v.fire => None,
            None => {
                let id =
                    format!("{}:{}:{}:{}", self.rule.as_str(), self.dimension.as_str(), self.value, minute_id(minute));
                let a = self.anomaly(&id, 0, AnomalyState::Firing, minute, minute, &v.explain, v.severity);
                self.active = Some(Active {
                    id,
                    first_seen: minute,
                    sequence: 0,
                    normal_streak: 0,
                    severity: v.severity,
                    last: a.clone(),
                    back: 0.0,
                    count,
                    total,
                    evidence: v.explain.score,
                    quiet: 0,
                });
                Some(a)
            }
            Some(act) if v.still_bad => {
                act.sequence += 1;
                act.normal_streak = 0;
                act.severity = act.severity.max(v.severity);
                let (id, first, seq, sev) = (act.id.clone(), act.first_seen, act.sequence, act.severity);
                let a = self.anomaly(&id, seq, AnomalyState::Updated, first, minute, &v.explain, sev);
                if let Some(act) = &mut self.active {
                    act.last = a.clone();
                }
                Some(a)
            }
            Some(act) => {
                act.normal_streak += 1;
                if act.normal_streak < cfg.resolve_after_minutes.max(1) {
                    return None;
                }
                let rate = rate_of(count, total);
                let mut a = act.last.clone();
                a.sequence = act.sequence + 1;
                a.state = AnomalyState::Resolved;
                a.last_updated = minute + MINUTE_MS;
                a.resolved_at = Some(minute + MINUTE_MS);
                a.message = format!(
                    "Resolved at {} UTC after {} minutes back in range: {} at {} (normal {}). Started {} UTC.",
                    hm(minute + MINUTE_MS),
                    act.normal_streak,
                    self_label(self.rule, self.dimension, &self.value),
                    pct(rate),
                    pct(v.explain.expected / total.max(1) as f64),
                    hm(act.first_seen)
                );
                self.active = None;
                for c in &mut self.cusums {
                    c.reset();
                }
                Some(a)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn anomaly(
        &self,
        id: &str,
        sequence: i64,
        state: AnomalyState,
        first_seen: i64,
        minute: i64,
        e: &Explain,
        sev: Severity,
    ) -> Anomaly {
        let rate = rate_of(e.count, e.total);
        let message = format!(
            "{} {} ({} of {}) in {}–{} UTC {}; {}.",
            capitalise(&self_label(self.rule, self.dimension, &self.value)),
            pct(rate),
            e.count,
            e.total,
            hm(e.window_start),
            hm(e.window_end),
            e.detail,
            sev.as_str()
        );
        let (category, merchant_id) = category_and_merchant(self.dimension, &self.value);
        Anomaly {
            id: id.to_owned(),
            sequence,
            rule: self.rule,
            dimension: self.dimension,
            dimension_value: self.value.clone(),
            window_start: Some(e.window_start),
            window_end: Some(e.window_end),
            transaction_id: None,
            category,
            merchant_id,
            observed: rate,
            observed_count: e.count,
            observed_total: e.total,
            baseline_mean: e.expected / e.total.max(1) as f64,
            baseline_stddev: e.spread,
            baseline_n: e.baseline_n,
            scored_on: e.scored_on.into(),
            score: e.score,
            p_value: e.p_value,
            threshold: e.threshold,
            severity: sev,
            state,
            message,
            first_seen,
            last_updated: minute + MINUTE_MS,
            resolved_at: None,
        }
    }
}

fn rate_of(count: i64, total: i64) -> f64 {
    if total > 0 {
        count as f64 / total as f64
    } else {
        0.0
    }
}

/// Severity of a sequential alarm: by how many times the normal rate the incident runs at, and
/// at least high once its evidence is well past the bar (a shift that persists).
fn severity_of(ratio: f64, evidence: f64, h: f64, cfg: &RateConfig) -> Severity {
    if ratio >= cfg.ratio_critical {
        Severity::Critical
    } else if ratio >= cfg.ratio_high || evidence >= cfg.evidence_high * h {
        Severity::High
    } else {
        Severity::Medium
    }
}

fn self_label(rule: AnomalyRule, dimension: AnomalyDimension, value: &str) -> String {
    let what = match rule {
        AnomalyRule::DeniedRate => "denied rate".to_owned(),
        AnomalyRule::FailedRate => "failed rate".to_owned(),
        AnomalyRule::ReversedRate => "reversed rate".to_owned(),
        _ => format!("share of auth code {value}"),
    };
    match dimension {
        AnomalyDimension::Category => format!("{what} of category {value}"),
        AnomalyDimension::Merchant => format!("{what} of merchant {value}"),
        _ => what,
    }
}

/// An anomaly's `category` and `merchant_id` fields for a series of `dimension` and `value`.
pub fn category_and_merchant(dimension: AnomalyDimension, value: &str) -> (Option<String>, Option<String>) {
    match dimension {
        AnomalyDimension::Category => (Some(value.to_owned()), None),
        AnomalyDimension::Merchant => (None, Some(value.to_owned())),
        _ => (None, None),
    }
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
