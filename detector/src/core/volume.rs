//! The volume rules: transactions per minute that drop (down to none at all) or surge, judged
//! globally (stage 2, on final minutes) and per category and merchant (stage 1, on the
//! partition's final minutes; see [`KeyVolumes`]).
//!
//! ## The baseline: a damped level-and-trend model
//! The expected count of a minute comes from Holt's linear method with a damped trend, fitted to
//! the series' counts per minute (zeros included):
//!
//! ```text
//! level_t = α·x_t + (1 − α)·(level_{t−1} + d·trend_{t−1})
//! trend_t = β·(level_t − level_{t−1}) + (1 − β)·d·trend_{t−1}
//! μ_{t+k} = level_t + (d + d² + … + d^k)·trend_t
//! ```
//!
//! with α = `level_weight` (0.1: about ten minutes of noise averaged), β = `trend_weight`
//! (0.01: the slope over about a hundred minutes) and d = `trend_damping` (0.98). It follows
//! the daily cycle as it goes, with no history of earlier days: the morning ramp and the
//! evening fall are trends it extrapolates, so they are neither a surge nor a drop. Robustness:
//! a minute is clipped to the forecast ± 3 standard deviations before it is folded in, so one
//! odd minute moves the level by a tenth of three standard deviations at most.
//!
//! As for the rate rules, a minute joins the model only `quarantine_minutes` (15) after it was
//! judged, and never when an alarm found it part of an incident. Unlike the rate rules, the
//! quarantine does not hold its minutes while evidence builds: on a level that moves all day,
//! a model that stops learning falls behind the morning ramp, which builds more evidence, which
//! holds it longer (the normal days of `make evaluate` had 59 false alarms in 21 days with the
//! hold, 5 without). The forecast therefore reaches `quarantine_minutes + 1` minutes ahead in
//! normal times, further while an incident freezes
//! the model; the damped trend is extrapolated 60 minutes at most, so a model frozen through a
//! long incident does not run off along its trend. When the incident resolves, the level is
//! re-anchored on the minutes found back in range (the day moved on while the model was
//! frozen) and the trend is kept.
//!
//! What the model cannot know: a change slower than it adapts (traffic falling by half over
//! three hours) becomes the normal, and a step that recurs every day at the same time (a shop
//! opening at 09:00) looks like a surge the first minutes of every day.
//!
//! ## Earlier days: the profile, and which forecast judges
//! Global and category series also keep a [`Profile`]: for each 5-minute slot of the UTC day,
//! the slot's mean count a minute on each of the last three days (every minute counts, incidents
//! included), scaled by how the last clean minutes compare with it. From the second day there
//! are three forecasts of each minute: the level and trend's, the profile's, and their mean.
//! The level and trend's judges until another has erred less, over about the last day of judged
//! minutes (incidents included: a step that recurs at 09:00 is missed by the level and trend
//! every day, and the minutes it misses are exactly those its clean record leaves out) or over
//! its last clean minutes (the night's turn upwards, which the trend meets late every morning).
//! A profile forecast is judged with a dispersion of at least 1 + 5·v, where v·μ is the
//! variance of its slot's estimate (see [`profile_min_phi`]). On the normal weeks of `make
//! evaluate` (a weekend and a slow trend; the README) this took the volume rules from 21 false
//! alarms in 140 days to 16, and a step every morning at 09:00 is expected from the fourth day
//! (`tests.rs`). A change that lasts (a new opening hour) is learnt in two days: the median of
//! three.
//!
//! ## The statistic: quasi-Poisson CUSUMs
//! For a minute with `x` transactions where `μ` are expected, the log-likelihood ratio of
//! "ρ·μ expected" against "μ expected" under a Poisson model is
//!
//! ```text
//! λ = x·ln ρ − μ·(ρ − 1)
//! ```
//!
//! and each CUSUM is `S_t = max(0, S_{t−1} + λ_t/φ)`, one per design change ρ (drops 0.5 and
//! 0.1, surges 1.5 and 3 by default). `φ ≥ 1` is the dispersion: the mean squared Pearson
//! residual `(x − μ)²/μ` of the model's own forecasts on clean minutes (an exponentially
//! weighted mean over about 120 of them, each clipped at 25): counts that wobble more than a
//! Poisson, and the forecast's own error, make every minute's evidence count for that much
//! less. A minute where fewer than `min_expected` (2) transactions are expected is not judged:
//! at 4 expected, one minute with 1 adds λ ≈ 1.3, far from any bar, while ten such minutes in a
//! row do add up to an alarm (a 75 % drop that lasts).
//!
//! ## The threshold
//! As for the rate rules (`rate/sequential.rs`): the average run length to a false alarm of a
//! CUSUM on log-likelihood-ratio increments with threshold `h` is at least `e^h`, so at most
//! `F` false alarms a week across `N` series of a level, each watched by `K` CUSUMs, needs
//!
//! ```text
//! h = ln(K · N · 10 080 / (F / 3))
//! ```
//!
//! with the target `F` = `false_alarms_per_week` shared by thirds between the global series,
//! the categories (`category_series`) and the merchants (`merchant_series`). With the defaults
//! (K = 4): h = 11.7 globally, 16.3 for a category and 18.6 for a merchant. A global stop at
//! 50 expected a minute adds 45 a minute (fires in its first minute); a halving at 50 adds 7.7
//! a minute (two minutes); a merchant at 10 a minute that stops adds 9 a minute (three).
//!
//! ## Life cycle
//! One incident is one anomaly per series: firing when a CUSUM reaches its bar (with at least
//! `min_excess` transactions missing or extra over its evidence), then updated every minute
//! while the evidence says the volume is still off: a back-to-normal statistic (the CUSUM of
//! "normal" against "the incident's own level") must reach `back_odds` (100 to one) for a
//! minute to count as back in range, and `resolve_after_minutes` (2) such minutes in a row
//! resolve it. A minute without a transaction during a drop is never back in range. Severity:
//! a drop to 10 % or less of the expected volume is critical, to half or less high, a surge to
//! 3× or more high, anything else medium; one tier lower when fewer than `min_at_stake` (10)
//! transactions a minute were expected. It only rises while the incident lasts.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use statrs::distribution::{DiscreteCDF, Poisson};
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Severity};

