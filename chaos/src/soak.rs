//! The soak test's measurements and its verdict.
//!
//! Every few seconds each service's resident memory (`VmRSS`) and open descriptors
//! (`/proc/<pid>/fd`) are sampled. A resource **grows without bound** when, after a warm-up
//! (the first third of the run: connections open, caches and the detector's duplicate set
//! fill), the largest value of the last third exceeds the largest of the middle third by more
//! than a tolerance: `last_max > middle_max × (1 + relative) + absolute`. A bounded process
//! reaches its plateau during the warm-up and its maxima then agree; a leak of `r` per second
//! shows as `r × T/3` between them. The least-squares slope over the last two thirds is
//! reported too, as a rate per hour, so a slow leak below the tolerance is still visible.

use std::fmt::Write as _;

/// One resource of one process, over time.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// (seconds since start, value)
    pub points: Vec<(f64, f64)>,
}

/// How much a series may grow between the middle and the last third.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
}

/// Resident memory: 5 % plus 8 MiB (allocator arenas grow in steps). In a 10-minute run the
/// maxima of the thirds are 200 s apart, so a leak faster than about 60 KiB/s (200 MiB an hour)
/// at 80 MiB resident is caught; a longer run catches slower ones.
pub const RSS_TOLERANCE: Tolerance = Tolerance { relative: 0.05, absolute: 8.0 * 1024.0 };
/// Descriptors: 16 (connections come and go: HTTP keep-alive, broker connections).
pub const FD_TOLERANCE: Tolerance = Tolerance { relative: 0.0, absolute: 16.0 };

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub first: f64,
    pub middle_max: f64,
    pub last_max: f64,
    /// Least-squares slope over the last two thirds, per hour.
    pub slope_per_hour: f64,
    pub grows: bool,
    /// Too few samples to judge.
    pub insufficient: bool,
}

impl Series {
    pub fn push(&mut self, t: f64, v: f64) {
        self.points.push((t, v));
    }

    pub fn verdict(&self, tol: Tolerance) -> Verdict {
        let first = self.points.first().map_or(0.0, |p| p.1);
        let (Some(start), Some(end)) = (self.points.first().map(|p| p.0), self.points.last().map(|p| p.0)) else {
            return Verdict {
                first,
                middle_max: 0.0,
                last_max: 0.0,
                slope_per_hour: 0.0,
                grows: false,
                insufficient: true,
            };
        };
        let third = (end - start) / 3.0;
        let (a, b) = (start + third, start + 2.0 * third);
        let max_in = |lo: f64, hi: f64| {
            self.points.iter().filter(|(t, _)| *t >= lo && *t <= hi).map(|p| p.1).fold(f64::NAN, f64::max)
        };
        let middle_max = max_in(a, b);
        let last_max = max_in(b, end);
        let tail: Vec<(f64, f64)> = self.points.iter().copied().filter(|(t, _)| *t >= a).collect();
        let slope_per_hour = slope(&tail) * 3600.0;
        let insufficient = self.points.iter().filter(|(t, _)| *t >= a && *t <= b).count() < 3
            || self.points.iter().filter(|(t, _)| *t >= b).count() < 3;
        let grows = !insufficient && last_max > middle_max * (1.0 + tol.relative) + tol.absolute;
        Verdict { first, middle_max, last_max, slope_per_hour, grows, insufficient }
    }
}

/// Least-squares slope of `points` (0 for fewer than two).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// The samples of one process.
#[derive(Debug, Clone, Default)]
pub struct ProcessSamples {
    pub name: String,
    pub rss_kib: Series,
    pub fds: Series,
    /// The pid changed (the process restarted) during the run.
    pub restarted: bool,
    /// Judged (the services), or only shown (the broker).
    pub judged: bool,
}

impl ProcessSamples {
    pub fn new(name: &str, judged: bool) -> Self {
        ProcessSamples { name: name.to_owned(), judged, ..Default::default() }
    }

    pub fn failed(&self) -> bool {
        self.judged
            && (self.restarted || self.rss_kib.verdict(RSS_TOLERANCE).grows || self.fds.verdict(FD_TOLERANCE).grows)
    }
}

