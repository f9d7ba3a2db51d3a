//! Every threshold and window of the core. Plain data: the service fills it from the
//! environment and checks it; tests build it directly.

use serde::{Deserialize, Serialize};
use vigil_schemas::Severity;

pub const MINUTE_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreConfig {
    /// Watermark = highest event time seen minus this. Default 30 s.
    pub allowed_lateness_ms: i64,
    /// Transaction ids are remembered this long in event time, behind the watermark, to drop
    /// duplicates. An event older than watermark - horizon cannot be checked; its minute is
    /// final long before, so at worst a duplicate that late is booked twice as a late event,
    /// never counted twice in a minute.
    pub dedup_horizon_ms: i64,
    /// Late events are booked for this long behind the watermark; older ones are refused
    /// (dead-lettered). Default 7 days, the producer's default MAX_EVENT_AGE.
    pub late_horizon_ms: i64,
    /// An event whose time is further than this after the broker's record timestamp is refused
    /// (a deterministic "from the far future" check: no wall clock involved).
    pub max_future_skew_ms: i64,
    pub rate: RateConfig,
    pub amount: AmountConfig,
    pub volume: VolumeConfig,
    /// Settings changed at run time, by event-time minute (`detector-settings`).
    #[serde(default)]
    pub settings: super::settings::Settings,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            allowed_lateness_ms: 30_000,
            dedup_horizon_ms: 2 * MINUTE_MS,
            late_horizon_ms: 7 * 24 * 60 * MINUTE_MS,
            max_future_skew_ms: 5 * MINUTE_MS,
            rate: RateConfig::default(),
            amount: AmountConfig::default(),
            volume: VolumeConfig::default(),
            settings: Default::default(),
        }
    }
}

/// How a rate series is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RateMethod {
    /// Evidence accumulated over minutes (binomial CUSUMs, see `rate.rs`): the default.
    #[default]
    Sequential,
    /// Each minute on its own (z ≥ `z_threshold` and binomial tail ≤ `max_p_value`), an anomaly
    /// re-passing the firing bar every minute: the rule before the sequential one, kept so the
    /// evaluation can score both side by side. `RateConfig::minute_test()` is that rule with
    /// exactly its former defaults (30-minute baseline, no quarantine, no per-category or
    /// per-merchant series): use it, not this variant alone, to reproduce the rule before.
    MinuteTest,
}