use super::config::{VolumeConfig, MINUTE_MS};
use super::format::{capitalise, count as fmt_count, hm};
use super::legacy::{KeyVolumesV4, VolumeSeriesV4};
use super::rate::sequential::WEEK_MINUTES;
use super::rate::{category_and_merchant, minute_id};

/// The trend is extrapolated this many minutes at most (a model frozen through a long incident).
const MAX_STEPS: i64 = 60;
/// Residuals folded into the dispersion are clipped here (five standard deviations).
const MAX_RESIDUAL: f64 = 25.0;
/// The dispersion averages about this many recent residuals.
const DISPERSION_MINUTES: u32 = 120;
/// A minute is clipped to the forecast ± this many standard deviations before it is folded in.
const CLIP_SDS: f64 = 3.0;
/// The normal range reported with each forecast: ± this many standard deviations.
const BAND_SDS: f64 = 3.0;
/// The profile of earlier days keeps one value per slot of this length of the UTC day.
const SLOT_MS: i64 = 5 * MINUTE_MS;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
const SLOTS: usize = (DAY_MS / SLOT_MS) as usize;
/// Days of the profile: the median of the last three.
const PROFILE_DAYS: usize = 3;
/// The least dispersion a profile forecast is judged with: 1 + 5·v, where v·μ is the variance of
/// its slot's estimate. The estimate is the mean of n days' 5-minute means (n = 1, 2: variance
/// μ/(5n)) or the median of three (about 1.35·μ/15); its error is the same for the 5 minutes of
/// the slot, so over a run within a slot (what a CUSUM adds up) it adds k²·vμ to the k·μ of the
/// counts: φ = 1 + k·v, k = 5: 2 after one day, 1.5 after two, 1.45 after three. The mean of
/// the profile's forecast and the level-and-trend model's carries half that error: a quarter of
/// the variance.
fn profile_min_phi(v: f64, blend: bool) -> f64 {
    1.0 + v * if blend { 0.25 } else { 1.0 }
}
/// Which forecast judges a minute is chosen on each forecaster's errors over about a day of
/// judged minutes, incidents included...
const RECORD_MINUTES: u32 = 1440;
/// ... once it holds this many of them.
const PROVEN_MINUTES: u32 = 720;
/// The incident's own level, against which "back to normal" is judged, stays at least this far
/// from the normal one: a drop to at most this fraction, a surge to at least its inverse.
const INCIDENT_RATIO: f64 = 0.75;
/// A stop's incident level is taken as at least this fraction (the likelihood of any traffic
/// under "none at all" would be zero).
const MIN_INCIDENT_RATIO: f64 = 0.05;

/// Which share of the false-alarm target a series draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Global,
    Category,
    Merchant,
}

impl Level {
    pub fn of(dimension: AnomalyDimension) -> Level {
        match dimension {
            AnomalyDimension::Category => Level::Category,
            AnomalyDimension::Merchant => Level::Merchant,
            _ => Level::Global,
        }
    }
}

/// The bar a volume CUSUM must reach, and what it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub h: f64,
    /// Average run length to a false alarm of one CUSUM, in minutes (a lower bound: `e^h`).
    pub arl_minutes: f64,
    pub series: usize,
    pub cusums: usize,
}

impl Bar {
    pub fn for_level(cfg: &VolumeConfig, level: Level) -> Bar {
        let series = match level {
            Level::Global => 1,
            Level::Category => cfg.category_series,
            Level::Merchant => cfg.merchant_series,
        }
        .max(1);
        let cusums = (cfg.design_drops.len() + cfg.design_surges.len()).max(1);
        let per_level = cfg.false_alarms_per_week.max(1e-9) / 3.0;
        let arl = cusums as f64 * series as f64 * WEEK_MINUTES / per_level;
        Bar { h: arl.ln(), arl_minutes: arl, series, cusums }
    }

    /// False alarms per week this bar allows across its level's series.
    pub fn false_alarms_per_week(&self) -> f64 {
        self.cusums as f64 * self.series as f64 * WEEK_MINUTES / self.arl_minutes
    }
}

/// λ of `x` transactions for `ratio`·μ expected against μ expected.
pub fn llr(x: i64, mu: f64, ratio: f64) -> f64 {
    x as f64 * ratio.ln() - mu * (ratio - 1.0)
}

/// d + d² + … + d^k.
fn damped_sum(d: f64, k: i64) -> f64 {
    if (d - 1.0).abs() < 1e-12 {
        return k as f64;
    }
    d * (1.0 - d.powi(k as i32)) / (1.0 - d)
}

/// What the baseline expects of one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    pub expected: f64,
    /// Standard deviation of the count: √(φ·μ).
    pub sd: f64,
    pub low: f64,
    pub high: f64,
    pub dispersion: f64,
    /// Minutes the model has folded in.
    pub minutes: u32,
    /// Which model forecast it.
    pub basis: Basis,
}

