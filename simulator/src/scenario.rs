//! Scenarios: baseline traffic and incidents, written in TOML.
//!
//! A scenario file is parsed into [`ScenarioFile`] (its literal shape) and then checked and
//! resolved into a [`Scenario`], with every problem reported at once, each naming its field as
//! a path such as `categories[1].merchants[0].ln_sigma`.
//!
//! ```toml
//! name = "example"
//! description = "What it shows."
//! duration = "60m"                 # whole minutes
//! events_per_minute = 200          # the daily average when daily_cycle is set
//! currency = "EUR"                 # default for every category
//!
//! [status_mix]                     # shares, normalised
//! approved = 0.90
//! denied = 0.06
//! failed = 0.03
//! reversed = 0.01
//!
//! [auth_codes]                     # per status: code = share (normalised);
//! denied = { "05" = 0.6, "51" = 0.4 }   # defaults: approved and reversed "00",
//! failed = { "91" = 1.0 }               # denied "05", failed "91"
//!
//! [daily_cycle]                    # volume × (1 + amplitude·cos(2π(hour − peak_hour)/24)), UTC
//! amplitude = 0.5
//! peak_hour = 13
//! weekend_factor = 0.6             # optional: Saturdays and Sundays (UTC), traffic above the
//!                                  # night's trough × 0.6
//! trend_per_day = 0.01             # optional: volume × 1.01 more every day of the run
//!
//! [[categories]]
//! name = "grocery"
//! weight = 3                       # share of traffic (normalised)
//! ln_mean = 8.0                    # mean of ln(1 + amount_minor) ...
//! ln_sigma = 0.5                   # ... and its sigma, before clipping at ±1.8σ
//! merchants = [
//!   { id = "m-grocer-1", weight = 2 },                 # the category's distribution
//!   { id = "m-grocer-2", weight = 1, multiplier = 0.8 },  # amounts × 0.8
//!   { id = "m-grocer-3", ln_mean = 7.6, ln_sigma = 0.4 }, # its own distribution
//! ]
//!
//! [[incidents]]
//! kind = "rate_spike"              # rate_spike | auth_code_surge | amount_outlier | volume
//! status = "denied"                #   | merchant_dark
//! start = "30m"                    # offset from the scenario start
//! duration = "3m"
//! target_rate = 0.25               # or multiplier = 5
//! # merchant = "m-grocer-1"        # optional, or category = "grocery": only that scope's
//! #                                # traffic changes, and target_rate is a share of its traffic
//!
//! [[incidents]]
//! kind = "volume"                  # transactions per minute × factor, in all traffic or in
//! factor = 0                       # one merchant's or category's: 0 stops them, 0.5 halves
//! merchant = "m-grocer-2"          # them, 3 triples them (≥ 0, not 1)
//! start = "40m"                    # (merchant_dark with a merchant is factor 0 there)
//! duration = "10m"
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vigil_common::config::parse_duration;
use vigil_schemas::TransactionStatus;

use crate::amounts::{clipped_sd, mixture, AmountTiers, CLIP_SIGMAS};
use crate::error::{Error, Result, ScenarioProblems};

pub const MINUTE_MS: i64 = 60_000;

/// The producer's default largest amount (`MAX_AMOUNT_MINOR`).
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000_000;
/// Below this spread the detector switches to its low-variance fallback instead of z-scores.
pub const MIN_LN_SIGMA: f64 = 0.05;
/// A category whose merchants differ so much that a merchant's largest normal amount scores
/// above this against the category's baseline is refused: the detector would flag normal traffic.
/// Below the detector's lowest emitted tier (medium, 2.5). (Against its own merchant's baseline
/// the largest normal amount scores 1.8 / 0.8329 = 2.16.)
pub const MAX_NORMAL_CATEGORY_Z: f64 = 2.3;

/// The built-in scenarios, embedded from `simulator/scenarios/`.
pub const BUILTIN: [(&str, &str); 5] = [
    ("seed-validation", include_str!("../scenarios/seed-validation.toml")),
    ("normal-day", include_str!("../scenarios/normal-day.toml")),
    ("busy-day", include_str!("../scenarios/busy-day.toml")),
    ("amount-outliers", include_str!("../scenarios/amount-outliers.toml")),
    ("mixed", include_str!("../scenarios/mixed.toml")),
];

pub const DEFAULT_SCENARIO: &str = "seed-validation";

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub duration: String,
    pub events_per_minute: f64,
    #[serde(default = "default_currency")]
    pub currency: String,
    pub status_mix: BTreeMap<String, f64>,
    #[serde(default)]
    pub auth_codes: BTreeMap<String, BTreeMap<String, f64>>,
    pub daily_cycle: Option<DailyCycle>,
    pub categories: Vec<CategoryFile>,
    #[serde(default)]
    pub incidents: Vec<IncidentFile>,
}

