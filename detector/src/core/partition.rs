//! Stage 1: everything one input partition decides on its own.
//!
//! Per partition: duplicate check, amount rules (baselines are partition-local because the
//! topic is keyed by category), one-minute tumbling windows on event time with a watermark,
//! and partial minute counts for the merge stage.
//!
//! * A window is `[start, start + 60 s)`: start inclusive, end exclusive.
//! * Watermark = highest event time seen − allowed lateness. A window is final (emitted once,
//!   as a `window` partial) when the watermark reaches its end.
//! * An event for a window that is already final is **late**: it does not amend the emitted
//!   counts; it is booked in a cumulative late counter for its minute (a `LateEvents` output)
//!   and in a metric, so the books still balance. Its amount is still judged.
//! * Whenever the watermark enters a new minute, a `progress` partial tells the merge stage this
//!   partition is complete up to there (after the window partials it closed, which each claim
//!   only their own end).
//! * [`PartitionState::go_idle`] is called by the service, with the wall clock, when no record
//!   arrived for the idle timeout. Event time is taken to move on with the wall clock, less the
//!   feed's learned delay ([`FeedDelay`]), and the watermark follows it (minus the allowed
//!   lateness) up to the end of the minute of the highest event time; once there, every open
//!   window is closed and an `idle` marker tells the merge stage to stop waiting for this
//!   partition. The next event makes it active again.
//!
//! All of it is a deterministic function of the partition's records in offset order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_schemas::{Anomaly, AnomalyDimension, LateEvents, MerchantMinute, MinutePartial, PartialKind, Transaction};

use super::amount::{AmountBaselines, AmountScore};
use super::breakdown::Breakdown;
use super::config::{minute_of, CoreConfig, MINUTE_MS};
use super::counts::{marker, MinuteCounts};
use super::dedup::{id_key, Dedup};
use super::legacy::{PartitionStateV2, PartitionStateV3, PartitionStateV4};
use super::volume::{KeyVolumes, Keys};

mod delay;
pub use delay::FeedDelay;

/// The wall clock [`PartitionState::go_idle`] is given at the end of a replay: every window
/// closes, and no time is taken to have passed after the last event.
pub const END_OF_INPUT: i64 = i64::MAX;

/// What stage 1 emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage1Output {
    Partial(MinutePartial),
    Late(LateEvents),
    Anomaly(Anomaly),
    /// A watched merchant's counts in one category and final minute (for the drill-down).
    MerchantMinute(MerchantMinute),
}

/// Why an event was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Event time further after the record timestamp than the allowed skew.
    FromTheFuture,
    /// Older than watermark − late horizon.
    TooOld,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::FromTheFuture => "occurred_at is further in the future than MAX_FUTURE_SKEW allows",
            Refusal::TooOld => "occurred_at is older than the watermark minus LATE_HORIZON",
        }
    }
}

/// The fate of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Counted,
    /// Counted as late for its (already final) minute.
    Late,
    Duplicate,
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub verdict: Verdict,
    /// False when the event was older than the dedup horizon and could not be checked.
    pub dedup_checked: bool,
    pub outputs: Vec<Stage1Output>,
    pub amount_scores: Vec<AmountScore>,
    pub windows_closed: usize,
}

/// The state of one input partition. Serializable: it is what a checkpoint holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionState {
    pub partition: i32,
    pub partition_count: i32,
    max_event_time: Option<i64>,
    /// `i64::MIN` until the first event.
    watermark: i64,
    /// The watermark last told to the merge stage.
    reported: i64,
    open: BTreeMap<i64, MinuteCounts>,
    /// Cumulative late counts of final minutes, kept for the dedup horizon.
    late: BTreeMap<i64, i64>,
    dedup: Dedup,
    amounts: AmountBaselines,
    idle: bool,
    /// How far the feed trails the clock, learned from record timestamps (checkpoint version 3).
    delay: FeedDelay,
    /// Rates per category and per merchant (checkpoint version 3).
    breakdown: Breakdown,
    /// Volumes per category and per merchant (checkpoint version 4).
    volumes: KeyVolumes,
}