/// The model behind a forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Holt's level and trend of the last minutes.
    Trend,
    /// The same time of earlier days (this many days of them) at today's level.
    Profile { days: u32 },
    /// The mean of the two.
    Blend { days: u32 },
}

impl Basis {
    fn describe(self, minutes: u32) -> String {
        match self {
            Basis::Trend => format!("level-and-trend baseline over {minutes} minutes"),
            Basis::Profile { days } => format!(
                "same time on the {days} earlier day{} at today's level",
                if days == 1 { "" } else { "s" }
            ),
            Basis::Blend { days } => format!(
                "mean of the level-and-trend baseline over {minutes} minutes and the same time on the {days} earlier day{} at today's level",
                if days == 1 { "" } else { "s" }
            ),
        }
    }
}

/// An expectation of `mu` transactions with dispersion `phi`.
fn expect(mu: f64, phi: f64, minutes: u32, basis: Basis) -> Expectation {
    let sd = (phi * mu).sqrt();
    Expectation {
        expected: mu,
        sd,
        low: (mu - BAND_SDS * sd).max(0.0),
        high: mu + BAND_SDS * sd,
        dispersion: phi,
        minutes,
        basis,
    }
}

/// Squared Pearson residual of `x` against a forecast of `mu`.
fn pearson(x: i64, mu: f64) -> f64 {
    (x as f64 - mu).powi(2) / mu.max(1.0)
}

/// How one forecaster erred: the mean squared Pearson residual of its forecasts (each clipped
/// at [`MAX_RESIDUAL`]), exponentially weighted over about `window` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    mean: f64,
    residuals: u32,
}

impl Errors {
    fn fold(&mut self, residual: Option<f64>, window: u32) {
        if let Some(r) = residual {
            self.residuals = self.residuals.saturating_add(1);
            let w = 1.0 / f64::from(self.residuals.min(window.max(1)));
            self.mean += w * (r.min(MAX_RESIDUAL) - self.mean);
        }
    }

    /// As a dispersion φ for the quasi-Poisson statistic: 1 to `max_dispersion`, 1 before any
    /// residual.
    fn phi(&self, cfg: &VolumeConfig) -> f64 {
        if self.residuals == 0 {
            1.0
        } else {
            self.mean.clamp(1.0, cfg.max_dispersion.max(1.0))
        }
    }
}

/// The forecasts of one minute: the level-and-trend model's, the profile's and their mean.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Forecasts {
    each: [Option<Expectation>; 3],
    /// What the profile held for the minute's slot.
    usual: Option<f64>,
}

impl Forecasts {
    const TREND: usize = 0;
    const PROFILE: usize = 1;
    const BLEND: usize = 2;

    fn residuals(&self, x: i64) -> [Option<f64>; 3] {
        self.each.map(|e| e.map(|e| pearson(x, e.expected)))
    }
}

/// Holt's damped level-and-trend model of one series' counts per minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Holt {
    level: f64,
    trend: f64,
    /// Its forecasts' errors on clean minutes (two fields, as written before [`Errors`] held
    /// them: the same encoding).
    dispersion: Errors,
    minutes: u32,
    /// The last minute folded in.
    as_of: i64,
}

impl Holt {
    fn steps(&self, minute: i64) -> i64 {
        ((minute - self.as_of) / MINUTE_MS).clamp(1, MAX_STEPS)
    }

    pub fn forecast(&self, minute: i64, cfg: &VolumeConfig) -> Option<f64> {
        (self.minutes > 0).then(|| {
            let k = self.steps(minute);
            (self.level + self.trend * damped_sum(cfg.trend_damping, k)).max(0.0)
        })
    }

    pub fn dispersion(&self, cfg: &VolumeConfig) -> f64 {
        self.dispersion.phi(cfg)
    }

    pub fn minutes(&self) -> u32 {
        self.minutes
    }

    fn expectation(&self, minute: i64, cfg: &VolumeConfig) -> Option<Expectation> {
        let mu = self.forecast(minute, cfg)?;
        Some(expect(mu, self.dispersion(cfg), self.minutes, Basis::Trend))
    }

    /// After an incident: the level is what the minutes found back in range say (the model was
    /// frozen through the incident, and the day moved on meanwhile); the trend is kept.
    fn reanchor(&mut self, points: &[VPoint]) {
        if let Some(last) = points.last() {
            self.level = points.iter().map(|p| p.count as f64).sum::<f64>() / points.len() as f64;
            self.as_of = last.minute;
        }
    }

    fn fold(&mut self, p: &VPoint, cfg: &VolumeConfig) {
        let x = p.count as f64;
        if self.minutes == 0 {
            *self = Holt { level: x, trend: 0.0, minutes: 1, as_of: p.minute, ..self.clone() };
            return;
        }
        let k = self.steps(p.minute);
        let d = cfg.trend_damping;
        let level_pred = self.level + self.trend * damped_sum(d, k);
        let trend_pred = self.trend * d.powi(k as i32);
        // Clipped once the model has seen enough to say what is odd.
        let x = if self.minutes >= 10 {
            let sd = (self.dispersion(cfg) * level_pred.max(1.0)).sqrt();
            x.clamp(level_pred - CLIP_SDS * sd, level_pred + CLIP_SDS * sd)
        } else {
            x
        };
        let (a, b) = (cfg.level_weight, cfg.trend_weight);
        let level = a * x + (1.0 - a) * level_pred;
        self.trend = b * (level - self.level) / k as f64 + (1.0 - b) * trend_pred;
        self.level = level;
        self.minutes = self.minutes.saturating_add(1);
        self.as_of = p.minute;
        self.dispersion.fold(p.residuals[0], DISPERSION_MINUTES);
    }
}

