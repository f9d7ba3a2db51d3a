//! The streaming-benchmark scoring checked against figures computed by hand from NAB's
//! definitions (see `vigil_evaluation::series_benchmark`).

use vigil_evaluation::series_benchmark::{
    optimise, probation, row_weights, scaled_sigmoid, windowed_gaussian, Labelled, PROFILES,
};

fn file(name: &str, n: usize, windows: Vec<(usize, usize)>) -> Labelled {
    Labelled {
        name: name.into(),
        timestamps: (0..n).map(|i| format!("row {i}")).collect(),
        values: vec![0.0; n],
        windows,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn the_scaled_sigmoid_and_the_probation_follow_nab() {
    // 2 / (1 + e^{5y}) − 1: 0.98661 at the window's left edge, 0 at its right edge, −1 from 3 on.
    assert!(close(scaled_sigmoid(-1.0), 0.9866142981514305));
    assert!(close(scaled_sigmoid(0.0), 0.0));
    assert!(close(scaled_sigmoid(3.0), -1.0));
    assert_eq!(probation(20), 3);
    assert_eq!(probation(4032), 604);
    assert_eq!(probation(22_695), 750);
}

#[test]
fn row_weights_credit_the_window_and_charge_false_positives_by_distance() {
    // 20 rows, probation 3, one window on rows 10..=13 (width 4).
    let w = row_weights(20, &[(10, 13)]);
    assert_eq!(w[2], None, "probationary");
    assert_eq!(w[5], Some((None, -1.0)), "no window before: the full cost");
    let (win, first) = w[10].unwrap();
    assert_eq!(win, Some(0));
    assert!(close(first, 1.0), "the window's first row is worth A_TP exactly");
    // Row 11: y = −(13 − 11 + 1) / 4 = −0.75; σ(−0.75) / σ(−1) = 0.9540452601799487 / 0.9866142981514305.
    assert!(close(w[11].unwrap().1, 0.9669890878000605));
    // Row 17: y = (17 − 13) / (4 − 1) = 4/3; σ(4/3) = −0.9974579674738373.
    assert_eq!(w[17].unwrap().0, None);
    assert!(close(w[17].unwrap().1, -0.9974579674738373));
}

#[test]
fn the_threshold_and_normalised_scores_match_a_hand_computed_example() {
    // File a: a detection at 0.9 early in its window (row 11), false positives at 0.8 (row 17,
    // after the window) and 0.7 (row 5, before any window), 1.0 on a probationary row (1).
    let a = file("a.csv", 20, vec![(10, 13)]);
    let mut sa = vec![0.0; 20];
    sa[1] = 1.0;
    sa[11] = 0.9;
    sa[17] = 0.8;
    sa[5] = 0.7;
    // File b: its window on rows 15..=19 is never detected.
    let b = file("b.csv", 20, vec![(15, 19)]);
    let sb = vec![0.0; 20];
    let files = [(&a, sa.as_slice()), (&b, sb.as_slice())];

    // Standard: best at 0.9 with S = 0.96699 − 1 (b's miss) = −0.03301; at 0.8 it would be
    // 0.96699 − 0.11·0.99746 − 1, at 0 (everything) −0.70566. Null −2, perfect 2.
    let std = optimise(&files, PROFILES[0]);
    assert_eq!(std.threshold, 0.9);
    assert!(close(std.raw, 0.9669890878000605 - 1.0));
    assert!(close(std.normalised, 100.0 * (0.9669890878000605 - 1.0 + 2.0) / 4.0));
    // reward_low_FN: a miss costs 2, so at 0.9 S = 0.96699 − 2 = −1.03301, and detecting every
    // row is better: a's window from its first row (1) and b's (1), a's 7 rows before its
    // window (−0.11 each) and 6 after (0.11·σ((i − 13)/3), i = 14..=19), b's 12 rows before
    // its window (−0.11 each): −0.70566. Null −4, perfect 2.
    let low_fn = optimise(&files, PROFILES[2]);
    assert_eq!(low_fn.threshold, 0.0);
    assert!(close(low_fn.raw, -0.7056559469904771));
    assert!(close(low_fn.normalised, 100.0 * (-0.7056559469904771 + 4.0) / 6.0));
    // With file a alone the three profiles give 100·(0.96699 + A_FN)/(1 + A_FN).
    let alone = optimise(&files[..1], PROFILES[1]);
    assert!(close(alone.normalised, 98.34945439000302));
}

#[test]
fn the_windowed_gaussian_scores_the_first_row_0_and_an_outlier_near_1() {
    let mut xs: Vec<f64> = (0..200).map(|i| (i % 5) as f64).collect();
    xs.push(100.0);
    let s = windowed_gaussian(&xs);
    assert_eq!(s[0], 0.0);
    assert!(s[200] > 0.999_999, "{}", s[200]);
    assert!(s[100] < 0.99, "{}", s[100]);
}
