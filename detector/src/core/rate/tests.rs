use rand::{Rng, SeedableRng};

use super::*;

const T0: i64 = 1_765_713_600_000; // 2025-12-14T12:00:00Z

/// `minutes` of traffic: (count, total) per minute, binomially drawn with a fixed seed.
fn traffic(rng: &mut rand::rngs::StdRng, minutes: usize, per_minute: i64, rate: f64) -> Vec<(i64, i64)> {
    (0..minutes)
        .map(|_| {
            let c = (0..per_minute).filter(|_| rng.gen_bool(rate)).count() as i64;
            (c, per_minute)
        })
        .collect()
}

fn run(series: &mut RateSeries, minutes: &[(i64, i64)], cfg: &RateConfig) -> Vec<(usize, Anomaly)> {
    minutes
        .iter()
        .enumerate()
        .filter_map(|(i, (c, n))| series.observe(T0 + i as i64 * MINUTE_MS, *c, *n, 3, cfg).map(|a| (i, a)))
        .collect()
}

#[test]
fn minute_test_a_spike_after_thirty_normal_minutes_fires_once_updates_and_resolves() {
    let cfg = RateConfig::minute_test();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut minutes = traffic(&mut rng, 30, 200, 0.05);
    minutes.extend(traffic(&mut rng, 5, 200, 0.25));
    minutes.extend(traffic(&mut rng, 10, 200, 0.05));
    let mut s = RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all");
    let out = run(&mut s, &minutes, &cfg);
    let states: Vec<(usize, AnomalyState)> = out.iter().map(|(i, a)| (*i, a.state)).collect();
    assert_eq!(
        states,
        vec![
            (30, AnomalyState::Firing),
            (31, AnomalyState::Updated),
            (32, AnomalyState::Updated),
            (33, AnomalyState::Updated),
            (34, AnomalyState::Updated),
            (37, AnomalyState::Resolved),
        ]
    );
    let ids: std::collections::BTreeSet<_> = out.iter().map(|(_, a)| a.id.clone()).collect();
    assert_eq!(ids.len(), 1, "one incident, one id: {ids:?}");
    let first = &out[0].1;
    assert_eq!(first.id, "denied_rate:global:all:2025-12-14T12:30Z");
    assert_eq!(first.window_start, Some(T0 + 30 * MINUTE_MS));
    assert!(first.baseline_mean > 0.03 && first.baseline_mean < 0.07, "{}", first.baseline_mean);
    assert_eq!(first.baseline_n, 30);
    assert!(first.p_value.unwrap() < 1e-6);
    assert!(first.message.starts_with("Denied rate"), "{}", first.message);
    let sequences: Vec<i64> = out.iter().map(|(_, a)| a.sequence).collect();
    assert_eq!(sequences, vec![0, 1, 2, 3, 4, 5]);
    let resolved = &out.last().unwrap().1;
    assert_eq!(resolved.resolved_at, Some(T0 + 38 * MINUTE_MS));
}

#[test]
fn minute_test_the_same_spike_at_five_transactions_a_minute_does_not_fire() {
    let cfg = RateConfig::minute_test();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut minutes = traffic(&mut rng, 30, 5, 0.05);
    minutes.extend(traffic(&mut rng, 5, 5, 0.25));
    let mut s = RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all");
    assert!(run(&mut s, &minutes, &cfg).is_empty());
    // Even every transaction denied for a minute is only 5: below min_count... and a full
    // minute at 5 of 5 is exactly min_count, so require significance too.
    let mut s = RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all");
    let mut m = traffic(&mut rng, 30, 5, 0.05);
    m.push((4, 5));
    assert!(run(&mut s, &m, &cfg).is_empty());
}

#[test]
fn minute_test_a_two_hour_incident_stays_one_anomaly_and_does_not_become_the_new_normal() {
    let cfg = RateConfig::minute_test();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut minutes = traffic(&mut rng, 30, 200, 0.02);
    minutes.extend(traffic(&mut rng, 120, 200, 0.15));
    let mut s = RateSeries::new(AnomalyRule::FailedRate, AnomalyDimension::Global, "all");
    let out = run(&mut s, &minutes, &cfg);
    assert_eq!(out.iter().filter(|(_, a)| a.state == AnomalyState::Firing).count(), 1);
    assert_eq!(out.iter().filter(|(_, a)| a.state == AnomalyState::Resolved).count(), 0);
    assert!(s.is_active());
    let last = &out.last().unwrap().1;
    assert_eq!(last.state, AnomalyState::Updated);
    assert!(last.baseline_mean < 0.04, "baseline crept up to {}", last.baseline_mean);
    assert_eq!(out.len(), 120, "every incident minute updates the one anomaly");
}