fn default_currency() -> String {
    "EUR".into()
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyCycle {
    /// 0 (flat) to below 1 (the trough nearly silent).
    pub amplitude: f64,
    /// Hour of the day (UTC, 0 to 24) at which volume peaks.
    pub peak_hour: f64,
    /// On Saturdays and Sundays (UTC), the traffic above the night's trough × this: the night
    /// is as on weekdays, the day quieter (0.6) or busier (1.3). Default 1.
    #[serde(default = "one")]
    pub weekend_factor: f64,
    /// A slow trend: volume × (1 + this) for every day since the run started (0.01: 1 % more
    /// every day). Default 0.
    #[serde(default)]
    pub trend_per_day: f64,
}

impl DailyCycle {
    /// The volume factor at `t` (ms since the epoch) of a run that started at `start_ms`:
    /// d = 1 + amplitude·cos(2π(hour − peak)/24) on weekdays; on Saturdays and Sundays the part
    /// above the trough (1 − amplitude) × `weekend_factor`; all × (1 + trend_per_day)^(days
    /// since the start).
    pub fn factor(&self, t_ms: i64, start_ms: i64) -> f64 {
        let hour = t_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0;
        let mut daily = 1.0 + self.amplitude * (2.0 * std::f64::consts::PI * (hour - self.peak_hour) / 24.0).cos();
        // 1970-01-01 was a Thursday: days 2 and 3 of every week of the epoch are a weekend.
        if matches!(t_ms.div_euclid(86_400_000).rem_euclid(7), 2 | 3) {
            let trough = 1.0 - self.amplitude;
            daily = trough + self.weekend_factor * (daily - trough);
        }
        let days = (t_ms - start_ms).max(0) as f64 / 86_400_000.0;
        daily * (1.0 + self.trend_per_day).powf(days)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryFile {
    pub name: String,
    #[serde(default = "one")]
    pub weight: f64,
    pub currency: Option<String>,
    pub ln_mean: Option<f64>,
    pub ln_sigma: Option<f64>,
    pub merchants: Vec<MerchantFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantFile {
    pub id: String,
    #[serde(default = "one")]
    pub weight: f64,
    pub ln_mean: Option<f64>,
    pub ln_sigma: Option<f64>,
    /// Amounts × this against the category's distribution (ln_mean + ln(multiplier)).
    pub multiplier: Option<f64>,
}

/// One incident as written; which fields apply depends on `kind`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentFile {
    pub kind: String,
    pub name: Option<String>,
    pub start: String,
    pub duration: Option<String>,
    pub status: Option<String>,
    pub code: Option<String>,
    pub multiplier: Option<f64>,
    pub target_rate: Option<f64>,
    pub category: Option<String>,
    pub merchant: Option<String>,
    pub sigma: Option<f64>,
    pub count: Option<u32>,
    pub factor: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// The checked model.

/// A checked scenario. Shares and weights are normalised; durations are milliseconds.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub duration_ms: i64,
    pub events_per_minute: f64,
    /// Share of each status, in [`TransactionStatus::ALL`] order.
    pub status_mix: [f64; 4],
    /// Auth codes and their shares within each status, in [`TransactionStatus::ALL`] order.
    pub auth_codes: [Vec<(String, f64)>; 4],
    pub daily_cycle: Option<DailyCycle>,
    pub categories: Vec<Category>,
    pub incidents: Vec<Incident>,
    /// The TOML it was read from.
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    /// Share of all traffic.
    pub weight: f64,
    pub currency: String,
    pub merchants: Vec<Merchant>,
    /// True mean and spread of the category's (clipped) ln amounts: the mixture of its merchants.
    pub ln_mean: f64,
    pub ln_sd: f64,
}

#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: String,
    /// Share within its category.
    pub weight: f64,
    pub ln_mean: f64,
    /// Sigma before clipping; the spread the detector measures is [`Merchant::ln_sd`].
    pub ln_sigma: f64,
}

impl Merchant {
    /// The true spread of this merchant's clipped ln amounts.
    pub fn ln_sd(&self) -> f64 {
        clipped_sd(self.ln_sigma)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub name: String,
    /// Offset from the scenario start.
    pub start_ms: i64,
    pub duration_ms: i64,
    pub kind: IncidentKind,
}

impl Incident {
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms
    }

    /// Whether offset `t` (ms from the scenario start) lies in `[start, end)`.
    pub fn covers(&self, t: i64) -> bool {
        t >= self.start_ms && t < self.end_ms()
    }
}

/// How a rate incident changes its stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The stream's events per minute × this.
    Multiplier(f64),
    /// Extra events until the stream is this share of all transactions (the detector's "rate").
    TargetRate(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutlierTarget {
    Category(String),
    Merchant(String),
}

/// Where a rate incident happens: in all traffic, or in one category's or one merchant's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    Global,
    Category(String),
    Merchant(String),
}

impl Scope {
    /// The anomaly dimension that watches this scope (`global`, `category`, `merchant`).
    pub fn dimension(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Category(_) => "category",
            Scope::Merchant(_) => "merchant",
        }
    }

    /// The dimension's value: `all`, the category's name or the merchant's id.
    pub fn value(&self) -> &str {
        match self {
            Scope::Global => "all",
            Scope::Category(c) => c,
            Scope::Merchant(m) => m,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum IncidentKind {
    /// More transactions of one outcome, in all traffic or in one scope's.
    RateSpike { status: TransactionStatus, change: Change, scope: Scope },
    /// More transactions with one auth code (of the status it belongs to), in all traffic or in
    /// one scope's.
    AuthCodeSurge { code: String, status: TransactionStatus, change: Change, scope: Scope },
    /// `count` approved transactions at `sigma` standard deviations above the target's true
    /// ln mean, evenly spread over the span.
    AmountOutlier { target: OutlierTarget, sigma: f64, count: u32 },
    /// Transactions per minute × `factor` in all traffic or in one scope's, every status
    /// alike: 0 stops them (`merchant_dark` is this at one merchant), 0.5 halves them, 3
    /// triples them. A drop withholds each of the scope's transactions with probability
    /// 1 − factor; a surge adds (factor − 1) × the scope's normal traffic with the normal
    /// status and auth-code mix (in all traffic, every stream of the minute is multiplied).
    Volume { factor: f64, scope: Scope },
}

impl IncidentKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            IncidentKind::RateSpike { .. } => "rate_spike",
            IncidentKind::AuthCodeSurge { .. } => "auth_code_surge",
            IncidentKind::AmountOutlier { .. } => "amount_outlier",
            IncidentKind::Volume { .. } => "volume",
        }
    }
}

pub fn status_index(s: TransactionStatus) -> usize {
    match s {
        TransactionStatus::Approved => 0,
        TransactionStatus::Denied => 1,
        TransactionStatus::Failed => 2,
        TransactionStatus::Reversed => 3,
    }
}

fn default_auth_code(s: TransactionStatus) -> &'static str {
    match s {
        TransactionStatus::Approved | TransactionStatus::Reversed => "00",
        TransactionStatus::Denied => "05",
        TransactionStatus::Failed => "91",
    }
}