impl PartitionState {
    pub fn new(partition: i32, partition_count: i32) -> Self {
        PartitionState {
            partition,
            partition_count,
            max_event_time: None,
            watermark: i64::MIN,
            reported: i64::MIN,
            open: BTreeMap::new(),
            late: BTreeMap::new(),
            dedup: Dedup::default(),
            amounts: AmountBaselines::default(),
            idle: false,
            delay: FeedDelay::default(),
            breakdown: Breakdown::default(),
            volumes: KeyVolumes::default(),
        }
    }

    /// A state restored from a checkpoint of version 4, before the profile of earlier days.
    pub fn from_v4(v4: PartitionStateV4) -> Self {
        PartitionState { volumes: KeyVolumes::from_v4(v4.volumes), ..PartitionState::from_v3(v4.v3) }
    }

    /// A state restored from a checkpoint of version 3, before the volume rules: its
    /// categories' and merchants' volume series start afresh.
    pub fn from_v3(v3: PartitionStateV3) -> Self {
        let PartitionStateV3 {
            partition,
            partition_count,
            max_event_time,
            watermark,
            reported,
            open,
            late,
            dedup,
            amounts,
            idle,
            delay,
            breakdown,
        } = v3;
        PartitionState {
            partition,
            partition_count,
            max_event_time,
            watermark,
            reported,
            open,
            late,
            dedup,
            amounts,
            idle,
            delay,
            breakdown,
            volumes: KeyVolumes::default(),
        }
    }