#[test]
fn minute_test_a_perfectly_flat_history_does_not_make_one_event_infinite() {
    let cfg = RateConfig::minute_test();
    let mut s = RateSeries::new(AnomalyRule::ReversedRate, AnomalyDimension::Global, "all");
    let mut minutes = vec![(0, 300); 30];
    minutes.push((1, 300));
    minutes.push((3, 300));
    assert!(run(&mut s, &minutes, &cfg).is_empty());
    minutes.push((30, 300));
    let out = run(&mut RateSeries::new(AnomalyRule::ReversedRate, AnomalyDimension::Global, "all"), &minutes, &cfg);
    assert_eq!(out.len(), 1, "ten percent reversed after a flat zero is an anomaly");
    assert!(out[0].1.score.is_finite());
}

#[test]
fn minute_test_judges_nothing_while_the_baseline_warms_up() {
    let cfg = RateConfig::minute_test();
    let mut s = RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all");
    let minutes = vec![(10, 200), (10, 200), (150, 200)];
    assert!(run(&mut s, &minutes, &cfg).is_empty());
}

#[test]
fn binomial_tail_matches_known_values() {
    assert!((binomial_upper_tail(1, 1, 0.5) - 0.5).abs() < 1e-12);
    assert!((binomial_upper_tail(2, 2, 0.5) - 0.25).abs() < 1e-12);
    assert!((binomial_upper_tail(0, 10, 0.1) - 1.0).abs() < 1e-12);
    // P(X >= 3 | 10, 0.1) = 1 - (0.9^10 + 10·0.1·0.9^9 + 45·0.01·0.9^8)
    let exact = 1.0 - (0.9f64.powi(10) + 10.0 * 0.1 * 0.9f64.powi(9) + 45.0 * 0.01 * 0.9f64.powi(8));
    assert!((binomial_upper_tail(3, 10, 0.1) - exact).abs() < 1e-12);
}

// ---- The sequential method ----

/// Draws Binomial(n, p) quickly enough for long simulations (normal approximation with
/// continuity above 30 expected events, exact Bernoulli sum below).
fn draw(rng: &mut rand::rngs::StdRng, n: i64, p: f64) -> i64 {
    use rand_distr::{Binomial as B, Distribution};
    B::new(n as u64, p).map(|b| b.sample(rng) as i64).unwrap_or(0)
}

/// Feeds `warm` normal minutes, then `minutes` at `rate`; returns the anomaly states of the
/// second part, indexed from 0.
#[allow(clippy::too_many_arguments)]
fn incident(
    seed: u64,
    n: i64,
    p0: f64,
    ratio: f64,
    warm: usize,
    minutes: usize,
    after: usize,
    cfg: &RateConfig,
) -> Vec<(usize, Anomaly)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut s = RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all");
    let mut out = Vec::new();
    for i in 0..warm + minutes + after {
        let p = if i >= warm && i < warm + minutes { p0 * ratio } else { p0 };
        let x = draw(&mut rng, n, p);
        if let Some(a) = s.observe(T0 + i as i64 * MINUTE_MS, x, n, 3, cfg) {
            if i >= warm {
                out.push((i - warm, a));
            }
        }
    }
    out
}

/// The false-alarm target holds on simulated normal series: with the bar set for an average
/// run length of L minutes per CUSUM (here short, so that a few hundred thousand minutes show
/// it), a series with K CUSUMs raises at most one alarm per L / K minutes on average. The
/// bound e^h is conservative, so the count must stay below it (with three Poisson standard
/// deviations of room), and is expected well below.
#[test]
fn sequential_false_alarms_stay_within_the_rate_the_threshold_stands_for() {
    let k = RateConfig::default().design_shifts.len() as f64;
    // ARL of one CUSUM = K · 3 series · W · 3 / F; this F gives 1 000 minutes, h = ln 1000.
    let cfg = RateConfig {
        false_alarms_per_week: k * 3.0 * sequential::WEEK_MINUTES * 3.0 / 1000.0,
        ..RateConfig::default()
    };
    let bar = sequential::Bar::for_level(&cfg, sequential::Level::Global, 3);
    assert!((bar.arl_minutes - 1000.0).abs() < 1e-6);
    let mut alarms = 0usize;
    let mut minutes = 0usize;
    for (seed, (n, p0)) in [(60, 0.05), (300, 0.05), (120, 0.02), (300, 0.10)].into_iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(100 + seed as u64);
        let mut s = RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all");
        for i in 0..60_000usize {
            let x = draw(&mut rng, n, p0);
            if let Some(a) = s.observe(T0 + i as i64 * MINUTE_MS, x, n, 3, &cfg) {
                if a.state == AnomalyState::Firing {
                    alarms += 1;
                }
            }
        }
        minutes += 60_000;
    }
    let bound = minutes as f64 * k / bar.arl_minutes;
    assert!((alarms as f64) <= bound + 3.0 * bound.sqrt(), "{alarms} alarms in {minutes} minutes, bound {bound:.0}");
    assert!(alarms > 0, "the bar must not be infinitely strict: {alarms} alarms in {minutes} minutes");
}