/// The rate rules (denied, failed, reversed, per auth code, per category and per merchant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateConfig {
    pub method: RateMethod,
    /// Rolling baseline length in clean minutes with traffic. Default 120 (the minute test: 30).
    pub baseline_minutes: usize,
    /// No judgement before the baseline has this many minutes. Default 10.
    pub min_baseline_minutes: usize,
    /// A minute (minute test) or an alarm's evidence (sequential) needs at least this many
    /// matching transactions. Default 5.
    pub min_count: i64,
    /// Sequential: at most this many false alarms per simulated week of normal traffic, across
    /// every rate series (a third each to the global series, the categories and the
    /// merchants). The CUSUM thresholds follow from it. Default 1.
    pub false_alarms_per_week: f64,
    /// Sequential: the shifts the CUSUMs are tuned to, as multiples of the normal rate. A
    /// CUSUM detects its own shift fastest and every larger one too. Default 1.5, 2 and 4: the
    /// range from a moderate shift to a spike, each within a few percent of the best delay.
    pub design_shifts: Vec<f64>,
    /// Sequential: how many category / merchant series the false-alarm target is divided
    /// among (no partition sees the others' series, so the count is configured).
    pub category_series: usize,
    pub merchant_series: usize,
    /// Sequential: a minute joins the baseline only this many minutes later, unless an alarm
    /// found it part of an incident. Default 15.
    pub quarantine_minutes: usize,
    /// Sequential: an open anomaly's minute is back in range once the evidence that the rate is
    /// normal, rather than at the incident's level, reaches these odds. Default 100 (to one):
    /// at 20 a long incident at night volume was resolved by chance and fired again.
    pub back_odds: f64,
    /// Sequential severity: high from this many times the normal rate, critical from this
    /// many; high also once the evidence is `evidence_high` times the firing bar.
    pub ratio_high: f64,
    pub ratio_critical: f64,
    pub evidence_high: f64,
    /// Sequential: cap on the baseline's dispersion (Pearson χ² per degree of freedom).
    pub max_dispersion: f64,
    /// Minute test: z-score (observed rate - baseline mean) / spread at or above which a
    /// minute may fire, and the z of severity high / critical.
    pub z_threshold: f64,
    pub z_high: f64,
    pub z_critical: f64,
    /// Minute test: one-sided binomial tail probability the minute's count must be at or below.
    pub max_p_value: f64,
    /// Minute test: floor on the spread of per-minute rates, so a flat history does not make
    /// every wiggle infinite. The binomial standard error at the minute's volume is a floor too.
    pub spread_floor: f64,
    /// Floor on the baseline rate (a rate of 0 would make one event infinitely surprising).
    pub rate_floor: f64,
    /// Minutes back in range in a row that resolve an anomaly (hysteresis). Default 2: with the
    /// sequential rule a minute is back in range only once the evidence for normal reaches
    /// `back_odds`, which already confirms the return (the minute test, judging minutes alone,
    /// used 3).
    pub resolve_after_minutes: u32,
    /// Also watch the share of each non-approval auth code.
    pub auth_codes: bool,
    /// Also watch the rates of each category / merchant with enough volume: an average of at
    /// least this many transactions a minute (exponentially weighted, one-hour half-life).
    pub by_category: bool,
    pub by_merchant: bool,
    pub category_min_per_minute: f64,
    pub merchant_min_per_minute: f64,
    /// At most this many categories and this many merchants watched per input partition.
    pub max_keyed_series: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            method: RateMethod::default(),
            baseline_minutes: 120,
            min_baseline_minutes: 10,
            min_count: 5,
            false_alarms_per_week: 1.0,
            design_shifts: vec![1.5, 2.0, 4.0],
            category_series: 100,
            merchant_series: 1000,
            quarantine_minutes: 15,
            back_odds: 100.0,
            ratio_high: 2.0,
            ratio_critical: 4.0,
            evidence_high: 4.0,
            max_dispersion: 10.0,
            z_threshold: 4.0,
            z_high: 8.0,
            z_critical: 16.0,
            max_p_value: 1e-6,
            spread_floor: 0.005,
            rate_floor: 0.001,
            resolve_after_minutes: 2,
            auth_codes: true,
            by_category: true,
            by_merchant: true,
            category_min_per_minute: 5.0,
            merchant_min_per_minute: 5.0,
            max_keyed_series: 500,
        }
    }
}

impl RateConfig {
    /// The rule before the sequential one, exactly as its defaults were: each minute judged
    /// alone against the last 30 clean minutes.
    pub fn minute_test() -> Self {
        RateConfig {
            method: RateMethod::MinuteTest,
            baseline_minutes: 30,
            quarantine_minutes: 0,
            resolve_after_minutes: 3,
            by_category: false,
            by_merchant: false,
            ..RateConfig::default()
        }
    }
}

