//! The detector's configuration: thresholds (shared by the service and `replay`) and service
//! settings, from the environment, every bad value reported at once.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use vigil_common::kafka::{KafkaArgs, KafkaConfig};
use vigil_common::{ConfigErrors, Validator};
use vigil_schemas::Severity;

use crate::core::{AmountConfig, CoreConfig, RateConfig, VolumeConfig};

/// Vigil detector: event-time minute windows, rolling baselines and explainable anomalies.
///
/// Without a subcommand it runs the Kafka service. Every option reads the environment
/// variable shown; a flag overrides it. All values are checked at start-up.
#[derive(Parser, Debug, Clone)]
#[command(name = "detector", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub rules: RuleArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Check the configuration, print the verdict and exit.
    #[arg(long, global = true)]
    pub check_config: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the Kafka service (the default).
    Run,
    /// Run the same core over a file, with event time only and no broker.
    ///
    /// With FILE (NDJSON transactions, or - for stdin) it prints every minute aggregate, late
    /// booking and anomaly as NDJSON. With --series FILE.csv it reads `timestamp,value` rows (any
    /// unit and scale, one row per interval, an optional header) and scores each row with the
    /// streaming series scorer, which learns only from the rows before it, and prints
    /// `timestamp,value,score,is_anomaly`: score in 0..1, is_anomaly = 1 when score >= 0.5 (a tail
    /// probability of 1e-5; see the README's "Series scoring"). The rule thresholds do not apply.
    Replay(ReplayArgs),
}

#[derive(ClapArgs, Debug, Clone)]
pub struct ReplayArgs {
    /// NDJSON transactions (the producer's JSON form), or - for standard input.
    pub file: Option<String>,
    /// Score a `timestamp,value` CSV series instead (prints timestamp,value,score,is_anomaly).
    #[arg(long, conflicts_with = "file")]
    pub series: Option<String>,
    /// Spread the transactions over this many simulated partitions (by category); the output
    /// does not depend on it.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Rule settings records (the `detector-settings` topic's JSON, one per line): each minute
    /// is judged with the settings in force then, as the service did.
    #[arg(long)]
    pub settings: Option<String>,
}

