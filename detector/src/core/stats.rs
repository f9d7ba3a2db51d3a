//! Sufficient statistics that merge exactly, in any order (Chan, Golub & LeVeque).

use serde::{Deserialize, Serialize};

/// Count, mean and M2 (sum of squared deviations) of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl RunningStats {
    /// Adds one observation (Welford).
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Merges another sample into this one (Chan et al.): the result equals computing the
    /// statistics over both samples at once.
    pub fn merge(&mut self, other: &RunningStats) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        let nf = n as f64;
        self.mean += delta * other.n as f64 / nf;
        self.m2 += other.m2 + delta * delta * (self.n as f64) * (other.n as f64) / nf;
        self.n = n;
    }

    /// Sample variance (n - 1 in the denominator); 0 below two observations.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).max(0.0)
        }
    }

    pub fn stddev(&self) -> f64 {
        self.variance().sqrt()
    }

    pub fn of(xs: impl IntoIterator<Item = f64>) -> Self {
        let mut s = RunningStats::default();
        for x in xs {
            s.push(x);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    proptest! {
        #[test]
        fn merging_in_any_split_and_order_equals_computing_at_once(
            xs in prop::collection::vec(-1e6f64..1e6, 0..200),
            cuts in prop::collection::vec(0usize..200, 0..6),
            reverse in any::<bool>(),
        ) {
            let whole = RunningStats::of(xs.iter().copied());
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(xs.len())).collect();
            bounds.push(0);
            bounds.push(xs.len());
            bounds.sort_unstable();
            let mut parts: Vec<RunningStats> =
                bounds.windows(2).map(|w| RunningStats::of(xs[w[0]..w[1]].iter().copied())).collect();
            if reverse {
                parts.reverse();
            }
            let mut merged = RunningStats::default();
            for p in &parts {
                merged.merge(p);
            }
            prop_assert_eq!(merged.n, whole.n);
            prop_assert!(close(merged.mean, whole.mean), "{} vs {}", merged.mean, whole.mean);
            prop_assert!(close(merged.variance(), whole.variance()), "{} vs {}", merged.variance(), whole.variance());
        }
    }

    #[test]
    fn known_values() {
        let s = RunningStats::of([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.n, 8);
        assert!(close(s.mean, 5.0));
        assert!(close(s.variance(), 32.0 / 7.0));
    }
}
