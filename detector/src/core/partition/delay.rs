//! How far a partition's feed trails the clock, learned from its records, so that idleness
//! closes a minute of a delayed live feed only once that minute's events have had time to
//! arrive (see [`super::PartitionState::go_idle`] and the README's "Windows and watermarks").
//!
//! A record's **delay** is its broker timestamp (set by the producer when it accepted the event)
//! minus its event time. The feed's delay is a high quantile of the delays of its recent records,
//! kept in a decayed histogram of log-spaced buckets: bounded (at most [`BUCKETS`] counters),
//! integer-only and a function of the records alone, so it is checkpointed with the partition
//! and replays give it back exactly.
//!
//! A **back-fill** (events stamped in the past, sent faster than they happened) has huge delays
//! that say nothing about a live feed's: its event time runs ahead of its record time. While
//! that is seen over the last 5 to 10 s of record time the feed is *catching up*, and its
//! records teach nothing, so a live feed that follows a back-fill (or drains a backlog) goes on
//! with its own delay as soon as it is back at the pace of the clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Weights halve every this much record time.
pub const HALF_LIFE_MS: i64 = 2 * 60_000;
/// The quantile of recent delays taken as the feed's delay, in percent.
pub const QUANTILE_PERCENT: u64 = 99;
/// A delay is trusted only when it rests on at least this many recent records (decayed): one
/// stray record stamped in the past (a webhook retried an hour later) is not a feed.
pub const MIN_SUPPORT: u64 = 5;
/// A feed further behind the clock than this is treated as a back-fill: idleness closes its
/// minutes at once rather than hold every other partition's minutes back for so long.
pub const MAX_FEED_DELAY_MS: i64 = 15 * 60_000;
/// The pace of event time against record time is judged over the last one to two of these
/// spans of record time.
pub const PACE_STEP_MS: i64 = 5_000;

/// Weight of one record (fixed point, so a few halvings still leave a trace).
const ONE: u32 = 256;
/// Buckets per doubling of the delay: each spans about 9 %.
const PER_OCTAVE: usize = 8;
/// 1 000 000 × 2^(j/8), j = 0..=8: the sub-bucket bounds within an octave, as integers so the
/// bucket of a delay never depends on floating-point rounding.
const STEPS: [i64; PER_OCTAVE + 1] =
    [1_000_000, 1_090_508, 1_189_207, 1_296_840, 1_414_214, 1_542_211, 1_681_793, 1_834_008, 2_000_000];
/// Bucket 0 holds delays under a second; then 8 per octave up to 2^20 s (12 days), past the
/// late horizon (7 days); longer delays share the last bucket.
const OCTAVES: usize = 20;
pub const BUCKETS: usize = 1 + PER_OCTAVE * OCTAVES;

/// The bucket of a delay (ms, ≥ 0).
fn bucket(delay_ms: i64) -> usize {
    if delay_ms < 1000 {
        return 0;
    }
    let octave = (delay_ms / 1000).ilog2() as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let base = 1000i64 << octave;
    // The largest j with base × 2^(j/8) ≤ delay.
    let j = (1..PER_OCTAVE).take_while(|&j| delay_ms * 1_000_000 >= base * STEPS[j]).count();
    1 + octave * PER_OCTAVE + j
}

/// The upper bound (ms, exclusive) of a bucket: what a quantile falling in it reports, so the
/// estimate errs towards waiting longer.
fn upper_bound(bucket: usize) -> i64 {
    if bucket == 0 {
        return 1000;
    }
    let (octave, j) = ((bucket - 1) / PER_OCTAVE, (bucket - 1) % PER_OCTAVE);
    ((1000i64 << octave) * STEPS[j + 1]) / 1_000_000
}

/// The learned delay of one partition's feed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedDelay {
    /// Decayed weights of recent delays by bucket (absent: zero).
    weights: BTreeMap<u16, u32>,
    /// The half-life period (record time / [`HALF_LIFE_MS`]) the weights are decayed to.
    decayed_to: Option<i64>,
    /// The newest record timestamp seen.
    last_record_ts: Option<i64>,
    /// Record time and highest event time at the start of the current pace span…
    anchor: Option<(i64, i64)>,
    /// …and of the one before: the pace is judged from there.
    previous: Option<(i64, i64)>,
    /// Event time ran ahead of record time over the last one to two pace spans, as of the newest
    /// record.
    catching_up: bool,
}

