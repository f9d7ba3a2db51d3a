use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::*;

fn noise(seed: u64, n: usize, sd: f64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = Normal::new(0.0, sd).unwrap();
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

fn scores(xs: &[f64]) -> Vec<f64> {
    score_series(xs, &SeriesConfig::default())
}

fn alarms(scores: &[f64]) -> Vec<usize> {
    scores.iter().enumerate().filter(|(_, s)| **s >= DEFAULT_THRESHOLD).map(|(i, _)| i).collect()
}

#[test]
fn a_level_shift_fires_once_at_the_shift() {
    let xs: Vec<f64> =
        noise(1, 1500, 1.0).iter().enumerate().map(|(i, e)| 100.0 + e + if i >= 1000 { 8.0 } else { 0.0 }).collect();
    let a = alarms(&scores(&xs));
    assert_eq!(a.first().copied(), Some(1000), "{a:?}");
    assert!(a.iter().filter(|&&i| (1000..1075).contains(&i)).count() == 1, "one alarm for the shift: {a:?}");
}

#[test]
fn a_spike_fires_on_its_row_and_plain_noise_does_not() {
    let mut xs: Vec<f64> = noise(2, 3000, 1.0).iter().map(|e| 50.0 + e).collect();
    xs[2000] += 12.0;
    let a = alarms(&scores(&xs));
    assert_eq!(a, vec![2000]);
}

#[test]
fn gaussian_noise_raises_at_most_one_alarm_in_ten_thousand_rows() {
    for seed in 10..13 {
        let xs = noise(seed, 10_000, 3.0);
        let a = alarms(&scores(&xs));
        assert!(a.len() <= 1, "seed {seed}: {a:?}");
    }
}

#[test]
fn a_broken_daily_cycle_fires_and_the_period_is_found() {
    // 288 rows a day (5-minute rows), a sharp business-hours plateau; on day 6 the plateau
    // does not come (an outage during the day).
    let day = 288;
    let e = noise(3, 8 * day, 1.0);
    let value = |i: usize| {
        let phase = i % day;
        let open = (96..216).contains(&phase);
        let outage = i / day == 6;
        20.0 + if open && !outage { 40.0 } else { 0.0 } + e[i]
    };
    let xs: Vec<f64> = (0..8 * day).map(value).collect();
    let mut s = SeriesScorer::default();
    let sc: Vec<f64> = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if i == 6 * day {
                assert_eq!(s.period(), Some(day));
            }
            s.push(x)
        })
        .collect();
    let a = alarms(&sc);
    // Normal days open and close every day without alarms once the cycle is learnt (day 3 on).
    assert!(a.iter().all(|&i| i < 3 * day || i >= 6 * day + 96), "{a:?}");
    assert!(a.iter().any(|&i| (6 * day + 96..6 * day + 110).contains(&i)), "the missing opening fires: {a:?}");
}

#[test]
fn a_flat_line_scores_zero_until_it_moves() {
    let mut xs = vec![7.25; 600];
    xs.extend(std::iter::repeat_n(7.5, 50));
    let sc = scores(&xs);
    assert!(sc[..600].iter().all(|&s| s == 0.0));
    assert_eq!(alarms(&sc).first().copied(), Some(600));
    let zeros = scores(&[0.0; 500]);
    assert!(zeros.iter().all(|&s| s == 0.0));
}

#[test]
fn scores_do_not_depend_on_the_unit() {
    let xs: Vec<f64> =
        noise(4, 2000, 1.0).iter().enumerate().map(|(i, e)| 10.0 + e + (i as f64 / 40.0).sin()).collect();
    let big: Vec<f64> = xs.iter().map(|x| x * 1e6).collect();
    let small: Vec<f64> = xs.iter().map(|x| x * 1e-6).collect();
    for other in [big, small] {
        for (a, b) in scores(&xs).iter().zip(scores(&other)) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }
}

#[test]
fn short_series_score_zero_without_panicking() {
    for n in 0..5 {
        assert!(scores(&vec![1.0; n]).iter().all(|&s| s == 0.0));
    }
    assert_eq!(scores(&[3.0, -1e300, 1e300]), vec![0.0; 3]);
}

#[test]
fn a_period_is_found_in_a_sine_and_none_in_a_random_walk() {
    let sine: Vec<f64> = (0..2000).map(|i| (i as f64 * std::f64::consts::TAU / 48.0).sin()).collect();
    assert_eq!(find_period(&sine, 1440, None), Some(48));
    let mut level = 0.0;
    let walk: Vec<f64> = noise(5, 4000, 1.0)
        .iter()
        .map(|e| {
            level += e;
            level
        })
        .collect();
    assert_eq!(find_period(&walk, 1440, None), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn appending_rows_never_changes_earlier_scores(
        xs in prop::collection::vec(-1e3f64..1e3, 1..700),
        extra in prop::collection::vec(-1e3f64..1e3, 1..100),
    ) {
        let before = scores(&xs);
        let mut all = xs.clone();
        all.extend(extra);
        let after = scores(&all);
        prop_assert_eq!(&before[..], &after[..xs.len()]);
    }

    #[test]
    fn every_score_is_between_0_and_1(
        xs in prop::collection::vec(prop_oneof![-1e12f64..1e12, -1.0f64..1.0, Just(0.0)], 0..600),
    ) {
        for s in scores(&xs) {
            prop_assert!((0.0..=1.0).contains(&s), "{}", s);
        }
    }
}