impl Scenario {
    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Result<Scenario> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, src)) => Scenario::from_toml(src),
            None => Err(Error::UnknownScenario { name: name.into(), known: builtin_names().join(", ") }),
        }
    }

    /// A built-in scenario by name, else a scenario file at that path.
    pub fn load(name_or_path: &str) -> Result<Scenario> {
        if BUILTIN.iter().any(|(n, _)| *n == name_or_path) {
            return Scenario::builtin(name_or_path);
        }
        let path = std::path::Path::new(name_or_path);
        if !path.exists() {
            return Err(Error::UnknownScenario { name: name_or_path.into(), known: builtin_names().join(", ") });
        }
        let src = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("Failed to read scenario {name_or_path}"), e))?;
        Scenario::from_toml(&src)
    }

    /// Parses and checks a scenario.
    pub fn from_toml(src: &str) -> Result<Scenario> {
        let file: ScenarioFile = toml::from_str(src).map_err(|e| Error::ScenarioSyntax {
            name: name_hint(src),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut s = file.check()?;
        s.source = src.to_owned();
        Ok(s)
    }

    pub fn status_share(&self, s: TransactionStatus) -> f64 {
        self.status_mix[status_index(s)]
    }

    pub fn codes(&self, s: TransactionStatus) -> &[(String, f64)] {
        &self.auth_codes[status_index(s)]
    }

    /// A merchant and its category.
    pub fn merchant(&self, id: &str) -> Option<(&Category, &Merchant)> {
        self.categories.iter().find_map(|c| c.merchants.iter().find(|m| m.id == id).map(|m| (c, m)))
    }

    pub fn category(&self, name: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.name == name)
    }

    /// Number of whole minutes.
    pub fn minutes(&self) -> i64 {
        self.duration_ms / MINUTE_MS
    }
}

fn name_hint(src: &str) -> String {
    src.lines()
        .find_map(|l| l.trim().strip_prefix("name").map(str::trim).and_then(|r| r.strip_prefix('=')))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| "(unnamed)".into())
}

pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Problems found while checking, each `field: message`.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, field: impl AsRef<str>, msg: impl AsRef<str>) {
        self.0.push(format!("{}: {}", field.as_ref(), msg.as_ref()));
    }

    fn check(&mut self, ok: bool, field: impl AsRef<str>, msg: impl AsRef<str>) -> bool {
        if !ok {
            self.add(field, msg);
        }
        ok
    }

    fn duration(&mut self, field: &str, raw: &str) -> Option<i64> {
        match parse_duration(raw) {
            Ok(d) => Some(d.as_millis() as i64),
            Err(e) => {
                self.add(field, format!("{raw:?} is not a duration such as 90s, 30m or 24h: {e}"));
                None
            }
        }
    }
}

fn finite_in(p: &mut Problems, field: &str, v: f64, lo: f64, hi: f64, what: &str) -> bool {
    p.check(v.is_finite() && v >= lo && v <= hi, field, format!("{v} is not {what}"))
}

fn valid_text(p: &mut Problems, field: &str, s: &str, max: usize) {
    if s.is_empty() || s.chars().count() > max {
        p.add(field, format!("must be 1 to {max} characters"));
    } else if s.chars().any(char::is_control) || s.trim() != s {
        p.add(field, "must not contain control characters or start or end with whitespace");
    }
}

fn normalise(weights: &mut [f64]) {
    let total: f64 = weights.iter().sum();
    if total > 0.0 {
        for w in weights {
            *w /= total;
        }
    }
}

impl ScenarioFile {
    /// Checks every value and resolves the model, or names every problem.
    pub fn check(self) -> Result<Scenario> {
        let mut p = Problems::default();
        valid_text(&mut p, "name", &self.name, 64);
        let duration_ms = p.duration("duration", &self.duration).unwrap_or(0);
        if duration_ms > 0 || parse_duration(&self.duration).is_ok() {
            p.check(
                duration_ms > 0 && duration_ms % MINUTE_MS == 0,
                "duration",
                "must be a positive whole number of minutes (the detector judges whole minutes)",
            );
        }
        finite_in(&mut p, "events_per_minute", self.events_per_minute, 0.01, 10_000_000.0, "in 0.01..=10000000");
        check_currency(&mut p, "currency", &self.currency);

        // Status mix.
        let mut status_mix = [0.0; 4];
        for (k, v) in &self.status_mix {
            let field = format!("status_mix.{k}");
            match TransactionStatus::parse(k) {
                Some(s) => {
                    if finite_in(&mut p, &field, *v, 0.0, f64::MAX, "a share ≥ 0") {
                        status_mix[status_index(s)] = *v;
                    }
                }
                None => p.add(field, "is not a status (approved, denied, failed, reversed)"),
            }
        }
        if status_mix.iter().sum::<f64>() <= 0.0 {
            p.add("status_mix", "needs at least one positive share");
        }
        normalise(&mut status_mix);

        // Auth codes.
        let mut auth_codes: [Vec<(String, f64)>; 4] = Default::default();
        for (k, codes) in &self.auth_codes {
            let field = format!("auth_codes.{k}");
            let Some(s) = TransactionStatus::parse(k) else {
                p.add(field, "is not a status (approved, denied, failed, reversed)");
                continue;
            };
            let mut list = Vec::new();
            for (code, share) in codes {
                let f = format!("{field}.{code}");
                check_code(&mut p, &f, code);
                if finite_in(&mut p, &f, *share, 0.0, f64::MAX, "a share ≥ 0") && *share > 0.0 {
                    list.push((code.clone(), *share));
                }
            }
            if list.is_empty() {
                p.add(field, "needs at least one code with a positive share");
            }
            let mut w: Vec<f64> = list.iter().map(|c| c.1).collect();
            normalise(&mut w);
            auth_codes[status_index(s)] = list.into_iter().zip(w).map(|((c, _), w)| (c, w)).collect();
        }
        for s in TransactionStatus::ALL {
            if auth_codes[status_index(s)].is_empty() {
                auth_codes[status_index(s)] = vec![(default_auth_code(s).to_owned(), 1.0)];
            }
        }

        if let Some(c) = &self.daily_cycle {
            finite_in(&mut p, "daily_cycle.amplitude", c.amplitude, 0.0, 0.99, "in 0..=0.99");
            finite_in(&mut p, "daily_cycle.peak_hour", c.peak_hour, 0.0, 24.0, "an hour in 0..=24");
            finite_in(&mut p, "daily_cycle.weekend_factor", c.weekend_factor, 0.0, 10.0, "in 0..=10");
            finite_in(&mut p, "daily_cycle.trend_per_day", c.trend_per_day, -0.5, 1.0, "in -0.5..=1");
        }

        let categories = self.check_categories(&mut p);
        let mut scenario = Scenario {
            name: self.name.clone(),
            description: self.description.clone(),
            duration_ms,
            events_per_minute: self.events_per_minute,
            status_mix,
            auth_codes,
            daily_cycle: self.daily_cycle,
            categories,
            incidents: Vec::new(),
            source: String::new(),
        };
        let incidents: Vec<Incident> = self
            .incidents
            .iter()
            .enumerate()
            .filter_map(|(i, f)| check_incident(&mut p, &format!("incidents[{i}]"), f, &scenario))
            .collect();
        scenario.incidents = incidents;

        if p.0.is_empty() {
            Ok(scenario)
        } else {
            Err(Error::ScenarioInvalid(ScenarioProblems { scenario: self.name, problems: p.0 }))
        }
    }