/// The same time of earlier days: what each 5-minute slot of the UTC day held on each of the
/// last three days, scaled by how today compares (a multiplicative seasonal model):
///
/// ```text
/// p_t = the median of the slot's mean count a minute on the last 3 days that had it
/// r   = EW(x) / EW(p)   over the last clean minutes (weight α a minute, as the level's)
/// μ_t = r · p_t
/// ```
///
/// The slots learn from every minute, incidents included: a pattern that recurs at the same
/// time every day (a shop opening at 09:00) is a surge the level-and-trend model reports on
/// its first days, and after three days the profile expects it. The median keeps a one-off
/// incident on one of the three days out of the profile. The ratio `r`, which would follow an
/// incident, learns from clean minutes only, as the level does. The profile forecasts once
/// three days are behind a slot. Global and category series only: a merchant's series would
/// cost 288 slots each, for hundreds of them per partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// One per slot of the UTC day; empty before the first minute.
    slots: Vec<Slot>,
    /// Exponentially weighted counts and profile values of recent clean minutes: r = seen / usual.
    seen: f64,
    usual: f64,
    /// Days of history behind the profile (the newest day any slot closed).
    days: u32,
}

/// One 5-minute slot of the day: its means on the last three days, and the day being counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Slot {
    /// Means a minute of the last days that had the slot, newest first (`filled` of them).
    past: [f32; PROFILE_DAYS],
    filled: u8,
    /// The day (since the epoch) being counted, its minutes and their sum.
    day: i32,
    minutes: u16,
    sum: f32,
}

impl Slot {
    /// Closes the day being counted once `day` is a later one.
    fn roll(&mut self, day: i32) {
        if self.minutes > 0 && day > self.day {
            self.past.copy_within(0..PROFILE_DAYS - 1, 1);
            self.past[0] = self.sum / f32::from(self.minutes);
            self.filled = (self.filled + 1).min(PROFILE_DAYS as u8);
            (self.minutes, self.sum) = (0, 0.0);
        }
        if self.minutes == 0 {
            self.day = day;
        }
    }

    /// The slot's usual count a minute: the median of its last three days, the mean of one or
    /// two; and the variance of that estimate per unit of the count (see [`PROFILE_MIN_PHI`]).
    fn usual(&self) -> Option<(f64, f64)> {
        let n = usize::from(self.filled);
        match n {
            0 => None,
            1 | 2 => Some((self.past[..n].iter().map(|v| f64::from(*v)).sum::<f64>() / n as f64, 1.0 / n as f64)),
            _ => {
                let mut v = self.past;
                v.sort_by(f32::total_cmp);
                Some((f64::from(v[PROFILE_DAYS / 2]), 1.35 / PROFILE_DAYS as f64))
            }
        }
    }
}

impl Profile {
    fn slot(minute: i64) -> usize {
        (minute.rem_euclid(DAY_MS) / SLOT_MS) as usize
    }

    fn day(minute: i64) -> i32 {
        minute.div_euclid(DAY_MS) as i32
    }

    fn ratio(&self) -> f64 {
        if self.usual > 1e-9 {
            self.seen / self.usual
        } else {
            1.0
        }
    }

    /// What the slot of `minute` held on the last days before `minute`'s own (and the variance
    /// of that estimate per unit of the count).
    fn usual_at(&mut self, minute: i64) -> Option<(f64, f64)> {
        let slot = self.slots.get_mut(Self::slot(minute))?;
        slot.roll(Self::day(minute));
        slot.usual()
    }

    /// Counts a judged minute, anomalous or not, into its slot.
    fn count(&mut self, minute: i64, x: i64) {
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); SLOTS];
        }
        let day = Self::day(minute);
        let slot = &mut self.slots[Self::slot(minute)];
        slot.roll(day);
        if slot.day == day {
            slot.minutes = slot.minutes.saturating_add(1);
            slot.sum += x as f32;
        }
        self.days = self.days.max(u32::from(slot.filled));
    }

    fn expectation(&self, usual: f64, phi: f64) -> Expectation {
        let days = self.days;
        expect(self.ratio() * usual, phi, days.saturating_mul(1440), Basis::Profile { days })
    }

    /// A clean minute: today's level against the profile learns from it.
    fn fold(&mut self, p: &VPoint, cfg: &VolumeConfig) {
        if let Some(usual) = p.usual {
            let a = cfg.level_weight;
            if self.usual <= 1e-9 {
                (self.seen, self.usual) = (p.count as f64, usual);
            } else {
                self.seen += a * (p.count as f64 - self.seen);
                self.usual += a * (usual - self.usual);
            }
        }
    }

    /// After an incident: today's level is what the minutes found back in range say.
    fn reanchor(&mut self, points: &[VPoint]) {
        let usual: Vec<(f64, f64)> = points.iter().filter_map(|p| Some((p.count as f64, p.usual?))).collect();
        if usual.is_empty() {
            return;
        }
        let n = usual.len() as f64;
        self.seen = usual.iter().map(|(x, _)| x).sum::<f64>() / n;
        self.usual = usual.iter().map(|(_, u)| u).sum::<f64>() / n;
    }
}