/// Thresholds and windows of the rules.
#[derive(ClapArgs, Debug, Clone)]
pub struct RuleArgs {
    /// Allowed lateness: watermark = highest event time seen minus this.
    #[arg(long, env = "ALLOWED_LATENESS", default_value = "30s")]
    pub allowed_lateness: String,
    /// How long (event time) transaction ids are remembered to drop duplicates. Memory and
    /// checkpoint size grow with it (about 40 bytes per event within the horizon).
    #[arg(long, env = "DEDUP_HORIZON", default_value = "2m")]
    pub dedup_horizon: String,
    /// Late events are booked this long behind the watermark; older ones are dead-lettered.
    #[arg(long, env = "LATE_HORIZON", default_value = "7d")]
    pub late_horizon: String,
    /// Events further ahead of their broker timestamp than this are dead-lettered.
    #[arg(long, env = "MAX_FUTURE_SKEW", default_value = "5m")]
    pub max_future_skew: String,
    /// Rate rules: how a minute is judged: `sequential` (evidence added up over minutes in
    /// binomial CUSUMs, thresholds from RATE_FALSE_ALARMS_PER_WEEK) or `minute` (each minute
    /// alone against RATE_Z_THRESHOLD and RATE_MAX_P_VALUE, the rule before).
    #[arg(long, env = "RATE_METHOD", default_value = "sequential")]
    pub rate_method: String,
    /// Rate rules (sequential): at most this many false alarms per week of normal traffic,
    /// across every rate series; the CUSUM thresholds are derived from it.
    #[arg(long, env = "RATE_FALSE_ALARMS_PER_WEEK", default_value = "1")]
    pub rate_false_alarms_per_week: String,
    /// Rate rules (sequential): the shifts the CUSUMs are tuned to, as multiples of the normal
    /// rate, comma-separated.
    #[arg(long, env = "RATE_DESIGN_SHIFTS", default_value = "1.5,2,4")]
    pub rate_design_shifts: String,
    /// Rate rules (sequential): how many category / merchant series the false-alarm target is
    /// divided among; set them to your real counts.
    #[arg(long, env = "RATE_CATEGORY_SERIES", default_value = "100")]
    pub rate_category_series: String,
    #[arg(long, env = "RATE_MERCHANT_SERIES", default_value = "1000")]
    pub rate_merchant_series: String,
    /// Rate rules (sequential): minutes a minute waits before it joins the baseline.
    #[arg(long, env = "RATE_QUARANTINE_MINUTES", default_value = "15")]
    pub rate_quarantine_minutes: String,
    /// Rate rules (sequential): odds (to one) that the rate is back at normal at which an open
    /// anomaly's minute counts as back in range.
    #[arg(long, env = "RATE_BACK_ODDS", default_value = "100")]
    pub rate_back_odds: String,
    /// Rate rules: also watch the rates of each category / merchant with at least this many
    /// transactions a minute on average (0 turns the dimension off).
    #[arg(long, env = "RATE_CATEGORY_MIN_PER_MINUTE", default_value = "5")]
    pub rate_category_min_per_minute: String,
    #[arg(long, env = "RATE_MERCHANT_MIN_PER_MINUTE", default_value = "5")]
    pub rate_merchant_min_per_minute: String,
    /// Rate rules: at most this many categories and this many merchants watched per input
    /// partition (a bound on state whatever keys clients send).
    #[arg(long, env = "RATE_MAX_KEYED_SERIES", default_value = "500")]
    pub rate_max_keyed_series: String,
    /// Volume rules (transactions per minute that drop, down to none, or surge), globally and
    /// for the categories and merchants whose rates are watched.
    #[arg(long, env = "VOLUME_RULES", default_value = "true")]
    pub volume_rules: String,
    /// Volume rules: at most this many false alarms per week of normal traffic, across every
    /// volume series (a third each to the global series, the categories and the merchants).
    #[arg(long, env = "VOLUME_FALSE_ALARMS_PER_WEEK", default_value = "1")]
    pub volume_false_alarms_per_week: String,
    /// Volume rules: the drops the CUSUMs are tuned to, as fractions of the expected count.
    #[arg(long, env = "VOLUME_DESIGN_DROPS", default_value = "0.5,0.1")]
    pub volume_design_drops: String,
    /// Volume rules: the surges the CUSUMs are tuned to, as multiples of the expected count.
    #[arg(long, env = "VOLUME_DESIGN_SURGES", default_value = "1.5,3")]
    pub volume_design_surges: String,
    /// Volume rules: a minute is judged only when at least this many transactions are expected.
    #[arg(long, env = "VOLUME_MIN_EXPECTED", default_value = "2")]
    pub volume_min_expected: String,
    /// Volume rules: minutes a series' baseline learns before any is judged (a new series' trend
    /// needs about an hour to follow a morning ramp; see the README's "Volume rules").
    #[arg(long, env = "VOLUME_WARMUP_MINUTES", default_value = "60")]
    pub volume_warmup_minutes: String,
    /// Volume rules: how many category / merchant series the false-alarm target is divided among.
    #[arg(long, env = "VOLUME_CATEGORY_SERIES", default_value = "100")]
    pub volume_category_series: String,
    #[arg(long, env = "VOLUME_MERCHANT_SERIES", default_value = "1000")]
    pub volume_merchant_series: String,
    /// Volume rules per category / per merchant (those whose rates are watched).
    #[arg(long, env = "VOLUME_BY_CATEGORY", default_value = "true")]
    pub volume_by_category: String,
    #[arg(long, env = "VOLUME_BY_MERCHANT", default_value = "true")]
    pub volume_by_merchant: String,
    /// Rate rules: baseline length in clean minutes (the minute method: 30 is the former default).
    #[arg(long, env = "BASELINE_MINUTES", default_value = "120")]
    pub baseline_minutes: String,
    /// Rate rules: minutes of baseline needed before judging.
    #[arg(long, env = "MIN_BASELINE_MINUTES", default_value = "10")]
    pub min_baseline_minutes: String,
    /// Rate rules: matching transactions a minute needs to fire.
    #[arg(long, env = "RATE_MIN_COUNT", default_value = "5")]
    pub rate_min_count: String,
    /// Rate rules (minute): z-score to fire (severity medium).
    #[arg(long, env = "RATE_Z_THRESHOLD", default_value = "4")]
    pub rate_z_threshold: String,
    /// Rate rules (minute): z-score for severity high.
    #[arg(long, env = "RATE_Z_HIGH", default_value = "8")]
    pub rate_z_high: String,
    /// Rate rules (minute): z-score for severity critical.
    #[arg(long, env = "RATE_Z_CRITICAL", default_value = "16")]
    pub rate_z_critical: String,
    /// Rate rules (minute): one-sided binomial p-value a minute must be at or below to fire.
    #[arg(long, env = "RATE_MAX_P_VALUE", default_value = "1e-6")]
    pub rate_max_p_value: String,
    /// Rate rules (minute): floor on the spread of per-minute rates.
    #[arg(long, env = "RATE_SPREAD_FLOOR", default_value = "0.005")]
    pub rate_spread_floor: String,
    /// Rate rules: minutes back in range in a row that resolve an anomaly.
    #[arg(long, env = "RESOLVE_AFTER_MINUTES", default_value = "2")]
    pub resolve_after_minutes: String,
    /// Rate rules: also watch the share of each non-approval auth code.
    #[arg(long, env = "WATCH_AUTH_CODES", default_value = "true")]
    pub watch_auth_codes: String,
    /// Amount rules: baseline window in days.
    #[arg(long, env = "BASELINE_WINDOW_DAYS", default_value = "30")]
    pub baseline_window_days: String,
    /// Amount rules: width of one bucket of sufficient statistics.
    #[arg(long, env = "BASELINE_BUCKET", default_value = "1d")]
    pub baseline_bucket: String,
    /// Amount rules: transactions a baseline needs before judging.
    #[arg(long, env = "AMOUNT_MIN_SAMPLES", default_value = "100")]
    pub amount_min_samples: String,
    /// Amount rules: lowest severity emitted as an anomaly (medium, high, critical). Lower tiers
    /// are counted in vigil_detector_amount_scores_below_min_total, not emitted.
    #[arg(long, env = "AMOUNT_MIN_SEVERITY", default_value = "medium")]
    pub amount_min_severity: String,
    /// Amount rules: smallest excess (minor units) the low-variance fallback flags.
    #[arg(long, env = "AMOUNT_MATERIALITY_MINOR", default_value = "1000")]
    pub amount_materiality_minor: String,
    /// More sensitive amount tiers (2σ / 2.5σ / 4σ instead of 2.5σ / 3σ / 5σ).
    #[arg(long, env = "ANOMALY_STRICT_MODE", default_value = "false")]
    pub anomaly_strict_mode: String,
}