/// The expected delay of the sequential rule for a shift: about (h + 1) / E[λ] minutes, with
/// λ the per-minute evidence of the best-matched design shift (h plus about one unit of
/// overshoot). No rule can beat it by much at the same false-alarm rate.
fn expected_delay(n: i64, p0: f64, ratio: f64, cfg: &RateConfig) -> f64 {
    let bar = sequential::Bar::for_level(cfg, sequential::Level::Global, 3);
    let p = p0 * ratio;
    let best = cfg
        .design_shifts
        .iter()
        .map(|r| {
            let p1 = sequential::shifted(p0, *r);
            n as f64 * (p * (p1 / p0).ln() + (1.0 - p) * ((1.0 - p1) / (1.0 - p0)).ln())
        })
        .fold(f64::MIN, f64::max);
    (bar.h + 1.0) / best
}

/// Detection delays over many seeds, for shifts the targets name: each within the
/// issue's target where that is above twice the expected delay (the target is then met with
/// room), else within twice the expected delay (the target asks for more than the false-alarm
/// rate allows: a 2× shift of a 3 % rate at 300 a minute needs about 4 minutes of evidence).
/// 90 % of 40 seeds must make it; a rule that judged minutes one at a time would miss the
/// moderate shifts entirely.
#[test]
fn sequential_persistent_shifts_are_found_within_their_delay_over_many_seeds() {
    let cfg = RateConfig::default();
    // (per minute, normal rate, ratio, minutes of incident, the delay target)
    let cases = [
        (300, 0.05, 3.0, 10, 2.0),
        (300, 0.05, 2.0, 10, 5.0),
        (300, 0.03, 2.0, 10, 5.0),
        (300, 0.05, 1.5, 30, 5.0),
        (60, 0.05, 3.0, 10, 2.0),
        (50, 0.05, 6.0, 5, 2.0),
    ];
    for (n, p0, ratio, len, target) in cases {
        let expected = expected_delay(n, p0, ratio, &cfg);
        let allowed = if target >= 2.0 * expected { target } else { (2.0 * expected).ceil() };
        let seeds = 40u64;
        let mut on_time = 0;
        for seed in 0..seeds {
            let out = incident(seed, n, p0, ratio, 150, len, 10, &cfg);
            if out.iter().any(|(i, a)| a.state == AnomalyState::Firing && (*i as f64) < allowed) {
                on_time += 1;
            }
        }
        assert!(
            on_time * 10 >= seeds * 9,
            "{ratio}× of {p0} at {n}/min: {on_time} of {seeds} found within {allowed} min (expected delay {expected:.1})"
        );
    }
}

#[test]
fn sequential_an_hour_long_doubling_is_one_anomaly_updated_throughout_and_resolved_soon_after() {
    let cfg = RateConfig::default();
    for seed in 0..20 {
        let out = incident(seed, 300, 0.05, 2.0, 150, 60, 15, &cfg);
        let ids: std::collections::BTreeSet<_> = out.iter().map(|(_, a)| a.id.clone()).collect();
        assert_eq!(ids.len(), 1, "seed {seed}: {ids:?}");
        let reported = out.iter().filter(|(i, a)| *i < 60 && a.state != AnomalyState::Resolved).count();
        assert!(reported >= 54, "seed {seed}: reported in {reported} of 60 minutes");
        let resolved: Vec<usize> =
            out.iter().filter(|(_, a)| a.state == AnomalyState::Resolved).map(|(i, _)| *i).collect();
        assert_eq!(resolved.len(), 1, "seed {seed}");
        assert!(
            resolved[0] >= 60 && resolved[0] < 65,
            "seed {seed}: resolved {} min after the end",
            resolved[0] as i64 - 59
        );
        assert!(out.iter().any(|(_, a)| a.severity >= Severity::High), "a doubling is at least high");
    }
}

#[test]
fn sequential_tiny_volumes_never_alarm_on_a_few_events() {
    let cfg = RateConfig::default();
    let mut s = RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all");
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for i in 0..200 {
        let x = if i == 150 { 5 } else { draw(&mut rng, 5, 0.05) };
        assert!(s.observe(T0 + i * MINUTE_MS, x, 5, 3, &cfg).is_none(), "minute {i}");
    }
}

#[test]
fn sequential_an_anomaly_explains_its_evidence() {
    let cfg = RateConfig::default();
    let out = incident(4, 300, 0.05, 3.0, 150, 10, 10, &cfg);
    let first = &out.iter().find(|(_, a)| a.state == AnomalyState::Firing).unwrap().1;
    assert_eq!(first.scored_on, "rate_cusum");
    assert!(first.score >= first.threshold);
    let bar = sequential::Bar::for_level(&cfg, sequential::Level::Global, 3);
    assert!((first.threshold - bar.h).abs() < 1e-9);
    assert!(first.baseline_mean > 0.04 && first.baseline_mean < 0.07, "{}", first.baseline_mean);
    assert!(first.message.contains("ln LR"), "{}", first.message);
    assert!(first.message.contains("false alarm"), "{}", first.message);
    assert!(first.p_value.unwrap() < 1e-3);
}