/// A judged minute waiting to join the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct VPoint {
    minute: i64,
    count: i64,
    /// Squared Pearson residuals of the level-and-trend forecast, of the profile's and of their
    /// mean ([`Forecasts`]' order).
    residuals: [Option<f64>; 3],
    /// What the profile held for the minute's slot.
    usual: Option<f64>,
}

/// One CUSUM and the run it has added up since it last stood at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    s: f64,
    since: i64,
    observed: i64,
    expected: f64,
    minutes: u32,
}

impl Run {
    fn step(&mut self, minute: i64, x: i64, mu: f64, increment: f64) {
        if self.s <= 0.0 {
            *self = Run { s: 0.0, since: minute, ..Run::default() };
        }
        self.s = (self.s + increment).max(0.0);
        if self.s > 0.0 {
            self.observed += x;
            self.expected += mu;
            self.minutes += 1;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Active {
    id: String,
    rule: AnomalyRule,
    first_seen: i64,
    sequence: i64,
    normal_streak: u32,
    severity: Severity,
    /// Over the incident since it fired (the run that fired it included).
    observed: i64,
    expected: f64,
    back: f64,
    last: Anomaly,
}

/// One series of counts per minute and its two rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSeries {
    pub dimension: AnomalyDimension,
    pub value: String,
    model: Holt,
    /// The same time of earlier days (global and category series), the dispersions of its
    /// forecasts and of their mean with the level-and-trend model's on clean minutes, and how
    /// each forecaster erred on every minute of about the last day (checkpoint version 5).
    profile: Profile,
    dispersions: [Errors; 2],
    record: [Errors; 3],
    quarantine: VecDeque<VPoint>,
    /// One per design change: the drops, then the surges.
    runs: Vec<Run>,
    active: Option<Active>,
    /// The last minute judged.
    last: Option<i64>,
}

/// What judging one minute yields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Judged {
    pub anomaly: Option<Anomaly>,
    /// What the baseline expected of the minute (`None` while it warms up).
    pub expectation: Option<Expectation>,
}

/// The global series.
impl Default for VolumeSeries {
    fn default() -> Self {
        VolumeSeries::new(AnomalyDimension::Global, "all")
    }
}

impl VolumeSeries {
    pub fn new(dimension: AnomalyDimension, value: &str) -> Self {
        VolumeSeries {
            dimension,
            value: value.to_owned(),
            model: Holt::default(),
            profile: Profile::default(),
            dispersions: [Errors::default(); 2],
            record: [Errors::default(); 3],
            quarantine: VecDeque::new(),
            runs: Vec::new(),
            active: None,
            last: None,
        }
    }

    /// A series as a checkpoint of version 4 held it: its profile starts afresh (the
    /// level-and-trend model, its quarantine and any open anomaly go on).
    pub fn from_v4(v4: VolumeSeriesV4) -> Self {
        VolumeSeries {
            quarantine: v4
                .quarantine
                .into_iter()
                .map(|p| VPoint { minute: p.minute, count: p.count, residuals: [p.residual, None, None], usual: None })
                .collect(),
            model: v4.model,
            runs: v4.runs,
            active: v4.active,
            last: v4.last,
            ..VolumeSeries::new(v4.dimension, &v4.value)
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The last minute judged.
    pub fn last(&self) -> Option<i64> {
        self.last
    }

    pub fn model(&self) -> &Holt {
        &self.model
    }

    /// The three forecasts of `minute` (rolling the profile's slot to `minute`'s day).
    fn forecasts(&mut self, minute: i64, cfg: &VolumeConfig) -> Forecasts {
        let trend = self.model.expectation(minute, cfg);
        let usual = if self.dimension == AnomalyDimension::Merchant { None } else { self.profile.usual_at(minute) };
        let profile = usual
            .map(|(u, v)| self.profile.expectation(u, self.dispersions[0].phi(cfg).max(profile_min_phi(v, false))));
        let blend = match (trend, profile) {
            (Some(t), Some(p)) => Some(expect(
                0.5 * (t.expected + p.expected),
                self.dispersions[1].phi(cfg).max(profile_min_phi(usual.map_or(0.0, |(_, v)| v), true)),
                t.minutes,
                Basis::Blend { days: self.profile.days },
            )),
            _ => None,
        };
        Forecasts { each: [trend, profile, blend], usual: usual.map(|(u, _)| u) }
    }

    /// The forecast that erred least over about the last day: the level-and-trend model's until
    /// another has a record of [`PROVEN_MINUTES`]. Every judged minute counts, incidents
    /// included: the model that cannot know a step recurs at 09:00 every day misses it every
    /// day, which the clean minutes alone would never show.
    fn choose(&self, f: &Forecasts) -> Option<Expectation> {
        let mut chosen = Forecasts::TREND;
        f.each[Forecasts::TREND]?;
        // A forecaster beats the level-and-trend model when it erred less over the last day
        // (every minute) or over the last clean minutes (see the README's "Volume rules").
        let beats = |k: usize| {
            let (r, d) = (&self.record[k], &self.dispersions[k - 1]);
            (r.residuals >= PROVEN_MINUTES && r.mean < self.record[Forecasts::TREND].mean)
                || (d.residuals >= 60 && d.mean < self.model.dispersion.mean)
        };
        for k in [Forecasts::PROFILE, Forecasts::BLEND] {
            if f.each[k].is_some()
                && beats(k)
                && (chosen == Forecasts::TREND || self.record[k].mean < self.record[chosen].mean)
            {
                chosen = k;
            }
        }
        f.each[chosen]
    }

    fn ratios(cfg: &VolumeConfig) -> impl Iterator<Item = f64> + '_ {
        cfg.design_drops.iter().chain(&cfg.design_surges).copied()
    }

    /// Judges the minute `minute` with `x` transactions. Minutes are judged in order; a minute
    /// at or before the last one judged is ignored.
    pub fn observe(&mut self, minute: i64, x: i64, cfg: &VolumeConfig) -> Judged {
        if self.last.is_some_and(|l| minute <= l) {
            return Judged::default();
        }
        if self.last.is_some_and(|l| minute - l > cfg.max_gap_minutes.max(1) * MINUTE_MS) && !self.is_active() {
            // Nothing judged for longer than a series remembers: start afresh.
            *self = VolumeSeries::new(self.dimension, &self.value);
        }
        self.last = Some(minute);
        let f = self.forecasts(minute, cfg);
        let point = VPoint { minute, count: x, residuals: f.residuals(x), usual: f.usual };
        let expectation = self.choose(&f);
        for (record, r) in self.record.iter_mut().zip(point.residuals) {
            record.fold(r, RECORD_MINUTES);
        }
        if self.dimension != AnomalyDimension::Merchant {
            self.profile.count(minute, x);
        }
        let warm = self.model.minutes >= cfg.warmup_minutes;
        let Some(e) = expectation.filter(|e| warm && (e.expected >= cfg.min_expected || self.is_active())) else {
            self.push(point, cfg);
            return Judged { anomaly: None, expectation: expectation.filter(|_| warm) };
        };
        let bar = Bar::for_level(cfg, Level::of(self.dimension));
        let ratios: Vec<f64> = Self::ratios(cfg).collect();
        if self.runs.len() != ratios.len() {
            self.runs = vec![Run::default(); ratios.len()];
        }
        let (mu, phi) = (e.expected, e.dispersion);
        for (run, r) in self.runs.iter_mut().zip(&ratios) {
            run.step(minute, x, mu, llr(x, mu, *r) / phi);
        }
        let (k, best) = self
            .runs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.s.total_cmp(&b.1.s))
            .map(|(k, r)| (k, *r))
            .unwrap_or_default();
        let anomaly = match self.active.take() {
            None => {
                let ratio = ratios.get(k).copied().unwrap_or(1.0);
                let excess = (best.expected - best.observed as f64).abs();
                let fire = best.s >= bar.h && excess >= cfg.min_excess;
                for run in &mut self.runs {
                    run.s = run.s.min(bar.h);
                }
                if fire {
                    self.discard_from(best.since, cfg);
                    Some(self.fire(minute, x, &e, &best, ratio, bar, cfg))
                } else {
                    self.push(point, cfg);
                    None
                }
            }
            Some(act) => self.follow(act, minute, x, &e, point, bar, cfg),
        };
        Judged { anomaly, expectation: Some(e) }
    }