/// Settings of the Kafka service.
#[derive(ClapArgs, Debug, Clone)]
pub struct ServiceArgs {
    /// Address of /health, /ready and /metrics.
    #[arg(long, env = "DETECTOR_BIND", default_value = "0.0.0.0:3003")]
    pub bind: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub shutdown: vigil_common::shutdown::ShutdownArgs,
    #[arg(long, env = "TRANSACTIONS_TOPIC", default_value = "transactions")]
    pub transactions_topic: String,
    /// Stage 1 -> stage 2 partial counts (one partition is used).
    #[arg(long, env = "PARTIALS_TOPIC", default_value = "tx-partials")]
    pub partials_topic: String,
    /// Final minute aggregates and late bookings.
    #[arg(long, env = "MINUTES_TOPIC", default_value = "tx-minute")]
    pub minutes_topic: String,
    #[arg(long, env = "ANOMALIES_TOPIC", default_value = "anomalies")]
    pub anomalies_topic: String,
    /// Verdicts on the transactions whose record asks for one (header `vigil.reply-to`).
    #[arg(long, env = "VERDICTS_TOPIC", default_value = "transaction-verdicts")]
    pub verdicts_topic: String,
    /// Rule settings changed at run time (one partition, compacted; written by the webhook's
    /// POST /settings), read whole at start-up and followed.
    #[arg(long, env = "SETTINGS_TOPIC", default_value = "detector-settings")]
    pub settings_topic: String,
    /// Stage 1 checkpoints; needs at least as many partitions as the transactions topic.
    #[arg(long, env = "CHECKPOINT_TOPIC", default_value = "detector-checkpoints")]
    pub checkpoint_topic: String,
    /// Stage 2 checkpoints.
    #[arg(long, env = "MERGE_CHECKPOINT_TOPIC", default_value = "detector-merge-checkpoints")]
    pub merge_checkpoint_topic: String,
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "vigil-dead-letter")]
    pub dead_letter_topic: String,
    /// Consumer group of stage 1; stage 2 uses "<group>-merge".
    #[arg(long, env = "CONSUMER_GROUP", default_value = "vigil-detector")]
    pub consumer_group: String,
    /// Static group membership (`group.instance.id`): give each instance a stable, unique id
    /// (e.g. its pod name) and a restarted instance takes its partitions back at once instead of
    /// waiting for its old session to expire. Empty: dynamic membership.
    #[arg(long, env = "CONSUMER_INSTANCE_ID", default_value = "")]
    pub consumer_instance_id: String,
    /// Wall-clock time without records after which a partition counts as idle and its windows
    /// close.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "10s")]
    pub idle_timeout: String,
    /// How often outputs are flushed and input offsets committed.
    #[arg(long, env = "COMMIT_INTERVAL", default_value = "1s")]
    pub commit_interval: String,
    /// How often state is checkpointed to the broker.
    #[arg(long, env = "CHECKPOINT_INTERVAL", default_value = "30s")]
    pub checkpoint_interval: String,
    /// How long the broker has to acknowledge an output before the detector gives up (and
    /// exits, to resume from its last checkpoint).
    #[arg(long, env = "DELIVERY_TIMEOUT", default_value = "120s")]
    pub delivery_timeout: String,
    /// Confluent schema registry: outputs in the Confluent wire format when set.
    #[arg(long, env = "SCHEMA_REGISTRY_URL", default_value = "")]
    pub schema_registry_url: String,
    /// Categories with their own label in vigil_detector_transactions_total: the first this many
    /// to arrive (per process); every later one is counted as category="other". Categories are
    /// client-supplied, so the cap bounds the series a client can create. 0: all are "other".
    #[arg(long, env = "METRICS_MAX_CATEGORIES", default_value = "100")]
    pub metrics_max_categories: String,
}