impl FeedDelay {
    /// Learns from one record: event time `t`, broker timestamp `record_ts`, and the partition's
    /// highest event time after it (`frontier`). `slack_ms` is the allowed lateness: the event
    /// frontier may run that far ahead of record time before the feed counts as catching up.
    pub fn observe(&mut self, t: i64, record_ts: i64, frontier: i64, slack_ms: i64) {
        self.decay(record_ts);
        let newest = self.last_record_ts.map_or(record_ts, |l| l.max(record_ts));
        self.last_record_ts = Some(newest);
        match self.anchor {
            Some((r0, _)) if newest - r0 < PACE_STEP_MS => {}
            Some(_) => (self.previous, self.anchor) = (self.anchor, Some((newest, frontier))),
            None => self.anchor = Some((newest, frontier)),
        }
        let (r0, m0) = self.previous.or(self.anchor).unwrap_or((newest, frontier));
        // Event time outran record time (more than twice as fast, beyond the slack): a back-fill,
        // a replay, a backlog drained. Its delays are no live feed's.
        self.catching_up = frontier - m0 > 2 * (newest - r0).max(0) + slack_ms;
        if !self.catching_up {
            let w = self.weights.entry(bucket(record_ts.saturating_sub(t).max(0)) as u16).or_default();
            *w = w.saturating_add(ONE);
        }
    }

    /// Halves every weight once per half-life of record time since the last decay. Records
    /// whose timestamp goes back (another producer's clock) decay nothing.
    fn decay(&mut self, record_ts: i64) {
        let period = record_ts.div_euclid(HALF_LIFE_MS);
        let halvings = match self.decayed_to {
            Some(p) if period > p => period - p,
            Some(_) => return,
            None => 0,
        };
        self.decayed_to = Some(period);
        if halvings >= 32 {
            self.weights.clear();
            return;
        }
        for w in self.weights.values_mut() {
            *w >>= halvings;
        }
        self.weights.retain(|_, w| *w > 0);
    }

    /// How many recent records (decayed) the estimate rests on.
    pub fn support(&self) -> u64 {
        self.weights.values().map(|w| u64::from(*w)).sum::<u64>() / u64::from(ONE)
    }

    pub fn catching_up(&self) -> bool {
        self.catching_up
    }

    /// The [`QUANTILE_PERCENT`] quantile of recent delays (ms, the upper bound of its bucket);
    /// `None` before any record.
    pub fn quantile(&self) -> Option<i64> {
        let total: u64 = self.weights.values().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut seen = 0u64;
        for (b, w) in &self.weights {
            seen += u64::from(*w);
            if seen * 100 >= total * QUANTILE_PERCENT {
                return Some(upper_bound(usize::from(*b)));
            }
        }
        self.weights.keys().next_back().map(|b| upper_bound(usize::from(*b)))
    }

    /// How far behind the wall clock the partition's event time is taken to be while nothing
    /// arrives, given its highest event time; `None` when the feed is not a live one (a back-fill
    /// or replay, a delay resting on too few records, or one beyond [`MAX_FEED_DELAY_MS`]), whose
    /// event time is then taken to be the wall clock's.
    ///
    /// The event frontier moves on with the wall clock from the newest record: its lag behind
    /// that record's timestamp (`record time − highest event time`) is the least delay taken.
    /// The learned quantile may add up to `slack_ms` to it (records later than the newest one
    /// was: jitter, producers whose clocks differ); never more, so delays learned before the
    /// feed sped up (a queue drained) cannot hold its minutes back.
    /// The newest record timestamp seen (the broker's: when the producer accepted it).
    pub fn last_record(&self) -> Option<i64> {
        self.last_record_ts
    }

    pub fn idle_delay(&self, frontier: i64, slack_ms: i64) -> Option<i64> {
        if self.catching_up || self.support() < MIN_SUPPORT {
            return None;
        }
        let lag = self.last_record_ts? - frontier;
        let delay = self.quantile()?.clamp(lag, lag + slack_ms).max(0);
        (delay <= MAX_FEED_DELAY_MS).then_some(delay)
    }
}

#[cfg(test)]
mod tests;