    fn check_categories(&self, p: &mut Problems) -> Vec<Category> {
        if self.categories.is_empty() {
            p.add("categories", "needs at least one category");
        }
        let mut seen_categories = BTreeSet::new();
        let mut seen_merchants = BTreeSet::new();
        let mut out = Vec::new();
        for (ci, c) in self.categories.iter().enumerate() {
            let cf = format!("categories[{ci}]");
            valid_text(p, &format!("{cf}.name"), &c.name, 64);
            p.check(seen_categories.insert(c.name.clone()), format!("{cf}.name"), format!("{:?} is repeated", c.name));
            finite_in(p, &format!("{cf}.weight"), c.weight, 1e-9, f64::MAX, "a weight > 0");
            let currency = c.currency.clone().unwrap_or_else(|| self.currency.clone());
            if c.currency.is_some() {
                check_currency(p, &format!("{cf}.currency"), &currency);
            }
            if let Some(m) = c.ln_mean {
                finite_in(p, &format!("{cf}.ln_mean"), m, 0.0, 25.0, "in 0..=25");
            }
            if let Some(s) = c.ln_sigma {
                check_sigma(p, &format!("{cf}.ln_sigma"), s);
            }
            if c.merchants.is_empty() {
                p.add(format!("{cf}.merchants"), "needs at least one merchant");
            }
            let mut merchants = Vec::new();
            for (mi, m) in c.merchants.iter().enumerate() {
                let mf = format!("{cf}.merchants[{mi}]");
                valid_text(p, &format!("{mf}.id"), &m.id, 128);
                p.check(
                    seen_merchants.insert(m.id.clone()),
                    format!("{mf}.id"),
                    format!("{:?} is repeated (merchant ids are unique across the scenario)", m.id),
                );
                finite_in(p, &format!("{mf}.weight"), m.weight, 1e-9, f64::MAX, "a weight > 0");
                let ln_mean = match (m.ln_mean, m.multiplier, c.ln_mean) {
                    (Some(_), Some(_), _) => {
                        p.add(format!("{mf}.multiplier"), "set either ln_mean or multiplier, not both");
                        None
                    }
                    (Some(v), None, _) => {
                        finite_in(p, &format!("{mf}.ln_mean"), v, 0.0, 25.0, "in 0..=25").then_some(v)
                    }
                    (None, mult, Some(base)) => {
                        let k = mult.unwrap_or(1.0);
                        finite_in(p, &format!("{mf}.multiplier"), k, 1e-6, 1e6, "a factor > 0").then(|| base + k.ln())
                    }
                    (None, _, None) => {
                        p.add(format!("{mf}.ln_mean"), "is required (or set ln_mean on the category)");
                        None
                    }
                };
                let ln_sigma = match (m.ln_sigma, c.ln_sigma) {
                    (Some(s), _) => check_sigma(p, &format!("{mf}.ln_sigma"), s).then_some(s),
                    (None, Some(s)) => Some(s),
                    (None, None) => {
                        p.add(format!("{mf}.ln_sigma"), "is required (or set ln_sigma on the category)");
                        None
                    }
                };
                if let (Some(ln_mean), Some(ln_sigma)) = (ln_mean, ln_sigma) {
                    let top = ln_mean + CLIP_SIGMAS * ln_sigma;
                    if top.exp() > MAX_AMOUNT_MINOR as f64 {
                        p.add(
                            format!("{mf}.ln_mean"),
                            format!(
                                "amounts up to e^{top:.1} exceed the producer's MAX_AMOUNT_MINOR {MAX_AMOUNT_MINOR}"
                            ),
                        );
                    }
                    merchants.push(Merchant { id: m.id.clone(), weight: m.weight, ln_mean, ln_sigma });
                }
            }
            if merchants.len() != c.merchants.len() {
                continue;
            }
            let mut w: Vec<f64> = merchants.iter().map(|m| m.weight).collect();
            normalise(&mut w);
            for (m, w) in merchants.iter_mut().zip(w) {
                m.weight = w;
            }
            let components: Vec<(f64, f64, f64)> = merchants.iter().map(|m| (m.weight, m.ln_mean, m.ln_sd())).collect();
            let (ln_mean, ln_sd) = mixture(&components);
            // Normal traffic must stay normal against the category's baseline too.
            for (mi, m) in merchants.iter().enumerate() {
                let z = (m.ln_mean + CLIP_SIGMAS * m.ln_sigma - ln_mean) / ln_sd;
                if z > MAX_NORMAL_CATEGORY_Z {
                    p.add(
                        format!("{cf}.merchants[{mi}]"),
                        format!(
                            "{}'s largest normal amount would score z = {z:.2} against category {}'s baseline \
                             (more than {MAX_NORMAL_CATEGORY_Z}): the detector would flag normal traffic; bring the \
                             merchants' ln_mean closer together or widen their ln_sigma",
                            m.id, c.name
                        ),
                    );
                }
            }
            out.push(Category { name: c.name.clone(), weight: c.weight, currency, merchants, ln_mean, ln_sd });
        }
        let mut w: Vec<f64> = out.iter().map(|c| c.weight).collect();
        normalise(&mut w);
        for (c, w) in out.iter_mut().zip(w) {
            c.weight = w;
        }
        out
    }
}

fn check_currency(p: &mut Problems, field: &str, c: &str) {
    p.check(
        c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()),
        field,
        format!("{c:?} is not an ISO 4217 code such as EUR"),
    );
}

fn check_code(p: &mut Problems, field: &str, code: &str) {
    p.check(
        !code.is_empty() && code.len() <= 8 && code.chars().all(|c| c.is_ascii_alphanumeric()),
        field,
        format!("auth code {code:?} must be 1 to 8 ASCII letters or digits"),
    );
}