    #[allow(clippy::too_many_arguments)]
    fn fire(
        &mut self,
        minute: i64,
        x: i64,
        e: &Expectation,
        run: &Run,
        ratio: f64,
        bar: Bar,
        cfg: &VolumeConfig,
    ) -> Anomaly {
        let rule = if ratio < 1.0 { AnomalyRule::VolumeDrop } else { AnomalyRule::VolumeSurge };
        let id = format!("{}:{}:{}:{}", rule.as_str(), self.dimension.as_str(), self.value, minute_id(minute));
        let run_ratio = run.observed as f64 / run.expected.max(1e-9);
        let severity = severity_of(rule, run_ratio, e.expected, cfg);
        let weeks = bar.false_alarms_per_week();
        let change =
            if ratio < 1.0 { format!("a drop to {:.0} %", ratio * 100.0) } else { format!("a {ratio}× surge") };
        let detail = format!(
            "evidence over {} minute{} from {} UTC: {} transactions against {} expected ({:.0} %), ln LR = {:.1} for {change}, fires at {:.1}, a bar that allows {} false alarm{} a week across {} series of this level",
            run.minutes,
            if run.minutes == 1 { "" } else { "s" },
            hm(run.since),
            run.observed,
            fmt_count(run.expected),
            run_ratio * 100.0,
            run.s,
            bar.h,
            fmt_count(weeks),
            if (weeks - 1.0).abs() < 1e-9 { "" } else { "s" },
            bar.series
        );
        let a = self.anomaly(&id, rule, 0, AnomalyState::Firing, minute, minute, x, e, run.s, bar.h, &detail, severity);
        self.active = Some(Active {
            id,
            rule,
            first_seen: minute,
            sequence: 0,
            normal_streak: 0,
            severity,
            observed: run.observed,
            expected: run.expected,
            back: 0.0,
            last: a.clone(),
        });
        a
    }

    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        mut act: Active,
        minute: i64,
        x: i64,
        e: &Expectation,
        point: VPoint,
        bar: Bar,
        cfg: &VolumeConfig,
    ) -> Option<Anomaly> {
        let (mu, phi) = (e.expected, e.dispersion);
        act.observed += x;
        act.expected += mu;
        let level = act.observed as f64 / act.expected.max(1e-9);
        let incident = match act.rule {
            AnomalyRule::VolumeDrop => level.clamp(MIN_INCIDENT_RATIO, INCIDENT_RATIO),
            _ => level.max(1.0 / INCIDENT_RATIO),
        };
        // Evidence for "normal" against "the incident's level".
        act.back = (act.back - llr(x, mu, incident) / phi).max(0.0);
        let back_bar = cfg.back_odds.max(1.0).ln();
        let stopped = x == 0 && act.rule == AnomalyRule::VolumeDrop;
        let still_bad = stopped || if act.normal_streak > 0 { act.back <= 0.0 } else { act.back < back_bar };
        for run in &mut self.runs {
            run.s = run.s.min(bar.h);
        }
        let best = self.runs.iter().map(|r| r.s).fold(0.0, f64::max);
        if !still_bad {
            self.push(point, cfg);
        }
        if still_bad {
            act.sequence += 1;
            act.normal_streak = 0;
            act.severity = act.severity.max(severity_of(act.rule, level.min(x as f64 / mu.max(1e-9)), mu, cfg));
            let detail = format!(
                "{} transactions against {} expected ({:.0} %) since {} UTC; back-to-normal evidence ln LR = {:.1} (back in range at {:.1})",
                act.observed,
                fmt_count(act.expected),
                level * 100.0,
                hm(act.first_seen),
                act.back,
                back_bar
            );
            let a = self.anomaly(
                &act.id,
                act.rule,
                act.sequence,
                AnomalyState::Updated,
                act.first_seen,
                minute,
                x,
                e,
                best,
                bar.h,
                &detail,
                act.severity,
            );
            act.last = a.clone();
            self.active = Some(act);
            return Some(a);
        }
        act.normal_streak += 1;
        if act.normal_streak < cfg.resolve_after_minutes.max(1) {
            self.active = Some(act);
            return None;
        }
        let mut a = act.last.clone();
        a.sequence = act.sequence + 1;
        a.state = AnomalyState::Resolved;
        a.last_updated = minute + MINUTE_MS;
        a.resolved_at = Some(minute + MINUTE_MS);
        a.message = format!(
            "Resolved at {} UTC after {} minutes back in range: {} at {x} a minute ({} expected). Started {} UTC.",
            hm(minute + MINUTE_MS),
            act.normal_streak,
            label(self.dimension, &self.value),
            fmt_count(mu),
            hm(act.first_seen)
        );
        self.runs.iter_mut().for_each(|r| *r = Run::default());
        // The quarantine holds only minutes found back in range since the alarm.
        let back: Vec<VPoint> = self.quarantine.drain(..).collect();
        self.model.reanchor(&back);
        self.profile.reanchor(&back);
        Some(a)
    }

