//! A streaming anomaly scorer for any `timestamp,value` series (`detector replay --series`):
//! one pass, one row at a time, and the score of row `t` depends on rows `0..=t` only.
//!
//! The values may be of any unit and scale (counts, percentages, latencies, bytes, ...) and the
//! interval of any length; the timestamp is never read, rows are a sequence.
//!
//! ## The model
//! Three predictors each forecast the next value; each forecast error is divided by a robust
//! scale of that predictor's own past errors, so every quantity below is dimensionless and
//! multiplying the series by any positive constant leaves the scores unchanged:
//!
//! | feature | forecast of `x_t` | catches |
//! | --- | --- | --- |
//! | `jump` | `x_{t−1}` (the last value) | spikes, steps, a flat line breaking |
//! | `level` | an exponentially weighted level (weight 0.05, about 20 rows) | a level that moves away and stays |
//! | `season` | the median of `x_{t−P}`, `x_{t−2P}`, `x_{t−3P}`, once a period `P` is found | a broken daily or weekly cycle |
//!
//! The scale of each feature is an exponentially weighted mean absolute error (weight 0.02),
//! updated after the row is scored with the error clipped at 4 scales (a Huber-type robust
//! update: one wild value moves the scale by 6 % at most). The period is searched in the last
//! 4 096 rows every 256 rows: the lag (4 to 1 440 rows, two cycles seen at least) with the
//! highest autocorrelation peak above 0.3 that stands 0.1 above the dip before it; a series
//! without such a peak has no `season` feature.
//!
//! ## From errors to a score: the anomaly likelihood
//! Each feature's surprise `u = ln(1 + |error| / scale)` feeds two monitors: the value itself and
//! the mean of the last 10 values (Numenta's anomaly likelihood: a short-window mean judged
//! against the long-window distribution of such means). A monitor keeps its last 8 640 values
//! (Numenta's historic window) and gives the Gaussian upper-tail probability `p` of the new value
//! against their mean and standard deviation. The series' own history thus calibrates what is
//! unusual: a noisy series needs a larger error than a quiet one. With `m` monitors active (4, 6
//! with a season), the score is `min(1, −log10(m · min p) / 10)`: 0.5 means a tail probability of
//! 10⁻⁵ after the Bonferroni factor, 1 means 10⁻¹⁰ or less.
//!
//! ## One alarm per incident
//! A streaming benchmark (and an on-call engineer) credits the first detection of an incident
//! and charges every further alarm. Once a row scores at least the threshold (0.5, `DEFAULT_THRESHOLD`),
//! the following rows are damped: the score is multiplied by `(d / Q)²` where `d` is the number
//! of rows since the alarm and `Q` is 5 % of the rows seen so far (at least 50); past `Q` rows the
//! scorer is back to normal. The first `warmup` rows (30) score 0: too little history to judge.

use std::collections::VecDeque;

use statrs::function::erf::erfc;

/// The threshold of `is_anomaly` in `detector replay --series`.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// The scorer's parameters; [`SeriesConfig::default`] is what `replay --series` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesConfig {
    /// A row with a score at least this is an anomaly and starts the quiet period.
    pub threshold: f64,
    /// Rows scored 0 at the start (inclusive of row 0, exclusive of row `warmup`).
    pub warmup: usize,
    /// Rows in the short-window mean of the likelihood (Numenta: 10).
    pub short_window: usize,
    /// Past values each monitor judges a new one against (Numenta: 8 640).
    pub history: usize,
    /// Weight of the `level` forecast's exponential average.
    pub level_weight: f64,
    /// Weight of the scales' exponential average.
    pub scale_weight: f64,
    /// Errors are clipped at this many scales before they update the level and the scale.
    pub clip: f64,
    /// Longest period searched, in rows.
    pub max_period: usize,
    /// The quiet period after an alarm: this share of the rows seen so far ...
    pub quiet_share: f64,
    /// ... and at least this many rows.
    pub quiet_min: usize,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            threshold: DEFAULT_THRESHOLD,
            warmup: 30,
            short_window: 10,
            history: 8640,
            level_weight: 0.05,
            scale_weight: 0.02,
            clip: 4.0,
            max_period: 1440,
            quiet_share: 0.05,
            quiet_min: 50,
        }
    }
}

/// Rows kept for the period search and the seasonal forecast.
const BUFFER: usize = 4096;
/// Rows between two period searches.
const PERIOD_EVERY: u64 = 256;
const MIN_PERIOD: usize = 4;
/// A period's autocorrelation peak: at least this high ...
const PEAK_MIN: f64 = 0.3;
/// ... and this far above the lowest autocorrelation between half its lag and its lag.
const PEAK_PROMINENCE: f64 = 0.1;
/// The log10 tail probability that maps to a score of 1.
const FULL_SCORE_LOG10: f64 = 10.0;
/// A monitor's standard deviation is at least this (its values are dimensionless log-surprises):
/// on a constant series any change is an anomaly, not a division by zero.
const MIN_SPREAD: f64 = 1e-2;