/// The volume rules: transactions per minute that drop (to none at all) or surge, globally, per
/// category and per merchant (see `volume.rs` for the model and the derivation of the bars).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeConfig {
    pub enabled: bool,
    /// At most this many false alarms per simulated week of normal traffic, across every volume
    /// series (a third each to the global series, the categories and the merchants). Default 1.
    pub false_alarms_per_week: f64,
    /// The drops the CUSUMs are tuned to, as fractions of the expected count: default 0.5 (a
    /// halving) and 0.1 (traffic all but stopped).
    pub design_drops: Vec<f64>,
    /// The surges, as multiples: default 1.5 and 3.
    pub design_surges: Vec<f64>,
    /// A minute is judged only when at least this many transactions are expected in it (a
    /// drop from 1.5 a minute to none is no evidence of an outage). Default 2.
    pub min_expected: f64,
    /// An alarm needs at least this many transactions missing (drop) or extra (surge) over its
    /// evidence, so no alarm rests on a handful of events. Default 5.
    pub min_excess: f64,
    /// The baseline's smoothing: level and trend weights per minute (Holt), and the trend's
    /// damping per minute of extrapolation. Defaults 0.1, 0.01, 0.98.
    pub level_weight: f64,
    pub trend_weight: f64,
    pub trend_damping: f64,
    /// Minutes folded into the baseline before any is judged. Default 60: a new series' trend
    /// (weight 0.01 a minute) is still far from the slope of the day before then, and a young
    /// model on a morning ramp mistakes the ramp for a surge (the normal days of `make
    /// evaluate`: 5 false alarms in 21 days with 30, 2 with 60, recall unchanged).
    pub warmup_minutes: u32,
    /// A minute joins the baseline only this many minutes later, unless an alarm found it part
    /// of an incident (as for the rate rules). Default 15.
    pub quarantine_minutes: usize,
    /// An open anomaly's minute is back in range once the evidence for the normal volume,
    /// rather than the incident's, reaches these odds. Default 100 (to one).
    pub back_odds: f64,
    /// Minutes back in range in a row that resolve an anomaly. Default 2.
    pub resolve_after_minutes: u32,
    /// Below this many expected transactions a minute, an anomaly's severity is one tier lower
    /// (less at stake). Default 10.
    pub min_at_stake: f64,
    /// Cap on the dispersion (squared Pearson residuals of the baseline's forecasts).
    pub max_dispersion: f64,
    /// Also judge categories / merchants: those whose rates are watched (see
    /// `RateConfig::category_min_per_minute`), counted as `category_series` / `merchant_series`
    /// for the false-alarm target.
    pub by_category: bool,
    pub by_merchant: bool,
    pub category_series: usize,
    pub merchant_series: usize,
    /// At most this many quiet minutes after a series' last final minute are judged as zeros
    /// when time jumps (a replay resuming after a long gap); beyond, the series starts afresh.
    /// Default 1 440 (a day).
    pub max_gap_minutes: i64,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            enabled: true,
            false_alarms_per_week: 1.0,
            design_drops: vec![0.5, 0.1],
            design_surges: vec![1.5, 3.0],
            min_expected: 2.0,
            min_excess: 5.0,
            level_weight: 0.1,
            trend_weight: 0.01,
            trend_damping: 0.98,
            warmup_minutes: 60,
            quarantine_minutes: 15,
            back_odds: 100.0,
            resolve_after_minutes: 2,
            min_at_stake: 10.0,
            max_dispersion: 10.0,
            by_category: true,
            by_merchant: true,
            category_series: 100,
            merchant_series: 1000,
            max_gap_minutes: 24 * 60,
        }
    }
}

/// The amount rules (per category and per merchant, on ln(1 + amount)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmountConfig {
    /// Baseline window, in days of event time. Default 30.
    pub window_days: u32,
    /// Width of one time bucket of sufficient statistics. Default 1 day.
    pub bucket_ms: i64,
    /// No judgement before a key's baseline holds this many transactions. Default 100.
    pub min_samples: u64,
    /// z thresholds of the tiers (in ln space). Defaults 2.5 / 3 / 5; strict mode 2 / 2.5 / 4.
    pub z_medium: f64,
    pub z_high: f64,
    pub z_critical: f64,
    /// Lowest tier emitted as an anomaly. Default medium: every tier is emitted. A tier below it
    /// is not emitted; the service counts it in `vigil_detector_amount_scores_below_min_total`.
    pub min_severity: Severity,
    /// Below this spread (ln space) the baseline counts as flat and the fallback applies.
    pub low_variance_spread: f64,
    /// Fallback: flag an amount at least this many times the baseline (geometric) mean ...
    pub low_variance_ratio: f64,
    /// ... whose excess over it is at least this many minor units.
    pub materiality_minor: i64,
    pub per_category: bool,
    pub per_merchant: bool,
}

impl Default for AmountConfig {
    fn default() -> Self {
        AmountConfig {
            window_days: 30,
            bucket_ms: 24 * 60 * MINUTE_MS,
            min_samples: 100,
            z_medium: 2.5,
            z_high: 3.0,
            z_critical: 5.0,
            min_severity: Severity::Medium,
            low_variance_spread: 0.01,
            low_variance_ratio: 2.0,
            materiality_minor: 1000,
            per_category: true,
            per_merchant: true,
        }
    }
}

impl AmountConfig {
    /// `ANOMALY_STRICT_MODE=true`: every tier one notch more sensitive.
    pub fn strict(mut self) -> Self {
        self.z_medium = 2.0;
        self.z_high = 2.5;
        self.z_critical = 4.0;
        self
    }

    pub fn window_buckets(&self) -> i64 {
        ((i64::from(self.window_days) * 24 * 60 * MINUTE_MS) / self.bucket_ms.max(1)).max(1)
    }
}

/// Start of the minute containing `t` (inclusive); the window ends 60 s later (exclusive).
pub fn minute_of(t: i64) -> i64 {
    t.div_euclid(MINUTE_MS) * MINUTE_MS
}