fn check_sigma(p: &mut Problems, field: &str, s: f64) -> bool {
    finite_in(
        p,
        field,
        s,
        MIN_LN_SIGMA,
        3.0,
        &format!("in {MIN_LN_SIGMA}..=3 (below {MIN_LN_SIGMA} the detector's low-variance fallback applies)"),
    )
}

/// Largest volume factor: a surge beyond it would rather be a different scenario.
pub const MAX_VOLUME_FACTOR: f64 = 100.0;

fn check_factor(p: &mut Problems, field: &str, x: f64) -> bool {
    finite_in(p, field, x, 0.0, MAX_VOLUME_FACTOR, &format!("a factor in 0..={MAX_VOLUME_FACTOR}"))
        && p.check(x != 1.0, field, "1 changes nothing: below 1 traffic drops (0 stops it), above 1 it surges")
}

fn check_change(p: &mut Problems, f: &str, file: &IncidentFile, normal_share: f64, what: &str) -> Option<Change> {
    match (file.multiplier, file.target_rate) {
        (Some(m), None) => {
            finite_in(p, &format!("{f}.multiplier"), m, 1.0 + 1e-9, 10_000.0, "a factor above 1 (up to 10000)")
                .then_some(Change::Multiplier(m))
        }
        (None, Some(r)) => {
            let ok = finite_in(p, &format!("{f}.target_rate"), r, 0.0, 0.99, "a share in 0..=0.99");
            let above = p.check(
                !ok || r > normal_share,
                format!("{f}.target_rate"),
                format!("{r} is not above the normal share of {what} ({normal_share:.4})"),
            );
            (ok && above).then_some(Change::TargetRate(r))
        }
        (Some(_), Some(_)) => {
            p.add(format!("{f}.target_rate"), "set either multiplier or target_rate, not both");
            None
        }
        (None, None) => {
            p.add(format!("{f}.multiplier"), "set multiplier (a factor) or target_rate (a share)");
            None
        }
    }
}

fn check_incident(p: &mut Problems, f: &str, file: &IncidentFile, s: &Scenario) -> Option<Incident> {
    let before = p.0.len();
    let start_ms = p.duration(&format!("{f}.start"), &file.start);
    // Fields each kind reads; any other field set is a mistake worth naming.
    let used: &[&str] = match file.kind.as_str() {
        "rate_spike" => &["status", "multiplier", "target_rate", "duration", "category", "merchant"],
        "auth_code_surge" => &["code", "status", "multiplier", "target_rate", "duration", "category", "merchant"],
        "amount_outlier" => &["category", "merchant", "sigma", "count", "duration"],
        "volume" => &["factor", "duration", "category", "merchant"],
        "merchant_dark" => &["merchant", "duration"],
        other => {
            p.add(
                format!("{f}.kind"),
                format!("{other:?} is not one of rate_spike, auth_code_surge, amount_outlier, volume, merchant_dark"),
            );
            return None;
        }
    };
    let set = [
        ("status", file.status.is_some()),
        ("code", file.code.is_some()),
        ("multiplier", file.multiplier.is_some()),
        ("target_rate", file.target_rate.is_some()),
        ("category", file.category.is_some()),
        ("merchant", file.merchant.is_some()),
        ("sigma", file.sigma.is_some()),
        ("count", file.count.is_some()),
        ("factor", file.factor.is_some()),
        ("duration", file.duration.is_some()),
    ];
    for (field, is_set) in set {
        if is_set && !used.contains(&field) {
            p.add(format!("{f}.{field}"), format!("does not apply to kind {}", file.kind));
        }
    }
    let duration_ms = match (&file.duration, file.kind.as_str()) {
        (Some(d), _) => p.duration(&format!("{f}.duration"), d),
        // Outliers default to one per minute.
        (None, "amount_outlier") => Some(i64::from(file.count.unwrap_or(1).max(1)) * MINUTE_MS),
        (None, _) => {
            p.add(format!("{f}.duration"), "is required");
            None
        }
    };
    if let (Some(st), Some(d)) = (start_ms, duration_ms) {
        p.check(d > 0, format!("{f}.duration"), "must be greater than zero");
        p.check(
            st + d <= s.duration_ms,
            format!("{f}.start"),
            format!(
                "the incident ({} + {}) ends after the scenario ({})",
                fmt_duration(st),
                fmt_duration(d),
                fmt_duration(s.duration_ms)
            ),
        );
    }
    let status_of = |p: &mut Problems, raw: &Option<String>| -> Option<TransactionStatus> {
        let raw = raw.as_deref()?;
        let st = TransactionStatus::parse(raw);
        if st.is_none() {
            p.add(format!("{f}.status"), format!("{raw:?} is not a status (approved, denied, failed, reversed)"));
        }
        st
    };
    let merchant_exists = |p: &mut Problems, m: &str| {
        p.check(s.merchant(m).is_some(), format!("{f}.merchant"), format!("no merchant {m:?} in the categories"))
    };
    // Rate incidents: all traffic, or one category's or one merchant's (a target rate is then a
    // share of that scope's traffic; every scope has the same status mix).
    let scope_of = |p: &mut Problems| -> Option<Scope> {
        match (&file.category, &file.merchant) {
            (None, None) => Some(Scope::Global),
            (Some(c), None) => p
                .check(s.category(c).is_some(), format!("{f}.category"), format!("no category {c:?}"))
                .then(|| Scope::Category(c.clone())),
            (None, Some(m)) => merchant_exists(p, m).then(|| Scope::Merchant(m.clone())),
            (Some(_), Some(_)) => {
                p.add(format!("{f}.merchant"), "set at most one of merchant and category");
                None
            }
        }
    };

    let kind = match file.kind.as_str() {
        "rate_spike" => {
            if file.status.is_none() {
                p.add(format!("{f}.status"), "is required");
            }
            let status = status_of(p, &file.status);
            let change = status.and_then(|st| check_change(p, f, file, s.status_share(st), &format!("{st}")));
            let scope = scope_of(p);
            match (status, change, scope) {
                (Some(status), Some(change), Some(scope)) => Some(IncidentKind::RateSpike { status, change, scope }),
                _ => None,
            }
        }
        "auth_code_surge" => {
            let code = file.code.clone().unwrap_or_default();
            if file.code.is_none() {
                p.add(format!("{f}.code"), "is required");
            } else {
                check_code(p, &format!("{f}.code"), &code);
            }
            // The status the code belongs to: given, else the first status whose mix holds it.
            let status = match &file.status {
                Some(_) => status_of(p, &file.status),
                None => Some(
                    TransactionStatus::ALL
                        .into_iter()
                        .find(|st| s.codes(*st).iter().any(|(c, _)| *c == code))
                        .unwrap_or(TransactionStatus::Denied),
                ),
            };
            let normal = status
                .map(|st| s.status_share(st) * s.codes(st).iter().find(|(c, _)| *c == code).map_or(0.0, |c| c.1))
                .unwrap_or(0.0);
            let change = check_change(p, f, file, normal, &format!("auth code {code}"));
            let scope = scope_of(p);
            match (status, change, scope) {
                (Some(status), Some(change), Some(scope)) if !code.is_empty() => {
                    Some(IncidentKind::AuthCodeSurge { code, status, change, scope })
                }
                _ => None,
            }
        }
        "amount_outlier" => {
            let target = match (&file.category, &file.merchant) {
                (Some(c), None) => p
                    .check(s.category(c).is_some(), format!("{f}.category"), format!("no category {c:?}"))
                    .then(|| OutlierTarget::Category(c.clone())),
                (None, Some(m)) => merchant_exists(p, m).then(|| OutlierTarget::Merchant(m.clone())),
                _ => {
                    p.add(format!("{f}.merchant"), "set exactly one of merchant and category");
                    None
                }
            };
            let sigma = match file.sigma {
                Some(k) => finite_in(p, &format!("{f}.sigma"), k, 1.0, 50.0, "in 1..=50").then_some(k),
                None => {
                    p.add(format!("{f}.sigma"), "is required (how many standard deviations above the mean)");
                    None
                }
            };
            let count = file.count.unwrap_or(1);
            p.check((1..=10_000).contains(&count), format!("{f}.count"), "must be in 1..=10000");
            if let (Some(target), Some(sigma)) = (&target, sigma) {
                let (mean, sd) = target_moments(s, target).unwrap_or((0.0, 0.0));
                let top = mean + sigma * sd;
                p.check(
                    top.exp() <= MAX_AMOUNT_MINOR as f64,
                    format!("{f}.sigma"),
                    format!("the outlier amount e^{top:.1} exceeds the producer's MAX_AMOUNT_MINOR {MAX_AMOUNT_MINOR}"),
                );
            }
            match (target, sigma) {
                (Some(target), Some(sigma)) => Some(IncidentKind::AmountOutlier { target, sigma, count }),
                _ => None,
            }
        }
        "volume" => {
            let factor = match file.factor {
                Some(x) => check_factor(p, &format!("{f}.factor"), x).then_some(x),
                None => {
                    p.add(
                        format!("{f}.factor"),
                        "is required (transactions per minute × factor: 0 stops them, 0.5 halves them, 3 triples them)",
                    );
                    None
                }
            };
            match (factor, scope_of(p)) {
                (Some(factor), Some(scope)) => Some(IncidentKind::Volume { factor, scope }),
                _ => None,
            }
        }
        "merchant_dark" => match &file.merchant {
            Some(m) => {
                merchant_exists(p, m).then(|| IncidentKind::Volume { factor: 0.0, scope: Scope::Merchant(m.clone()) })
            }
            None => {
                p.add(format!("{f}.merchant"), "is required");
                None
            }
        },
        _ => None,
    };
    if p.0.len() != before {
        return None;
    }
    let (kind, start_ms, duration_ms) = (kind?, start_ms?, duration_ms?);
    let name = file.name.clone().unwrap_or_else(|| describe(&kind, s));
    Some(Incident { name, start_ms, duration_ms, kind })
}

