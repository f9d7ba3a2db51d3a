//! What a run sent, and what became of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::send::BatchOutcome;

/// [`SendReport::stopped_early`] when SIGINT or SIGTERM ended the run.
pub const STOPPED_BY_SIGNAL: &str = "stopped by a signal";

/// Counts of one run. Always `sent = accepted + refused + unavailable`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    pub scenario: String,
    pub seed: u64,
    pub target: String,
    pub speed: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub wall_seconds: f64,
    /// Event time of the run: its start, and the latest `occurred_at` sent.
    pub event_time_start: Option<DateTime<Utc>>,
    pub event_time_reached: Option<DateTime<Utc>>,
    /// Transactions whose fate is known.
    pub sent: u64,
    pub accepted: u64,
    /// Rejected as invalid by the producer (never retried: it cannot help).
    pub refused: u64,
    /// Still not accepted after every retry.
    pub unavailable: u64,
    /// Item re-sends.
    pub retried: u64,
    pub batches: u64,
    /// Responses by HTTP status code (retries included), or by broker outcome.
    pub responses: BTreeMap<String, u64>,
    /// Transactions a volume drop withheld: a merchant gone dark, a category halved (not
    /// counted in `sent`). Read from reports written before drops other than a dark merchant
    /// existed under its former name.
    #[serde(alias = "withheld_by_dark_merchants")]
    pub withheld_by_volume_drops: u64,
    pub events_per_second: f64,
    /// Why the run stopped early, if it did (a signal, or a fatal answer from the producer).
    pub stopped_early: Option<String>,
    /// A few refusal reasons.
    pub problems: Vec<String>,
}

impl SendReport {
    pub fn add(&mut self, o: &BatchOutcome) {
        self.batches += 1;
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.unavailable += o.unavailable;
        self.sent += o.accepted + o.refused + o.unavailable;
        self.retried += o.retried;
        for (k, v) in &o.responses {
            *self.responses.entry(k.clone()).or_default() += v;
        }
        for p in &o.problems {
            if self.problems.len() < 20 {
                self.problems.push(p.clone());
            }
        }
    }

    /// Every transaction sent was accepted, and the run was not stopped by a failure (a stop by
    /// signal is how a `--loop` run ends, and is no failure).
    pub fn all_accepted(&self) -> bool {
        self.refused == 0
            && self.unavailable == 0
            && self.stopped_early.as_deref().is_none_or(|why| why == STOPPED_BY_SIGNAL)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The summary printed at the end of a run.
    pub fn human(&self) -> String {
        let t = |d: &Option<DateTime<Utc>>| {
            d.map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_else(|| "-".into())
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Sent {} transactions of scenario {} (seed {}) to {} at speed {} in {:.1} s ({:.0}/s).",
            self.sent, self.scenario, self.seed, self.target, self.speed, self.wall_seconds, self.events_per_second
        );
        let _ = writeln!(s, "  accepted     {:>10}", self.accepted);
        let _ = writeln!(s, "  refused      {:>10}   (rejected as invalid; not retried)", self.refused);
        let _ = writeln!(
            s,
            "  unavailable  {:>10}   (never accepted; {} item re-sends in all)",
            self.unavailable, self.retried
        );
        let responses: Vec<String> = self.responses.iter().map(|(k, v)| format!("{k} × {v}")).collect();
        let _ = writeln!(s, "  responses    {}", if responses.is_empty() { "-".into() } else { responses.join(", ") });
        let _ = writeln!(s, "  event time   {} → {}", t(&self.event_time_start), t(&self.event_time_reached));
        if self.withheld_by_volume_drops > 0 {
            let _ = writeln!(s, "  withheld     {:>10}   (by volume drops)", self.withheld_by_volume_drops);
        }
        if let Some(why) = &self.stopped_early {
            let _ = writeln!(s, "  stopped early: {why}");
        }
        for p in self.problems.iter().take(5) {
            let _ = writeln!(s, "  problem: {p}");
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sent_is_accepted_plus_refused_plus_unavailable_and_responses_add_up() {
        let mut r = SendReport::default();
        let mut a = BatchOutcome { accepted: 498, refused: 1, unavailable: 1, retried: 3, ..Default::default() };
        a.response("207");
        a.response("503");
        let mut b = BatchOutcome { accepted: 500, ..Default::default() };
        b.response("202");
        b.response("207");
        r.add(&a);
        r.add(&b);
        assert_eq!((r.sent, r.accepted, r.refused, r.unavailable, r.retried, r.batches), (1000, 998, 1, 1, 3, 2));
        assert_eq!(r.responses.get("207"), Some(&2));
        assert!(!r.all_accepted());
        let mut ok = SendReport { sent: 5, accepted: 5, ..Default::default() };
        assert!(ok.all_accepted());
        ok.stopped_early = Some(STOPPED_BY_SIGNAL.into());
        assert!(ok.all_accepted(), "a signal ends a --loop run normally");
        ok.stopped_early = Some("the producer refused the API key".into());
        assert!(!ok.all_accepted());
        assert!(r.human().contains("unavailable           1"), "{}", r.human());
    }
}