/// Validated service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub bind: SocketAddr,
    pub kafka: KafkaConfig,
    pub transactions_topic: String,
    pub partials_topic: String,
    pub minutes_topic: String,
    pub anomalies_topic: String,
    pub verdicts_topic: String,
    pub settings_topic: String,
    pub checkpoint_topic: String,
    pub merge_checkpoint_topic: String,
    pub dead_letter_topic: String,
    pub consumer_group: String,
    pub consumer_instance_id: Option<String>,
    pub idle_timeout: Duration,
    pub commit_interval: Duration,
    pub checkpoint_interval: Duration,
    pub delivery_timeout: Duration,
    pub schema_registry_url: Option<String>,
    /// `SHUTDOWN_TIMEOUT`: how long stopping may take before the process exits with status 1.
    pub shutdown_timeout: Duration,
    /// `METRICS_MAX_CATEGORIES`: categories labelled by name in the transactions counter.
    pub metrics_max_categories: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub core: CoreConfig,
    pub service: ServiceConfig,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RuleArgs {
    pub fn validate(&self, v: &mut Validator) -> CoreConfig {
        let lateness = v.parse_duration("ALLOWED_LATENESS", &self.allowed_lateness);
        let dedup = v.parse_positive_duration("DEDUP_HORIZON", &self.dedup_horizon);
        let skew = v.parse_duration("MAX_FUTURE_SKEW", &self.max_future_skew);
        let late = v.parse_positive_duration("LATE_HORIZON", &self.late_horizon);
        v.check(late >= dedup, "LATE_HORIZON", "must be at least DEDUP_HORIZON");
        v.check(
            dedup >= lateness + Duration::from_secs(60),
            "DEDUP_HORIZON",
            "must be at least ALLOWED_LATENESS + 1 minute, or duplicates could reach an open window unseen",
        );
        let method = match self.rate_method.trim() {
            "sequential" => crate::core::RateMethod::Sequential,
            "minute" => crate::core::RateMethod::MinuteTest,
            other => {
                v.error("RATE_METHOD", format_args!("{other:?} is not one of sequential, minute"));
                crate::core::RateMethod::Sequential
            }
        };
        let mut design_shifts = Vec::new();
        for part in self.rate_design_shifts.split(',') {
            match part.trim().parse::<f64>() {
                Ok(r) if r > 1.0 && r <= 100.0 => design_shifts.push(r),
                _ => v.error(
                    "RATE_DESIGN_SHIFTS",
                    format_args!("{part:?} is not a multiple of the normal rate in (1, 100]"),
                ),
            }
        }
        let category_min = v.parse_in("RATE_CATEGORY_MIN_PER_MINUTE", &self.rate_category_min_per_minute, 0.0f64, 1e9);
        let merchant_min = v.parse_in("RATE_MERCHANT_MIN_PER_MINUTE", &self.rate_merchant_min_per_minute, 0.0f64, 1e9);
        let rate = RateConfig {
            method,
            false_alarms_per_week: v.parse_in(
                "RATE_FALSE_ALARMS_PER_WEEK",
                &self.rate_false_alarms_per_week,
                0.001f64,
                10_000.0,
            ),
            design_shifts,
            category_series: v.parse_in("RATE_CATEGORY_SERIES", &self.rate_category_series, 1usize, 10_000_000),
            merchant_series: v.parse_in("RATE_MERCHANT_SERIES", &self.rate_merchant_series, 1usize, 10_000_000),
            quarantine_minutes: v.parse_in("RATE_QUARANTINE_MINUTES", &self.rate_quarantine_minutes, 0usize, 1_000),
            back_odds: v.parse_in("RATE_BACK_ODDS", &self.rate_back_odds, 1.5f64, 1e9),
            by_category: category_min > 0.0,
            by_merchant: merchant_min > 0.0,
            category_min_per_minute: category_min,
            merchant_min_per_minute: merchant_min,
            max_keyed_series: v.parse_in("RATE_MAX_KEYED_SERIES", &self.rate_max_keyed_series, 0usize, 100_000),
            baseline_minutes: v.parse_in("BASELINE_MINUTES", &self.baseline_minutes, 2usize, 10_000),
            min_baseline_minutes: v.parse_in("MIN_BASELINE_MINUTES", &self.min_baseline_minutes, 2usize, 10_000),
            min_count: v.parse_in("RATE_MIN_COUNT", &self.rate_min_count, 1i64, 1_000_000),
            z_threshold: v.parse_in("RATE_Z_THRESHOLD", &self.rate_z_threshold, 0.5f64, 100.0),
            z_high: v.parse_in("RATE_Z_HIGH", &self.rate_z_high, 0.5f64, 1000.0),
            z_critical: v.parse_in("RATE_Z_CRITICAL", &self.rate_z_critical, 0.5f64, 1000.0),
            max_p_value: v.parse_in("RATE_MAX_P_VALUE", &self.rate_max_p_value, 0.0f64, 1.0),
            spread_floor: v.parse_in("RATE_SPREAD_FLOOR", &self.rate_spread_floor, 0.0f64, 1.0),
            rate_floor: RateConfig::default().rate_floor,
            resolve_after_minutes: v.parse_in("RESOLVE_AFTER_MINUTES", &self.resolve_after_minutes, 1u32, 10_000),
            auth_codes: v.parse_bool("WATCH_AUTH_CODES", &self.watch_auth_codes),
            ..RateConfig::default()
        };
        v.check(
            rate.min_baseline_minutes <= rate.baseline_minutes,
            "MIN_BASELINE_MINUTES",
            "must not exceed BASELINE_MINUTES",
        );
        v.check(
            rate.z_threshold <= rate.z_high && rate.z_high <= rate.z_critical,
            "RATE_Z_HIGH",
            "tiers must satisfy RATE_Z_THRESHOLD <= RATE_Z_HIGH <= RATE_Z_CRITICAL",
        );
        let bucket = v.parse_positive_duration("BASELINE_BUCKET", &self.baseline_bucket);
        let min_severity = match Severity::parse(self.amount_min_severity.trim()) {
            Some(s) => s,
            None => {
                v.error(
                    "AMOUNT_MIN_SEVERITY",
                    format_args!("{:?} is not one of medium, high, critical", self.amount_min_severity),
                );
                Severity::High
            }
        };
        let mut amount = AmountConfig {
            window_days: v.parse_in("BASELINE_WINDOW_DAYS", &self.baseline_window_days, 1u32, 3650),
            bucket_ms: ms(bucket).max(1),
            min_samples: v.parse_in("AMOUNT_MIN_SAMPLES", &self.amount_min_samples, 2u64, 1_000_000_000),
            min_severity,
            materiality_minor: v.parse_in("AMOUNT_MATERIALITY_MINOR", &self.amount_materiality_minor, 0i64, i64::MAX),
            ..AmountConfig::default()
        };
        v.check(
            bucket <= Duration::from_secs(u64::from(amount.window_days) * 86_400),
            "BASELINE_BUCKET",
            "must not be longer than BASELINE_WINDOW_DAYS",
        );
        if v.parse_bool("ANOMALY_STRICT_MODE", &self.anomaly_strict_mode) {
            amount = amount.strict();
        }
        let ratios = |v: &mut Validator, var: &str, raw: &str, range: (f64, f64), what: &str| -> Vec<f64> {
            let mut out = Vec::new();
            for part in raw.split(',') {
                match part.trim().parse::<f64>() {
                    Ok(r) if r > range.0 && r < range.1 => out.push(r),
                    _ => v.error(var, format_args!("{part:?} is not {what}")),
                }
            }
            out
        };
        let volume = VolumeConfig {
            enabled: v.parse_bool("VOLUME_RULES", &self.volume_rules),
            false_alarms_per_week: v.parse_in(
                "VOLUME_FALSE_ALARMS_PER_WEEK",
                &self.volume_false_alarms_per_week,
                0.001f64,
                10_000.0,
            ),
            design_drops: ratios(
                v,
                "VOLUME_DESIGN_DROPS",
                &self.volume_design_drops,
                (0.0, 1.0),
                "a fraction of the expected count in (0, 1)",
            ),
            design_surges: ratios(
                v,
                "VOLUME_DESIGN_SURGES",
                &self.volume_design_surges,
                (1.0, 100.0 + 1e-9),
                "a multiple of the expected count in (1, 100]",
            ),
            min_expected: v.parse_in("VOLUME_MIN_EXPECTED", &self.volume_min_expected, 0.1f64, 1e9),
            warmup_minutes: v.parse_in("VOLUME_WARMUP_MINUTES", &self.volume_warmup_minutes, 1u32, 7 * 24 * 60),
            category_series: v.parse_in("VOLUME_CATEGORY_SERIES", &self.volume_category_series, 1usize, 10_000_000),
            merchant_series: v.parse_in("VOLUME_MERCHANT_SERIES", &self.volume_merchant_series, 1usize, 10_000_000),
            by_category: v.parse_bool("VOLUME_BY_CATEGORY", &self.volume_by_category) && rate.by_category,
            by_merchant: v.parse_bool("VOLUME_BY_MERCHANT", &self.volume_by_merchant) && rate.by_merchant,
            resolve_after_minutes: rate.resolve_after_minutes,
            ..VolumeConfig::default()
        };
        CoreConfig {
            allowed_lateness_ms: ms(lateness),
            dedup_horizon_ms: ms(dedup),
            late_horizon_ms: ms(late),
            max_future_skew_ms: ms(skew),
            rate,
            amount,
            volume,
            settings: Default::default(),
        }
    }
}