/// True mean and spread of an outlier target's ln amounts.
pub fn target_moments(s: &Scenario, target: &OutlierTarget) -> Option<(f64, f64)> {
    match target {
        OutlierTarget::Category(c) => s.category(c).map(|c| (c.ln_mean, c.ln_sd)),
        OutlierTarget::Merchant(m) => s.merchant(m).map(|(_, m)| (m.ln_mean, m.ln_sd())),
    }
}

/// A one-line description of an incident.
pub fn describe(kind: &IncidentKind, s: &Scenario) -> String {
    let change = |c: &Change, normal: f64| match c {
        Change::Multiplier(m) => format!("×{m}"),
        Change::TargetRate(r) => format!("from {:.1}% to {:.1}% of transactions", normal * 100.0, r * 100.0),
    };
    let where_ = |scope: &Scope| match scope {
        Scope::Global => String::new(),
        Scope::Category(c) => format!(" in category {c}"),
        Scope::Merchant(m) => format!(" at merchant {m}"),
    };
    match kind {
        IncidentKind::RateSpike { status, change: c, scope } => {
            format!("{status} spike{} ({})", where_(scope), change(c, s.status_share(*status)))
        }
        IncidentKind::AuthCodeSurge { code, status, change: c, scope } => {
            let share = s.codes(*status).iter().find(|(k, _)| k == code).map_or(0.0, |k| k.1);
            format!(
                "surge of auth code {code}{} ({status}; {})",
                where_(scope),
                change(c, s.status_share(*status) * share)
            )
        }
        IncidentKind::AmountOutlier { target, sigma, count } => {
            let who = match target {
                OutlierTarget::Category(c) => format!("category {c}"),
                OutlierTarget::Merchant(m) => format!("merchant {m}"),
            };
            format!("{count} amount outlier{} at {sigma}σ in {who}", if *count == 1 { "" } else { "s" })
        }
        IncidentKind::Volume { factor, scope: Scope::Merchant(m) } if *factor == 0.0 => {
            format!("merchant {m} goes dark")
        }
        IncidentKind::Volume { factor, scope } => {
            let what = if *factor == 0.0 { "traffic stops".to_owned() } else { format!("traffic ×{factor}") };
            format!("{what}{}", where_(scope))
        }
    }
}

/// `90s`, `3m`, `1h30m`, `24h`: the shortest exact form.
pub fn fmt_duration(ms: i64) -> String {
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if sec > 0 || out.is_empty() {
        out += &format!("{sec}s");
    }
    out
}