    /// A state restored from a checkpoint of version 1 or 2, which had no learned delay: it is
    /// learned again from the records that follow (until then idleness treats the partition as
    /// those versions did).
    pub fn from_v2(v2: PartitionStateV2) -> Self {
        let PartitionStateV2 {
            partition,
            partition_count,
            max_event_time,
            watermark,
            reported,
            open,
            late,
            dedup,
            amounts,
            idle,
        } = v2;
        PartitionState::from_v3(PartitionStateV3 {
            partition,
            partition_count,
            max_event_time,
            watermark,
            reported,
            open,
            late,
            dedup,
            amounts,
            idle,
            delay: FeedDelay::default(),
            breakdown: Breakdown::default(),
        })
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    pub fn is_idle(&self) -> bool {
        self.idle
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    pub fn dedup_entries(&self) -> usize {
        self.dedup.len()
    }

    pub fn amount_keys(&self) -> usize {
        self.amounts.key_count()
    }

    /// Categories and merchants whose rates are watched.
    pub fn breakdown_watched(&self) -> (usize, usize) {
        self.breakdown.watched()
    }

    /// Volume series held: (categories, merchants).
    pub fn volume_series(&self) -> (usize, usize) {
        self.volumes.series()
    }

    /// The feed's learned delay.
    pub fn feed_delay(&self) -> &FeedDelay {
        &self.delay
    }

    /// Processes one event. `record_ts` is the broker record's timestamp (set by the producer
    /// when it accepted the event); it bounds event time from above deterministically.
    pub fn process(&mut self, tx: &Transaction, record_ts: i64, cfg: &CoreConfig) -> Step {
        let mut step = Step {
            verdict: Verdict::Counted,
            dedup_checked: true,
            outputs: Vec::new(),
            amount_scores: Vec::new(),
            windows_closed: 0,
        };
        let t = tx.occurred_at;
        if t > record_ts.saturating_add(cfg.max_future_skew_ms) {
            step.verdict = Verdict::Refused(Refusal::FromTheFuture);
            return step;
        }
        if self.watermark != i64::MIN && t < self.watermark.saturating_sub(cfg.late_horizon_ms) {
            step.verdict = Verdict::Refused(Refusal::TooOld);
            return step;
        }
        step.dedup_checked = self.watermark == i64::MIN || t >= self.watermark.saturating_sub(cfg.dedup_horizon_ms);
        if step.dedup_checked && !self.dedup.insert(id_key(&tx.transaction_id), t) {
            // A re-send still tells how late the feed delivers.
            self.learn_delay(t, record_ts, cfg);
            step.verdict = Verdict::Duplicate;
            return step;
        }
        self.idle = false;

        // Settings changed at run time apply by the transaction's event time (core::settings).
        let overridden = cfg.settings.amount_for(&cfg.amount, tx);
        let (anomalies, scores) = self.amounts.judge(tx, overridden.as_ref().unwrap_or(&cfg.amount));
        step.outputs.extend(anomalies.into_iter().map(Stage1Output::Anomaly));
        step.amount_scores = scores;

        let minute = minute_of(t);
        if self.watermark != i64::MIN && minute + MINUTE_MS <= self.watermark {
            let n = self.late.entry(minute).or_default();
            *n += 1;
            step.outputs.push(Stage1Output::Late(LateEvents {
                minute_start: minute,
                source: format!("p{}", self.partition),
                late_count: *n,
            }));
            step.verdict = Verdict::Late;
        } else {
            self.open.entry(minute).or_default().add(tx);
            self.breakdown.add(minute, tx, &cfg.rate);
        }

        if self.max_event_time.is_none_or(|m| t > m) {
            self.max_event_time = Some(t);
            let wm = t - cfg.allowed_lateness_ms;
            step.windows_closed = self.advance(wm, &mut step.outputs);
        }
        self.learn_delay(t, record_ts, cfg);
        self.evict(cfg);
        self.judge_keys(cfg, &mut step.outputs);
        step
    }

    /// Every record not refused teaches the feed's delay (late ones and re-sends too: they are
    /// how late the feed delivers).
    fn learn_delay(&mut self, t: i64, record_ts: i64, cfg: &CoreConfig) {
        let frontier = self.max_event_time.map_or(t, |m| m.max(t));
        self.delay.observe(t, record_ts, frontier, cfg.allowed_lateness_ms);
    }

    /// Moves the watermark to `wm` (if later), closing windows it passes.
    ///
    /// Each window partial claims completeness only up to its own end, and a progress marker
    /// follows when the watermark is in a later minute still: the merge stage must never learn
    /// of a watermark before the windows it covers.
    fn advance(&mut self, wm: i64, out: &mut Vec<Stage1Output>) -> usize {
        if wm <= self.watermark {
            return 0;
        }
        self.watermark = wm;
        let closed = self.close_until(wm, out);
        if self.reported == i64::MIN || minute_of(wm) > minute_of(self.reported) {
            self.reported = wm;
            out.push(Stage1Output::Partial(marker(PartialKind::Progress, self.partition, self.partition_count, wm)));
        }
        closed
    }

    /// Emits every open window ending at or before `wm`, oldest first.
    fn close_until(&mut self, wm: i64, out: &mut Vec<Stage1Output>) -> usize {
        let mut closed = 0;
        while let Some(entry) = self.open.first_entry() {
            let minute = *entry.key();
            if minute + MINUTE_MS > wm {
                break;
            }
            let counts = entry.remove();
            self.reported = self.reported.max(minute + MINUTE_MS);
            out.push(Stage1Output::Partial(counts.to_partial(
                self.partition,
                self.partition_count,
                minute,
                minute + MINUTE_MS,
            )));
            closed += 1;
        }
        closed
    }

    /// The partition saw nothing for the idle timeout; `now_ms` is the wall clock. Event time is
    /// taken to have moved on with the wall clock while nothing arrived, less the feed's delay:
    /// the watermark moves to the start of the minute holding `now_ms − delay − allowed
    /// lateness`, but never past the end of the minute holding the highest event time. When it
    /// reaches that end, every window is closed and an `idle` marker tells the merge stage not to
    /// wait for this partition. Until then (a quiet partition of a live stream, whose current
    /// minute can still receive punctual events) only the windows the wall clock has passed are
    /// closed, and the partition stays active: a pause in live traffic never turns the rest of
    /// the minute's events into late ones, however far behind the clock the feed is stamped.
    ///
    /// The delay is [`FeedDelay::idle_delay`]: learned from the records, at least the lag of the
    /// highest event time behind the newest record's timestamp. A replayed or back-filled stream
    /// (event time outran record time), or one whose delay rests on too few records or exceeds
    /// the longest delay a live feed is granted, has none: stamped in the past, it closes at once.
    ///
    /// Returns nothing when already idle, or when the wall clock moves nothing.
    pub fn go_idle(&mut self, now_ms: i64, cfg: &CoreConfig) -> Vec<Stage1Output> {
        let mut out = self.idle_step(now_ms, cfg);
        self.judge_keys(cfg, &mut out);
        out
    }

    /// Per-category and per-merchant rates and volumes of every minute the watermark has closed.
    fn judge_keys(&mut self, cfg: &CoreConfig, out: &mut Vec<Stage1Output>) {
        if self.watermark == i64::MIN {
            return;
        }
        let last_final = minute_of(self.watermark) - MINUTE_MS;
        let closed = self.breakdown.close(last_final, &cfg.rate);
        out.extend(closed.anomalies.into_iter().map(Stage1Output::Anomaly));
        out.extend(closed.merchant_minutes.into_iter().map(Stage1Output::MerchantMinute));
        let breakdown = &self.breakdown;
        let keys = Keys {
            watched: &|d: AnomalyDimension, key: &str| breakdown.is_watched(d, key),
            known: &|d: AnomalyDimension, key: &str| breakdown.is_known(d, key),
            limit: cfg.rate.max_keyed_series,
        };
        let volume = self.volumes.close(last_final, &closed.totals, &keys, &cfg.volume);
        out.extend(volume.into_iter().map(Stage1Output::Anomaly));
    }

    fn idle_step(&mut self, now_ms: i64, cfg: &CoreConfig) -> Vec<Stage1Output> {
        if self.idle {
            return self.idle_horizon(now_ms, cfg);
        }
        let mut out = Vec::new();
        if let Some(max) = self.max_event_time {
            let end = minute_of(max) + MINUTE_MS;
            let delay = self.delay.idle_delay(max, cfg.allowed_lateness_ms).unwrap_or(0);
            // Whole minutes only: every move then closes a window or reports progress, so
            // every state change the wall clock makes is an output (and checkpointed).
            let reachable = minute_of(end.min(now_ms.saturating_sub(delay).saturating_sub(cfg.allowed_lateness_ms)));
            if reachable < end {
                self.advance(reachable, &mut out);
                return out;
            }
            if end > self.watermark {
                self.watermark = end;
                self.close_until(end, &mut out);
            }
        }
        self.idle = true;
        self.reported = self.reported.max(self.watermark);
        // A partition that never saw an event reports the epoch: "complete up to nothing yet"
        // (a timestamp any reader can represent, unlike the internal i64::MIN).
        let wm = if self.watermark == i64::MIN { 0 } else { self.watermark };
        out.push(Stage1Output::Partial(marker(PartialKind::Idle, self.partition, self.partition_count, wm)));
        out
    }

    /// An idle partition of a live feed: time moves on with the wall clock less the feed's
    /// delay and the allowed lateness, and the minutes it passes are final, without a
    /// transaction. The watermark follows it in whole minutes (an `idle` marker for each), so a
    /// feed that stops has its quiet minutes judged (the volume rules). A feed that is not a
    /// live one (a back-fill or replay, see [`FeedDelay::idle_delay`]) stays where its events
    /// left it: its time is its events'. Nor does a feed whose newest record the broker took
    /// more than `max_gap_minutes` (a day) before `now_ms`: its records were not read live (a
    /// topic read long after it was written), or its stop is older than the volume rules judge
    /// anyway. [`END_OF_INPUT`] moves nothing; nor does anything with the volume rules off
    /// (nothing would judge the quiet minutes).
    fn idle_horizon(&mut self, now_ms: i64, cfg: &CoreConfig) -> Vec<Stage1Output> {
        let mut out = Vec::new();
        if now_ms == END_OF_INPUT || !cfg.volume.enabled {
            return out;
        }
        let Some(max) = self.max_event_time else { return out };
        let Some(newest) = self.delay.last_record() else { return out };
        if now_ms.saturating_sub(newest) > cfg.volume.max_gap_minutes.saturating_mul(MINUTE_MS) {
            return out;
        }
        let Some(delay) = self.delay.idle_delay(max, cfg.allowed_lateness_ms) else { return out };
        let horizon = minute_of(now_ms.saturating_sub(delay).saturating_sub(cfg.allowed_lateness_ms));
        if horizon > self.watermark {
            self.watermark = horizon;
            self.reported = horizon;
            out.push(Stage1Output::Partial(marker(PartialKind::Idle, self.partition, self.partition_count, horizon)));
        }
        out
    }

    fn evict(&mut self, cfg: &CoreConfig) {
        if self.watermark == i64::MIN {
            return;
        }
        self.dedup.evict_before(self.watermark.saturating_sub(cfg.dedup_horizon_ms));
        let late_cutoff = self.watermark.saturating_sub(cfg.late_horizon_ms);
        while self.late.first_key_value().is_some_and(|(m, _)| *m + MINUTE_MS < late_cutoff) {
            self.late.pop_first();
        }
    }
}

#[cfg(test)]
mod tests;