const JUMP: usize = 0;
const LEVEL: usize = 1;
const SEASON: usize = 2;

/// The streaming scorer: [`SeriesScorer::push`] one value after another.
#[derive(Debug, Clone)]
pub struct SeriesScorer {
    cfg: SeriesConfig,
    /// Rows pushed so far.
    n: u64,
    /// The last [`BUFFER`] values, oldest first.
    recent: VecDeque<f64>,
    level: f64,
    /// Mean absolute value: the floor of the scales is a tiny share of it (scale-free).
    magnitude: f64,
    /// Robust scale of each feature's errors (`None` until it has seen one).
    scales: [Option<f64>; 3],
    period: Option<usize>,
    /// Monitors `2·feature` (the value) and `2·feature + 1` (the short-window mean).
    monitors: [Monitor; 6],
    /// Row of the last alarm and the quiet period it started.
    alarm: Option<(u64, u64)>,
}

impl Default for SeriesScorer {
    fn default() -> Self {
        SeriesScorer::new(SeriesConfig::default())
    }
}

impl SeriesScorer {
    pub fn new(cfg: SeriesConfig) -> Self {
        let w = cfg.short_window.max(1);
        let monitors = std::array::from_fn(|i| Monitor::new(if i % 2 == 0 { 1 } else { w }));
        SeriesScorer {
            cfg,
            n: 0,
            recent: VecDeque::with_capacity(BUFFER),
            level: 0.0,
            magnitude: 0.0,
            scales: [None; 3],
            period: None,
            monitors,
            alarm: None,
        }
    }

    /// The period found so far, in rows.
    pub fn period(&self) -> Option<usize> {
        self.period
    }

    /// Scores the next value (finite) and learns it; the score is in [0, 1].
    pub fn push(&mut self, x: f64) -> f64 {
        let t = self.n;
        let warm = t >= self.cfg.warmup as u64;
        let mut surprises: [Option<f64>; 3] = [None; 3];
        let floor = self.floor();
        // Forecasts from the rows before this one.
        if let Some(&prev) = self.recent.back() {
            surprises[JUMP] = Some(self.surprise(JUMP, x - prev, floor));
            surprises[LEVEL] = Some(self.surprise(LEVEL, x - self.level, floor));
            if let Some(f) = self.seasonal_forecast() {
                surprises[SEASON] = Some(self.surprise(SEASON, x - f, floor));
            }
        }

        // A row the seasonal forecast explains is no jump and no level change: the daily
        // opening of a shop is a step every day, and only a step the cycle does not have counts.
        if let Some(us) = surprises[SEASON] {
            for k in [JUMP, LEVEL] {
                surprises[k] = surprises[k].map(|u| u.min(us));
            }
        }
        let mut p_min = 1.0f64;
        let mut active = 0usize;
        for (k, s) in surprises.iter().enumerate() {
            let Some(u) = *s else { continue };
            for m in &mut self.monitors[2 * k..2 * k + 2] {
                if let Some(p) = m.push(u, self.cfg.history) {
                    p_min = p_min.min(p);
                    active += 1;
                }
            }
        }
        let mut score = if warm && active > 0 { score_of(p_min * active as f64) } else { 0.0 };
        if let Some((at, quiet)) = self.alarm {
            let d = t - at;
            if d < quiet {
                score *= (d as f64 / quiet as f64).powi(2);
            } else {
                self.alarm = None;
            }
        }
        if warm && score >= self.cfg.threshold && self.alarm.is_none() {
            let quiet = ((self.cfg.quiet_share * t as f64).ceil() as u64).max(self.cfg.quiet_min as u64);
            self.alarm = Some((t, quiet));
        }

        self.learn(x, warm);
        score
    }

    /// `ln(1 + |error| / scale)`, then the scale learns the error.
    fn surprise(&mut self, feature: usize, err: f64, floor: f64) -> f64 {
        let a = err.abs();
        let scale = self.scales[feature].unwrap_or(a).max(floor);
        let z = if scale > 0.0 { a / scale } else { 0.0 };
        // Before the warm-up ends the scale is the plain running mean (no clipping: it may start
        // at 0 on a series that opens with repeated values); after it, a clipped EW mean.
        let next = match self.scales[feature] {
            None => a,
            Some(s) if self.n < self.cfg.warmup as u64 => s + (a - s) / self.n.max(1) as f64,
            Some(s) => s + self.cfg.scale_weight * (a.min(self.cfg.clip * scale) - s),
        };
        self.scales[feature] = Some(next);
        z.ln_1p()
    }

    fn floor(&self) -> f64 {
        1e-9 * self.magnitude
    }

    fn seasonal_forecast(&self) -> Option<f64> {
        let p = self.period?;
        let len = self.recent.len();
        let mut past: Vec<f64> = (1..=3).filter(|c| c * p <= len).map(|c| self.recent[len - c * p]).collect();
        past.sort_by(f64::total_cmp);
        match past.len() {
            0 => None,
            2 => Some((past[0] + past[1]) / 2.0),
            k => Some(past[k / 2]),
        }
    }

