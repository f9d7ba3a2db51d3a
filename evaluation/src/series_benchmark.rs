//! The streaming-benchmark evaluation of `detector replay --series` (issue 17, item 5): labelled
//! real-world series in the Numenta Anomaly Benchmark's layout, scored as that benchmark scores
//! a streaming detector, for the detector's series scorer and a rolling z-score baseline.
//!
//! ## Layout read
//! `DIR/labels/combined_windows.json` maps `"<category>/<file>.csv"` to its anomaly windows
//! (`[start, end]` timestamps, both inclusive); every listed file present under `DIR/data/` is
//! scored, the others are skipped. A file is `timestamp,value` with a header.
//!
//! ## The scoring (NAB's, as its documentation and paper describe it)
//! * The first 15 % of a file's rows (at most 750) are probationary: never scored.
//! * A row inside a window (from its first to its last row), if detected, is worth
//!   `A_TP · σ(y) / σ(−1)` with `σ(y) = 2 / (1 + e^{5y}) − 1` (the scaled sigmoid) and
//!   `y = −(right − i + 1) / width` its relative position: 1 at the window's first row, near 0 at
//!   its last. Only the best (earliest) detection of a window counts; an undetected window costs
//!   `A_FN`.
//! * A detected row outside every window costs `A_FP · σ(y)` (negative) with
//!   `y = (i − right_prev) / (width_prev − 1)` past the preceding window (3, so the full cost,
//!   when no window precedes it; σ is −1 from y = 3 on): a false positive just after an incident
//!   costs little, one far from any costs `A_FP`. Every such row counts.
//! * A row is detected when its score is at least the threshold; the threshold is chosen per
//!   profile to maximise the sum over all files (every distinct score is tried).
//! * Normalised: `100 · (S − S_null) / (S_perfect − S_null)`, with the null detector detecting
//!   nothing (`S_null = −A_FN · windows`) and the perfect one each window's first row
//!   (`S_perfect = A_TP · windows`).
//!
//! Profiles: standard (A_TP 1, A_FP 0.11, A_FN 1), reward_low_FP (A_FP 0.22), reward_low_FN
//! (A_FN 2).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use chrono::NaiveDateTime;
use serde::Serialize;
use statrs::function::erf::erfc;
use vigil_detector::core::series::{score_series, SeriesConfig};

/// A cost profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

pub const PROFILES: [Profile; 3] = [
    Profile { name: "standard", tp: 1.0, fp: 0.11, fn_: 1.0 },
    Profile { name: "reward_low_FP", tp: 1.0, fp: 0.22, fn_: 1.0 },
    Profile { name: "reward_low_FN", tp: 1.0, fp: 0.11, fn_: 2.0 },
];

/// One labelled series.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub name: String,
    pub timestamps: Vec<String>,
    pub values: Vec<f64>,
    /// Anomaly windows as row ranges, both ends inclusive, in order.
    pub windows: Vec<(usize, usize)>,
}

/// A detector under test: a name and the scores it gives a series.
pub struct Detector {
    pub name: &'static str,
    pub run: fn(&[f64]) -> Vec<f64>,
}

pub fn detectors() -> Vec<Detector> {
    vec![
        Detector { name: "Vigil series scorer", run: |v| score_series(v, &SeriesConfig::default()) },
        Detector { name: "windowed Gaussian (rolling z-score)", run: windowed_gaussian },
    ]
}

/// NAB's windowed Gaussian baseline: the score of a value is `1 − Q(|z|)` against the mean and
/// standard deviation of a window of up to 6 400 earlier values, which slides 100 values at a
/// time once full.
pub fn windowed_gaussian(values: &[f64]) -> Vec<f64> {
    const WINDOW: usize = 6400;
    const STEP: usize = 100;
    let mut window: Vec<f64> = Vec::new();
    let mut pending: Vec<f64> = Vec::new();
    let (mut mean, mut sd) = (0.0, 1e-6);
    let mut out = Vec::with_capacity(values.len());
    let stats = |w: &[f64]| {
        let m = w.iter().sum::<f64>() / w.len() as f64;
        let v = w.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / w.len() as f64;
        (m, if v > 0.0 { v.sqrt() } else { 1e-6 })
    };
    for &x in values {
        let score =
            if window.is_empty() { 0.0 } else { 1.0 - 0.5 * erfc(((x - mean).abs() / sd) / std::f64::consts::SQRT_2) };
        out.push(score);
        if window.len() < WINDOW {
            window.push(x);
            (mean, sd) = stats(&window);
        } else {
            pending.push(x);
            if pending.len() == STEP {
                window.drain(..STEP);
                window.append(&mut pending);
                (mean, sd) = stats(&window);
            }
        }
    }
    out
}