/// The table printed at the end of a soak run.
pub fn table(all: &[ProcessSamples]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:>10} {:>11} {:>11} {:>12}  {:>5} {:>6} {:>6} {:>8}  verdict",
        "process", "RSS first", "middle max", "last max", "slope/h", "fds", "mid", "last", "slope/h"
    );
    for p in all {
        let r = p.rss_kib.verdict(RSS_TOLERANCE);
        let f = p.fds.verdict(FD_TOLERANCE);
        let mib = |k: f64| format!("{:.1} MiB", k / 1024.0);
        let verdict = if !p.judged {
            "shown only".to_string()
        } else if p.restarted {
            "RESTARTED".to_string()
        } else if r.insufficient || f.insufficient {
            "too few samples".to_string()
        } else if r.grows || f.grows {
            format!(
                "GROWS ({}{})",
                if r.grows { "memory" } else { "" },
                if f.grows {
                    if r.grows {
                        ", descriptors"
                    } else {
                        "descriptors"
                    }
                } else {
                    ""
                }
            )
        } else {
            "bounded".to_string()
        };
        let _ = writeln!(
            s,
            "{:<10} {:>10} {:>11} {:>11} {:>12}  {:>5} {:>6} {:>6} {:>8.1}  {verdict}",
            p.name,
            mib(r.first),
            mib(r.middle_max),
            mib(r.last_max),
            format!("{:+.1} MiB", r.slope_per_hour / 1024.0),
            f.first,
            f.middle_max,
            f.last_max,
            f.slope_per_hour
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64) -> Series {
        let mut s = Series::default();
        for i in 0..120 {
            let t = f64::from(i) * 5.0;
            s.push(t, f(t));
        }
        s
    }

    #[test]
    fn a_process_that_plateaus_after_warm_up_is_bounded() {
        // Fills up in the first two minutes, then wobbles by a few MiB.
        let s = series(|t| 50_000.0 + 30_000.0 * (t / 120.0).min(1.0) + 3_000.0 * (t / 7.0).sin());
        let v = s.verdict(RSS_TOLERANCE);
        assert!(!v.grows, "{v:?}");
        assert!(!v.insufficient);
    }

    #[test]
    fn a_steady_leak_is_caught_and_its_slope_reported() {
        // 100 KiB/s: about 58 MiB over 10 minutes.
        let s = series(|t| 60_000.0 + 100.0 * t);
        let v = s.verdict(RSS_TOLERANCE);
        assert!(v.grows, "{v:?}");
        assert!((v.slope_per_hour - 100.0 * 3600.0).abs() < 1.0, "{v:?}");
        // A slow one (10 KiB/s) stays below the tolerance in 10 minutes, but its slope shows.
        let slow = series(|t| 60_000.0 + 10.0 * t).verdict(RSS_TOLERANCE);
        assert!(!slow.grows && slow.slope_per_hour > 30_000.0, "{slow:?}");
    }

    #[test]
    fn a_fast_descriptor_leak_is_caught_and_a_steady_count_or_a_slow_drift_within_the_tolerance_is_not() {
        let leak = series(|t| 40.0 + (t / 60.0).floor());
        assert!(!leak.verdict(FD_TOLERANCE).grows, "3 more between the maxima is within the tolerance");
        let fast = series(|t| 40.0 + (t / 5.0).floor());
        assert!(fast.verdict(FD_TOLERANCE).grows);
        let steady = series(|t| 40.0 + if (t as i64 / 5) % 2 == 0 { 0.0 } else { 6.0 });
        assert!(!steady.verdict(FD_TOLERANCE).grows);
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let mut s = Series::default();
        s.push(0.0, 1.0);
        s.push(5.0, 100.0);
        let v = s.verdict(RSS_TOLERANCE);
        assert!(v.insufficient && !v.grows);
    }

    #[test]
    fn the_slope_of_a_line_is_its_gradient() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-12);
        assert_eq!(slope(&[(0.0, 1.0)]), 0.0);
    }
}