/// The detector's tiers the scenario's expectations are computed with.
pub fn tiers() -> AmountTiers {
    AmountTiers::default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
duration = "60m"
events_per_minute = 100
[status_mix]
approved = 0.9
denied = 0.1
[[categories]]
name = "food"
ln_mean = 7.0
ln_sigma = 0.5
merchants = [{ id = "m-1" }, { id = "m-2", multiplier = 0.9 }]
"#;

    fn problems(src: &str) -> Vec<String> {
        match Scenario::from_toml(src) {
            Err(Error::ScenarioInvalid(p)) => p.problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn every_built_in_scenario_parses_and_checks() {
        for (name, _) in BUILTIN {
            let s = Scenario::builtin(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.name, name);
            assert!(!s.description.is_empty(), "{name} has no description");
        }
    }

    #[test]
    fn a_minimal_scenario_is_resolved_with_defaults_and_normalised_shares() {
        let s = Scenario::from_toml(MINIMAL).unwrap();
        assert_eq!(s.duration_ms, 60 * MINUTE_MS);
        assert_eq!(s.status_mix, [0.9, 0.1, 0.0, 0.0]);
        assert_eq!(s.codes(TransactionStatus::Denied), &[("05".to_string(), 1.0)]);
        let c = &s.categories[0];
        assert_eq!(c.currency, "EUR");
        assert_eq!(c.merchants[0].weight, 0.5);
        assert!((c.merchants[1].ln_mean - (7.0 + 0.9f64.ln())).abs() < 1e-12);
        assert!(c.ln_sd > c.merchants[0].ln_sd(), "the mixture is wider than each merchant");
    }

    #[test]
    fn syntax_errors_and_unknown_fields_are_reported_with_their_name() {
        let err = Scenario::from_toml(&MINIMAL.replace("ln_sigma = 0.5", "ln_sigma = 0.5\nsgima = 1")).unwrap_err();
        assert!(matches!(err, Error::ScenarioSyntax { .. }), "{err}");
        assert!(err.to_string().contains("sgima"), "{err}");
        let err = Scenario::from_toml(&MINIMAL.replace("events_per_minute = 100", "")).unwrap_err();
        assert!(err.to_string().contains("events_per_minute"), "{err}");
    }

    #[test]
    fn validation_errors_name_every_bad_field_at_once() {
        let src = MINIMAL
            .replace("duration = \"60m\"", "duration = \"90s\"")
            .replace("denied = 0.1", "denied = 0.1\npending = 0.1")
            .replace("ln_sigma = 0.5", "ln_sigma = 0.01")
            .replace("{ id = \"m-2\", multiplier = 0.9 }", "{ id = \"m-1\", multiplier = -2 }");
        let got = problems(&src);
        for field in [
            "duration:",
            "status_mix.pending:",
            "categories[0].ln_sigma:",
            "categories[0].merchants[1].id:",
            "categories[0].merchants[1].multiplier:",
        ] {
            assert!(got.iter().any(|p| p.starts_with(field)), "no problem for {field} in {got:#?}");
        }
    }

    #[test]
    fn incident_fields_are_checked_per_kind() {
        let src = format!(
            "{MINIMAL}
[[incidents]]
kind = \"rate_spike\"
status = \"denied\"
start = \"50m\"
duration = \"20m\"
target_rate = 0.05
sigma = 3

[[incidents]]
kind = \"amount_outlier\"
merchant = \"m-9\"
start = \"10m\"

[[incidents]]
kind = \"tsunami\"
start = \"1m\"
"
        );
        let got = problems(&src);
        for field in [
            "incidents[0].start:",
            "incidents[0].target_rate:",
            "incidents[0].sigma: does not apply",
            "incidents[1].merchant:",
            "incidents[1].sigma: is required",
            "incidents[2].kind:",
        ] {
            assert!(got.iter().any(|p| p.starts_with(field)), "no problem for {field} in {got:#?}");
        }
    }

    #[test]
    fn a_rate_incident_takes_one_merchant_or_one_category_checked_with_its_field_path() {
        let src = format!(
            "{MINIMAL}
[[incidents]]
kind = \"rate_spike\"
status = \"denied\"
merchant = \"m-2\"
start = \"10m\"
duration = \"5m\"
multiplier = 3

[[incidents]]
kind = \"auth_code_surge\"
code = \"05\"
category = \"food\"
start = \"10m\"
duration = \"5m\"
target_rate = 0.2
"
        );
        let s = Scenario::from_toml(&src).unwrap();
        assert!(
            matches!(&s.incidents[0].kind, IncidentKind::RateSpike { scope: Scope::Merchant(m), .. } if m == "m-2")
        );
        assert!(
            matches!(&s.incidents[1].kind, IncidentKind::AuthCodeSurge { scope: Scope::Category(c), .. } if c == "food")
        );
        assert_eq!(s.incidents[0].name, "denied spike at merchant m-2 (×3)");
        let bad = src
            .replace("merchant = \"m-2\"", "merchant = \"m-9\"")
            .replace("category = \"food\"", "category = \"food\"\nmerchant = \"m-1\"");
        let got = problems(&bad);
        for (field, what) in
            [("incidents[0].merchant:", "no merchant \"m-9\""), ("incidents[1].merchant:", "at most one")]
        {
            assert!(got.iter().any(|p| p.starts_with(field) && p.contains(what)), "no {field} {what} in {got:#?}");
        }
        let got = problems(&src.replace("category = \"food\"", "category = \"toys\""));
        assert!(got.iter().any(|p| p.starts_with("incidents[1].category:")), "{got:#?}");
    }

    #[test]
    fn a_volume_incident_takes_a_factor_and_a_scope_and_merchant_dark_is_its_stop_at_one_merchant() {
        let src = format!(
            "{MINIMAL}
[[incidents]]
kind = \"volume\"
factor = 0.5
category = \"food\"
start = \"10m\"
duration = \"5m\"

[[incidents]]
kind = \"volume\"
factor = 3
start = \"20m\"
duration = \"5m\"

[[incidents]]
kind = \"merchant_dark\"
merchant = \"m-2\"
start = \"30m\"
duration = \"10m\"
"
        );
        let s = Scenario::from_toml(&src).unwrap();
        let kinds: Vec<&IncidentKind> = s.incidents.iter().map(|i| &i.kind).collect();
        assert_eq!(
            kinds,
            [
                &IncidentKind::Volume { factor: 0.5, scope: Scope::Category("food".into()) },
                &IncidentKind::Volume { factor: 3.0, scope: Scope::Global },
                &IncidentKind::Volume { factor: 0.0, scope: Scope::Merchant("m-2".into()) },
            ]
        );
        let names: Vec<&str> = s.incidents.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["traffic ×0.5 in category food", "traffic ×3", "merchant m-2 goes dark"]);
        assert!(s.incidents.iter().all(|i| i.kind.as_str() == "volume"));
    }

    #[test]
    fn a_volume_factor_must_be_given_non_negative_and_not_1_and_other_kinds_refuse_it() {
        let incident = |fields: &str| {
            format!("{MINIMAL}\n[[incidents]]\nkind = \"volume\"\nstart = \"10m\"\nduration = \"5m\"\n{fields}\n")
        };
        for (fields, field, what) in [
            ("", "incidents[0].factor:", "is required"),
            ("factor = -0.5", "incidents[0].factor:", "-0.5 is not a factor in 0..=100"),
            ("factor = 1", "incidents[0].factor:", "1 changes nothing"),
            ("factor = 1.0", "incidents[0].factor:", "1 changes nothing"),
            ("factor = nan", "incidents[0].factor:", "is not a factor"),
            ("factor = 1000", "incidents[0].factor:", "is not a factor in 0..=100"),
            ("factor = 2\nmerchant = \"m-9\"", "incidents[0].merchant:", "no merchant \"m-9\""),
            ("factor = 2\nmerchant = \"m-1\"\ncategory = \"food\"", "incidents[0].merchant:", "at most one"),
            ("factor = 2\nstatus = \"denied\"", "incidents[0].status:", "does not apply to kind volume"),
        ] {
            let got = problems(&incident(fields));
            assert!(
                got.iter().any(|p| p.starts_with(field) && p.contains(what)),
                "{fields}: no {field} {what} in {got:#?}"
            );
        }
        for ok in ["factor = 0", "factor = 0.999", "factor = 1.5\ncategory = \"food\""] {
            Scenario::from_toml(&incident(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let spike = format!(
            "{MINIMAL}\n[[incidents]]\nkind = \"rate_spike\"\nstatus = \"denied\"\nstart = \"10m\"\nduration = \"5m\"\nmultiplier = 2\nfactor = 2\n"
        );
        let got = problems(&spike);
        assert!(got.iter().any(|p| p.starts_with("incidents[0].factor: does not apply")), "{got:#?}");
    }

    #[test]
    fn the_busy_day_runs_from_about_50_a_minute_at_night_to_300_at_the_peak() {
        let s = Scenario::builtin("busy-day").unwrap();
        let c = s.daily_cycle.unwrap();
        let at = |hour: i64| s.events_per_minute * c.factor(hour * 3_600_000, 0);
        assert!((at(1) - 50.0).abs() < 2.0, "{}", at(1));
        assert!((at(13) - 300.0).abs() < 2.0, "{}", at(13));
    }

    #[test]
    fn a_category_whose_merchants_differ_too_much_is_refused() {
        let src = MINIMAL.replace(
            "merchants = [{ id = \"m-1\" }, { id = \"m-2\", multiplier = 0.9 }]",
            "merchants = [{ id = \"m-1\", weight = 20 }, { id = \"m-2\", multiplier = 4 }]",
        );
        let got = problems(&src);
        assert!(got.iter().any(|p| p.starts_with("categories[0].merchants[1]:") && p.contains("m-2")), "{got:#?}");
    }

    #[test]
    fn durations_print_in_their_shortest_exact_form() {
        assert_eq!(fmt_duration(90_000), "1m30s");
        assert_eq!(fmt_duration(24 * 3_600_000), "24h");
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(fmt_duration(1500), "1500ms");
    }

    #[test]
    fn the_daily_cycle_peaks_at_its_hour_and_bottoms_twelve_hours_later() {
        let c = DailyCycle { amplitude: 0.5, peak_hour: 13.0, weekend_factor: 1.0, trend_per_day: 0.0 };
        let h = |x: f64| (x * 3_600_000.0) as i64;
        assert!((c.factor(h(13.0), 0) - 1.5).abs() < 1e-12);
        assert!((c.factor(h(1.0), 0) - 0.5).abs() < 1e-12);
        assert!((c.factor(h(7.0), 0) - 1.0).abs() < 1e-12);
        assert!((c.factor(h(13.0) + 86_400_000, 0) - 1.5).abs() < 1e-12, "the cycle repeats daily");
        let mean: f64 = (0..1440).map(|m| c.factor(m * MINUTE_MS, 0)).sum::<f64>() / 1440.0;
        assert!((mean - 1.0).abs() < 1e-9, "the day's mean volume is events_per_minute");
    }

    #[test]
    fn weekends_scale_saturday_and_sunday_and_a_trend_compounds_from_the_start() {
        let c = DailyCycle { amplitude: 0.5, peak_hour: 13.0, weekend_factor: 0.6, trend_per_day: 0.01 };
        const DAY: i64 = 86_400_000;
        // 2026-12-07 was a Monday.
        let monday = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap().and_hms_opt(13, 0, 0).unwrap().and_utc();
        let monday = monday.timestamp_millis();
        let start = monday;
        let at = |day: i64| c.factor(monday + day * DAY, start);
        assert!((at(0) - 1.5).abs() < 1e-12, "no trend on the first day");
        assert!((at(4) - 1.5 * 1.01f64.powi(4)).abs() < 1e-12, "Friday");
        // The peak is 1.5, the trough 0.5: on a weekend the 1.0 between them is × 0.6.
        assert!((at(5) - 1.1 * 1.01f64.powi(5)).abs() < 1e-12, "Saturday");
        assert!((at(6) - 1.1 * 1.01f64.powi(6)).abs() < 1e-12, "Sunday");
        let night = |day: i64| c.factor(monday + day * DAY + 12 * 3_600_000, start) / 1.01f64.powf(day as f64 + 0.5);
        assert!((night(4) - night(3)).abs() < 1e-12, "the night's trough is the same on a weekend");
        assert!((at(7) - 1.5 * 1.01f64.powi(7)).abs() < 1e-12, "Monday again");
        let plain = DailyCycle { weekend_factor: 1.0, trend_per_day: 0.0, ..c };
        assert!((plain.factor(monday + 5 * DAY, start) - 1.5).abs() < 1e-12, "both default to nothing");
    }
}