    #[allow(clippy::too_many_arguments)]
    fn anomaly(
        &self,
        id: &str,
        rule: AnomalyRule,
        sequence: i64,
        state: AnomalyState,
        first_seen: i64,
        minute: i64,
        x: i64,
        e: &Expectation,
        score: f64,
        threshold: f64,
        detail: &str,
        severity: Severity,
    ) -> Anomaly {
        let what = if rule == AnomalyRule::VolumeDrop { "dropped" } else { "surged" };
        let message = format!(
            "{} {what}: {x} transaction{} in {}–{} UTC against {} expected (normal range {}–{}; {}, dispersion {:.2}); {detail}; {}.",
            capitalise(&label(self.dimension, &self.value)),
            if x == 1 { "" } else { "s" },
            hm(minute),
            hm(minute + MINUTE_MS),
            fmt_count(e.expected),
            fmt_count(e.low),
            fmt_count(e.high),
            e.basis.describe(e.minutes),
            e.dispersion,
            severity.as_str()
        );
        let (category, merchant_id) = category_and_merchant(self.dimension, &self.value);
        Anomaly {
            id: id.to_owned(),
            sequence,
            rule,
            dimension: self.dimension,
            dimension_value: self.value.clone(),
            window_start: Some(minute),
            window_end: Some(minute + MINUTE_MS),
            transaction_id: None,
            category,
            merchant_id,
            observed: x as f64,
            observed_count: x,
            observed_total: x,
            baseline_mean: e.expected,
            baseline_stddev: e.sd,
            baseline_n: i64::from(e.minutes),
            scored_on: "volume_cusum".into(),
            score,
            p_value: Some(tail(rule, x, e.expected)),
            threshold,
            severity,
            state,
            message,
            first_seen,
            last_updated: minute + MINUTE_MS,
            resolved_at: None,
        }
    }

    /// A clean minute joins the models.
    fn fold(&mut self, q: &VPoint, cfg: &VolumeConfig) {
        self.model.fold(q, cfg);
        self.profile.fold(q, cfg);
        for (d, r) in self.dispersions.iter_mut().zip(&q.residuals[1..]) {
            d.fold(*r, DISPERSION_MINUTES);
        }
    }

    /// Adds a judged minute to the quarantine; the oldest leave it for the model.
    fn push(&mut self, p: VPoint, cfg: &VolumeConfig) {
        self.quarantine.push_back(p);
        while self.quarantine.len() > cfg.quarantine_minutes {
            if let Some(q) = self.quarantine.pop_front() {
                self.fold(&q, cfg);
            }
        }
    }

    /// Drops the quarantined minutes from `minute` on (they belong to an incident); the earlier
    /// ones join the model.
    fn discard_from(&mut self, minute: i64, cfg: &VolumeConfig) {
        let keep: Vec<VPoint> = self.quarantine.drain(..).filter(|p| p.minute < minute).collect();
        for q in &keep {
            self.fold(q, cfg);
        }
    }
}

/// One-sided Poisson tail of the minute: P(X ≤ x) for a drop, P(X ≥ x) for a surge.
fn tail(rule: AnomalyRule, x: i64, mu: f64) -> f64 {
    let Ok(p) = Poisson::new(mu.max(1e-9)) else { return 1.0 };
    let x = x.max(0) as u64;
    match rule {
        AnomalyRule::VolumeDrop => p.cdf(x),
        _ if x == 0 => 1.0,
        _ => p.sf(x - 1),
    }
}