    fn learn(&mut self, x: f64, warm: bool) {
        self.n += 1;
        if self.n == 1 {
            self.level = x;
            self.magnitude = x.abs();
        } else {
            let err = x - self.level;
            let err = match self.scales[LEVEL] {
                Some(s) if warm => err.clamp(-self.cfg.clip * s, self.cfg.clip * s),
                _ => err,
            };
            self.level += self.cfg.level_weight * err;
            self.magnitude += self.cfg.scale_weight * (x.abs() - self.magnitude);
        }
        if self.recent.len() == BUFFER {
            self.recent.pop_front();
        }
        self.recent.push_back(x);
        if self.n % PERIOD_EVERY == 0 {
            let found = find_period(self.recent.make_contiguous(), self.cfg.max_period, self.period);
            if found != self.period {
                // Another period: its errors are not the old one's.
                self.scales[SEASON] = None;
                self.period = found;
            }
        }
    }
}

/// Scores a whole series (the same as pushing each value into a fresh scorer).
pub fn score_series(values: &[f64], cfg: &SeriesConfig) -> Vec<f64> {
    let mut s = SeriesScorer::new(cfg.clone());
    values.iter().map(|&x| s.push(x)).collect()
}

/// `min(1, −log10(p) / 10)`, 0 for `p ≥ 1`.
fn score_of(p: f64) -> f64 {
    if p >= 1.0 {
        return 0.0;
    }
    if p <= 0.0 {
        return 1.0;
    }
    (-p.log10() / FULL_SCORE_LOG10).clamp(0.0, 1.0)
}

/// One aggregate of one feature's surprises, judged against its own history.
#[derive(Debug, Clone)]
struct Monitor {
    window: usize,
    last: VecDeque<f64>,
    last_sum: f64,
    history: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
}

impl Monitor {
    fn new(window: usize) -> Self {
        Monitor {
            window,
            last: VecDeque::with_capacity(window),
            last_sum: 0.0,
            history: VecDeque::new(),
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    /// Adds a surprise; returns the upper-tail probability of the new aggregate against the
    /// history before it (`None` while the short window or the history is too short).
    fn push(&mut self, u: f64, capacity: usize) -> Option<f64> {
        if self.last.len() == self.window {
            self.last_sum -= self.last.pop_front().unwrap_or(0.0);
        }
        self.last.push_back(u);
        self.last_sum += u;
        if self.last.len() < self.window {
            return None;
        }
        let a = self.last_sum / self.window as f64;
        let n = self.history.len();
        let p = (n >= 2).then(|| {
            let mean = self.sum / n as f64;
            let var = (self.sum_sq / n as f64 - mean * mean).max(0.0);
            let z = (a - mean) / var.sqrt().max(MIN_SPREAD);
            0.5 * erfc(z / std::f64::consts::SQRT_2)
        });
        if n == capacity {
            let old = self.history.pop_front().unwrap_or(0.0);
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.history.push_back(a);
        self.sum += a;
        self.sum_sq += a * a;
        p
    }
}

/// The period of `xs` in rows, if its autocorrelation has a clear peak (see the module docs).
/// The `current` period is kept while its peak is nearly as good as the best (an anomalous
/// cycle in the buffer can favour a multiple of the period for a while).
pub fn find_period(xs: &[f64], max_period: usize, current: Option<usize>) -> Option<usize> {
    let n = xs.len();
    let top = max_period.min(n / 2);
    if top < MIN_PERIOD {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let y: Vec<f64> = xs.iter().map(|x| x - mean).collect();
    let var = y.iter().map(|v| v * v).sum::<f64>() / n as f64;
    if var <= 0.0 {
        return None;
    }
    let acf: Vec<f64> = (0..=top + 1)
        .map(|l| {
            if l >= n {
                return 0.0;
            }
            let s: f64 = y[..n - l].iter().zip(&y[l..]).map(|(a, b)| a * b).sum();
            s / (n - l) as f64 / var
        })
        .collect();
    let mut peaks: Vec<(usize, f64)> = Vec::new();
    for l in MIN_PERIOD..=top {
        let a = acf[l];
        if a < PEAK_MIN || a < acf[l - 1] || a < acf[l + 1] {
            continue;
        }
        let dip = acf[l / 2..l].iter().copied().fold(f64::INFINITY, f64::min);
        if a - dip >= PEAK_PROMINENCE {
            peaks.push((l, a));
        }
    }
    let best = peaks.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if let Some(c) = current.and_then(|c| peaks.iter().find(|p| p.0 == c)) {
        if c.1 >= 0.8 * best {
            return Some(c.0);
        }
    }
    // The shortest lag nearly as good as the best: the period, not one of its multiples.
    peaks.iter().find(|p| p.1 >= 0.9 * best).map(|p| p.0)
}

#[cfg(test)]
mod tests;