impl ServiceArgs {
    pub fn validate(&self, v: &mut Validator) -> ServiceConfig {
        let topic = |v: &mut Validator, var: &str, raw: &str| v.required(var, raw);
        let c = ServiceConfig {
            bind: v.parse_addr("DETECTOR_BIND", &self.bind),
            kafka: self.kafka.validate(v),
            shutdown_timeout: self.shutdown.validate(v),
            transactions_topic: topic(v, "TRANSACTIONS_TOPIC", &self.transactions_topic),
            partials_topic: topic(v, "PARTIALS_TOPIC", &self.partials_topic),
            minutes_topic: topic(v, "MINUTES_TOPIC", &self.minutes_topic),
            anomalies_topic: topic(v, "ANOMALIES_TOPIC", &self.anomalies_topic),
            verdicts_topic: topic(v, "VERDICTS_TOPIC", &self.verdicts_topic),
            settings_topic: topic(v, "SETTINGS_TOPIC", &self.settings_topic),
            checkpoint_topic: topic(v, "CHECKPOINT_TOPIC", &self.checkpoint_topic),
            merge_checkpoint_topic: topic(v, "MERGE_CHECKPOINT_TOPIC", &self.merge_checkpoint_topic),
            dead_letter_topic: topic(v, "DEAD_LETTER_TOPIC", &self.dead_letter_topic),
            consumer_group: topic(v, "CONSUMER_GROUP", &self.consumer_group),
            consumer_instance_id: Some(self.consumer_instance_id.trim().to_owned()).filter(|s| !s.is_empty()),
            idle_timeout: v.parse_positive_duration("IDLE_TIMEOUT", &self.idle_timeout),
            commit_interval: v.parse_positive_duration("COMMIT_INTERVAL", &self.commit_interval),
            checkpoint_interval: v.parse_positive_duration("CHECKPOINT_INTERVAL", &self.checkpoint_interval),
            delivery_timeout: v.parse_positive_duration("DELIVERY_TIMEOUT", &self.delivery_timeout),
            schema_registry_url: match self.schema_registry_url.trim() {
                "" => None,
                u => Some(u.to_owned()),
            },
            metrics_max_categories: v.parse_in("METRICS_MAX_CATEGORIES", &self.metrics_max_categories, 0usize, 10_000),
        };
        let distinct = [
            &c.transactions_topic,
            &c.partials_topic,
            &c.minutes_topic,
            &c.anomalies_topic,
            &c.verdicts_topic,
            &c.settings_topic,
            &c.checkpoint_topic,
            &c.merge_checkpoint_topic,
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                v.check(a != b || a.is_empty(), "TOPICS", format_args!("topic {a:?} is configured for two purposes"));
            }
        }
        c
    }
}

impl Config {
    pub fn from_args(a: &Args) -> Result<Self, ConfigErrors> {
        let mut v = Validator::new();
        let core = a.rules.validate(&mut v);
        let service = a.service.validate(&mut v);
        v.finish()?;
        Ok(Config { core, service })
    }

    /// Rules only (for `replay`, which needs no broker).
    pub fn rules_from_args(a: &Args) -> Result<CoreConfig, ConfigErrors> {
        let mut v = Validator::new();
        let core = a.rules.validate(&mut v);
        v.finish()?;
        Ok(core)
    }
}