fn severity_of(rule: AnomalyRule, ratio: f64, expected: f64, cfg: &VolumeConfig) -> Severity {
    let by_size = match rule {
        AnomalyRule::VolumeDrop if ratio <= 0.1 => Severity::Critical,
        AnomalyRule::VolumeDrop if ratio <= 0.5 => Severity::High,
        AnomalyRule::VolumeSurge if ratio >= 3.0 => Severity::High,
        _ => Severity::Medium,
    };
    if expected < cfg.min_at_stake {
        match by_size {
            Severity::Critical => Severity::High,
            _ => Severity::Medium,
        }
    } else {
        by_size
    }
}

fn label(dimension: AnomalyDimension, value: &str) -> String {
    match dimension {
        AnomalyDimension::Category => format!("volume of category {value}"),
        AnomalyDimension::Merchant => format!("volume of merchant {value}"),
        _ => "transaction volume".to_owned(),
    }
}

/// Stage 1's volume series of categories and merchants: a series for each key whose rates
/// are watched (enough volume to judge; see `breakdown.rs`), judged on every final minute of
/// the partition, a minute without the key's transactions counting as zero. A series outlives
/// its key's rate watch while the key is known (seen within the last day): a category watched
/// by day and too quiet for its rates at night keeps its volume model, and with it the profile
/// of its earlier days, instead of starting afresh, young, on every morning's ramp.
/// Serializable: part of a partition's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyVolumes {
    /// The last final minute judged.
    last: Option<i64>,
    categories: BTreeMap<String, VolumeSeries>,
    merchants: BTreeMap<String, VolumeSeries>,
}

/// Which keys have volume series: a series starts for a watched key, while fewer than
/// `2 × limit` are held per dimension, and is kept while its key is known (or its anomaly open).
pub struct Keys<'a> {
    pub watched: &'a dyn Fn(AnomalyDimension, &str) -> bool,
    pub known: &'a dyn Fn(AnomalyDimension, &str) -> bool,
    pub limit: usize,
}

/// One final minute's counts per key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyTotals {
    pub categories: BTreeMap<String, i64>,
    pub merchants: BTreeMap<String, i64>,
}

impl KeyVolumes {
    pub fn from_v4(v4: KeyVolumesV4) -> Self {
        let convert =
            |m: BTreeMap<String, VolumeSeriesV4>| m.into_iter().map(|(k, v)| (k, VolumeSeries::from_v4(v))).collect();
        KeyVolumes { last: v4.last, categories: convert(v4.categories), merchants: convert(v4.merchants) }
    }

    /// Series held: (categories, merchants).
    pub fn series(&self) -> (usize, usize) {
        (self.categories.len(), self.merchants.len())
    }

    /// Judges every minute after the last one judged up to `last_final` (inclusive): `totals`
    /// holds the minutes with transactions; `watched` tells whether a key's rates are watched.
    /// At most `max_gap_minutes` quiet minutes are judged after the last one with traffic.
    pub fn close(
        &mut self,
        last_final: i64,
        totals: &BTreeMap<i64, KeyTotals>,
        keys: &Keys<'_>,
        cfg: &VolumeConfig,
    ) -> Vec<Anomaly> {
        let mut out = Vec::new();
        if !cfg.enabled || (!cfg.by_category && !cfg.by_merchant) {
            self.last = Some(last_final);
            return out;
        }
        let first = match self.last {
            Some(l) => l + MINUTE_MS,
            None => match totals.keys().next() {
                Some(m) => *m,
                None => return out,
            },
        };
        let mut minute = first;
        while minute <= last_final {
            // A long quiet stretch: jump to the next minute with traffic (series start afresh).
            let quiet_since = totals.range(..minute).next_back().map_or(first, |(m, _)| *m);
            if minute - quiet_since > cfg.max_gap_minutes.max(1) * MINUTE_MS {
                match totals.range(minute..).next() {
                    Some((m, _)) if *m <= last_final => minute = *m,
                    _ => break,
                }
            }
            let empty = KeyTotals::default();
            let t = totals.get(&minute).unwrap_or(&empty);
            if cfg.by_category {
                judge_keys(
                    &mut self.categories,
                    AnomalyDimension::Category,
                    minute,
                    &t.categories,
                    keys,
                    cfg,
                    &mut out,
                );
            }
            if cfg.by_merchant {
                judge_keys(&mut self.merchants, AnomalyDimension::Merchant, minute, &t.merchants, keys, cfg, &mut out);
            }
            minute += MINUTE_MS;
        }
        self.last = Some(last_final);
        out
    }
}

fn judge_keys(
    series: &mut BTreeMap<String, VolumeSeries>,
    dimension: AnomalyDimension,
    minute: i64,
    counts: &BTreeMap<String, i64>,
    keys: &Keys<'_>,
    cfg: &VolumeConfig,
    out: &mut Vec<Anomaly>,
) {
    series.retain(|key, s| s.is_active() || (keys.known)(dimension, key));
    for key in counts.keys() {
        if series.len() >= keys.limit.saturating_mul(2) {
            break;
        }
        if !series.contains_key(key) && (keys.watched)(dimension, key) {
            series.insert(key.clone(), VolumeSeries::new(dimension, key));
        }
    }
    for (key, s) in series.iter_mut() {
        let x = counts.get(key).copied().unwrap_or(0);
        if let Some(a) = s.observe(minute, x, cfg).anomaly {
            out.push(a);
        }
    }
}

#[cfg(test)]
mod tests;
