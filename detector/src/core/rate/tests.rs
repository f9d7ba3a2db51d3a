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
        .filter_map(|(i, (c, n))| series.observe(T0 + i as i64 * MINUTE_MS, *c, *n, cfg).map(|a| (i, a)))
        .collect()
}

#[test]
fn a_spike_after_thirty_normal_minutes_fires_once_updates_and_resolves() {
    let cfg = RateConfig::default();
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
fn the_same_spike_at_five_transactions_a_minute_does_not_fire() {
    let cfg = RateConfig::default();
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
fn a_two_hour_incident_stays_one_anomaly_and_does_not_become_the_new_normal() {
    let cfg = RateConfig::default();
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
fn a_perfectly_flat_history_does_not_make_one_event_infinite() {
    let cfg = RateConfig::default();
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
fn nothing_is_judged_while_the_baseline_warms_up() {
    let cfg = RateConfig::default();
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