fn parse_ts(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

/// Reads the labelled files of a NAB-layout directory (see the module docs), by name.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Labelled>> {
    let labels_path = dir.join("labels").join("combined_windows.json");
    let text =
        std::fs::read_to_string(&labels_path).with_context(|| format!("Failed to read {}", labels_path.display()))?;
    let labels: BTreeMap<String, Vec<[String; 2]>> =
        serde_json::from_str(&text).with_context(|| format!("Failed to parse {}", labels_path.display()))?;
    let mut out = Vec::new();
    for (name, windows) in labels {
        let path = dir.join("data").join(&name);
        if !path.exists() {
            continue;
        }
        let csv = std::fs::read_to_string(&path).with_context(|| format!("Failed to read {}", path.display()))?;
        let (mut timestamps, mut values) = (Vec::new(), Vec::new());
        for (i, line) in csv.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (ts, v) = line
                .split_once(',')
                .with_context(|| format!("{}: line {}: expected timestamp,value", path.display(), i + 1))?;
            match v.trim().parse::<f64>() {
                Ok(v) => {
                    timestamps.push(ts.trim().to_string());
                    values.push(v);
                }
                Err(_) if i == 0 => {}
                Err(_) => anyhow::bail!("{}: line {}: {v:?} is not a number", path.display(), i + 1),
            }
        }
        let times: Vec<NaiveDateTime> = timestamps
            .iter()
            .enumerate()
            .map(|(i, t)| {
                parse_ts(t).with_context(|| format!("{}: row {}: bad timestamp {t:?}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut rows = Vec::new();
        for [a, b] in &windows {
            let (a, b) = (
                parse_ts(a).with_context(|| format!("{name}: bad window start {a:?}"))?,
                parse_ts(b).with_context(|| format!("{name}: bad window end {b:?}"))?,
            );
            let first = times.partition_point(|t| *t < a);
            let last = times.partition_point(|t| *t <= b);
            if last > first {
                rows.push((first, last - 1));
            }
        }
        out.push(Labelled { name, timestamps, values, windows: rows });
    }
    Ok(out)
}

/// `2 / (1 + e^{5y}) − 1`, −1 from y = 3 on.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// NAB's probationary rows of a file of `n` rows.
pub fn probation(n: usize) -> usize {
    ((0.15 * n as f64).floor()).min(750.0) as usize
}

/// What a detection on each row is worth: `(window, weight)` with the window's index for a row
/// inside one (weight ≥ 0, before `A_TP`) or `None` outside (weight ≤ 0, before `A_FP`);
/// probationary rows are left out (`None` in the returned vector).
pub fn row_weights(n: usize, windows: &[(usize, usize)]) -> Vec<Option<(Option<usize>, f64)>> {
    let max_tp = scaled_sigmoid(-1.0);
    let skip = probation(n);
    let mut out = Vec::with_capacity(n);
    let mut prev: Option<(usize, usize)> = None; // right edge, width of the preceding window
    let mut w = 0usize;
    for i in 0..n {
        while w < windows.len() && windows[w].1 < i {
            prev = Some((windows[w].1, windows[w].1 - windows[w].0 + 1));
            w += 1;
        }
        let weight = match windows.get(w) {
            Some(&(a, b)) if a <= i => {
                let width = (b - a + 1) as f64;
                (Some(w), scaled_sigmoid(-((b - i + 1) as f64) / width) / max_tp)
            }
            _ => {
                let y = match prev {
                    None => 3.0,
                    Some((right, width)) => (i - right) as f64 / (width.max(2) - 1) as f64,
                };
                (None, scaled_sigmoid(y))
            }
        };
        out.push((i >= skip).then_some(weight));
    }
    out
}

/// The scores of one detector on every file, under one profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileResult {
    pub profile: &'static str,
    pub threshold: f64,
    pub raw: f64,
    pub normalised: f64,
}

/// Per file at the standard profile's best threshold.
#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    pub name: String,
    pub rows: usize,
    pub windows: usize,
    pub detected: usize,
    pub false_positive_rows: usize,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectorResult {
    pub detector: &'static str,
    pub profiles: Vec<ProfileResult>,
    pub files: Vec<FileResult>,
}

/// The best threshold for one profile over several files' scores, and the raw and normalised
/// scores it gives.
pub fn optimise(files: &[(&Labelled, &[f64])], p: Profile) -> ProfileResult {
    // Every scorable row: (score, global window or none, weighted value).
    let mut points: Vec<(f64, Option<usize>, f64)> = Vec::new();
    let mut n_windows = 0usize;
    for (f, scores) in files {
        let base = n_windows;
        let mut seen = vec![false; f.windows.len()];
        for (i, w) in row_weights(f.values.len(), &f.windows).into_iter().enumerate() {
            let Some((win, weight)) = w else { continue };
            let value = match win {
                Some(k) => {
                    seen[k] = true;
                    weight * p.tp
                }
                None => weight * p.fp,
            };
            points.push((scores[i], win.map(|k| base + k), value));
        }
        n_windows += seen.len();
    }
    points.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Windows entirely probationary count for nothing either way.
    let mut best_of: Vec<Option<f64>> = vec![None; n_windows];
    let scorable: std::collections::BTreeSet<usize> = points.iter().filter_map(|p| p.1).collect();
    for &k in &scorable {
        best_of[k] = Some(-p.fn_);
    }
    let null = -p.fn_ * scorable.len() as f64;
    let perfect = p.tp * scorable.len() as f64;
    let mut total = null;
    let (mut best, mut best_threshold) = (total, f64::INFINITY);
    let mut i = 0;
    while i < points.len() {
        let t = points[i].0;
        while i < points.len() && points[i].0 == t {
            let (_, win, value) = points[i];
            match win {
                Some(k) => {
                    let old = best_of[k].unwrap_or(-p.fn_);
                    if value > old {
                        total += value - old;
                        best_of[k] = Some(value);
                    }
                }
                None => total += value,
            }
            i += 1;
        }
        if total > best {
            best = total;
            best_threshold = t;
        }
    }
    let normalised = if perfect > null { 100.0 * (best - null) / (perfect - null) } else { 0.0 };
    ProfileResult { profile: p.name, threshold: best_threshold, raw: best, normalised }
}

/// One file's detections at a threshold (for the per-file table).
pub fn file_result(f: &Labelled, scores: &[f64], threshold: f64, p: Profile) -> FileResult {
    let mut best: Vec<Option<f64>> = vec![None; f.windows.len()];
    let mut fp_rows = 0;
    let mut score = 0.0;
    let mut in_scope = vec![false; f.windows.len()];
    for (i, w) in row_weights(f.values.len(), &f.windows).into_iter().enumerate() {
        let Some((win, weight)) = w else { continue };
        if let Some(k) = win {
            in_scope[k] = true;
        }
        if scores[i] < threshold {
            continue;
        }
        match win {
            Some(k) => best[k] = Some(best[k].map_or(weight * p.tp, |b: f64| b.max(weight * p.tp))),
            None => {
                fp_rows += 1;
                score += weight * p.fp;
            }
        }
    }
    for k in 0..f.windows.len() {
        if in_scope[k] {
            score += best[k].unwrap_or(-p.fn_);
        }
    }
    FileResult {
        name: f.name.clone(),
        rows: f.values.len(),
        windows: in_scope.iter().filter(|s| **s).count(),
        detected: best.iter().filter(|b| b.is_some()).count(),
        false_positive_rows: fp_rows,
        score,
    }
}

/// Runs every detector on every file and scores them under every profile.
pub fn evaluate(files: &[Labelled]) -> Vec<DetectorResult> {
    detectors()
        .into_iter()
        .map(|d| {
            let scores: Vec<Vec<f64>> = files.iter().map(|f| (d.run)(&f.values)).collect();
            let pairs: Vec<(&Labelled, &[f64])> = files.iter().zip(&scores).map(|(f, s)| (f, s.as_slice())).collect();
            let profiles: Vec<ProfileResult> = PROFILES.iter().map(|&p| optimise(&pairs, p)).collect();
            let t = profiles[0].threshold;
            let files = pairs.iter().map(|(f, s)| file_result(f, s, t, PROFILES[0])).collect();
            DetectorResult { detector: d.name, profiles, files }
        })
        .collect()
}

/// The report in markdown.
pub fn markdown(files: &[Labelled], results: &[DetectorResult]) -> String {
    let rows: usize = files.iter().map(|f| f.values.len()).sum();
    let windows: usize = files.iter().map(|f| f.windows.len()).sum();
    let mut s =
        format!("## Streaming benchmark (NAB scoring): {} files, {rows} rows, {windows} windows\n\n", files.len());
    s.push_str("| detector | standard | reward_low_FP | reward_low_FN | thresholds (standard, low FP, low FN) |\n");
    s.push_str("| --- | ---: | ---: | ---: | --- |\n");
    for r in results {
        let th: Vec<String> = r.profiles.iter().map(|p| format!("{:.4}", p.threshold)).collect();
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} |\n",
            r.detector,
            r.profiles[0].normalised,
            r.profiles[1].normalised,
            r.profiles[2].normalised,
            th.join(", ")
        ));
    }
    for r in results {
        s.push_str(&format!(
            "\n### {}: per file at the standard profile's threshold {:.4}\n\n",
            r.detector, r.profiles[0].threshold
        ));
        s.push_str("| file | rows | windows | detected | false-positive rows | raw score |\n");
        s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for f in &r.files {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.3} |\n",
                f.name, f.rows, f.windows, f.detected, f.false_positive_rows, f.score
            ));
        }
    }
    s
}
