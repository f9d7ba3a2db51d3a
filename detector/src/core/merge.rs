//! Stage 2: merges the partials of every input partition into final minutes, and runs the
//! rate rules on them.
//!
//! A minute is final when every input partition is either idle or has a watermark at or past
//! the minute's end. Each partition sends its window partials in strictly increasing minute
//! order, so a partial for a minute at or below the highest one already received from that
//! partition is a re-send (a restarted or rebalanced stage 1 repeats what it sent after its last
//! checkpoint, identically) and counts once. Minutes are finalised strictly in order, so the rate baselines
//! see the same sequence whatever order partials from different partitions arrived in. A
//! window partial for an already final minute (only possible from a partition that had been
//! declared idle) is booked as late for that minute.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use vigil_schemas::{
    Anomaly, AnomalyDimension, AnomalyRule, LateEvents, MinuteAggregate, MinutePartial, PartialKind, TransactionStatus,
};

use super::config::{CoreConfig, MINUTE_MS};
use super::counts::MinuteCounts;
use super::legacy::{MergeStateV2, MergeStateV3, MergeStateV4};
use super::rate::{Point, RateSeries};
use super::volume::VolumeSeries;

#[derive(Debug, Clone, PartialEq)]
pub enum Stage2Output {
    Aggregate(MinuteAggregate),
    Late(LateEvents),
    Anomaly(Anomaly),
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Source {
    watermark: Option<i64>,
    idle: bool,
    /// Highest minute a window partial was received for.
    high_minute: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Pending {
    counts: MinuteCounts,
    sources: BTreeSet<i32>,
}

/// Auth codes that mean "approved"; every other code gets a rate series of its own.
pub const APPROVAL_CODES: [&str; 1] = ["00"];
/// At most this many auth-code series (a bound on state whatever codes clients send).
pub const MAX_AUTH_CODE_SERIES: usize = 200;

/// Whether a partial claims event time further after its broker record timestamp than stage 1
/// can: stage 1 refuses events more than `MAX_FUTURE_SKEW` after their own record timestamp,
/// reports at most the end of the minute holding the newest event it accepted, and writes a
/// partial after the events it covers; one more minute allows for the clocks of the
/// producer's and the detector's hosts to differ. Such a partial (a poison message) would make
/// every later partial of its source partition look like a re-send, losing its counts.
pub fn is_from_the_future(p: &MinutePartial, record_ts: i64, cfg: &CoreConfig) -> bool {
    let limit = record_ts.saturating_add(cfg.max_future_skew_ms).saturating_add(2 * MINUTE_MS);
    p.watermark > limit || p.minute_start.is_some_and(|m| m > limit)
}

/// The merge stage's whole state. Serializable: it is what its checkpoint holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MergeState {
    partition_count: i32,
    sources: BTreeMap<i32, Source>,
    pending: BTreeMap<i64, Pending>,
    /// Every minute before this is final.
    frontier: Option<i64>,
    late: BTreeMap<(i64, i32), i64>,
    status_series: Vec<RateSeries>,
    auth_series: BTreeMap<String, RateSeries>,
    /// Totals of the most recent final minutes, to seed a newly seen auth code's history.
    recent_totals: VecDeque<(i64, i64)>,
    /// Transactions per minute, all of them (checkpoint version 4).
    volume: VolumeSeries,
}

impl MergeState {
    pub fn new() -> Self {
        MergeState {
            status_series: vec![
                RateSeries::new(AnomalyRule::DeniedRate, AnomalyDimension::Global, "all"),
                RateSeries::new(AnomalyRule::FailedRate, AnomalyDimension::Global, "all"),
                RateSeries::new(AnomalyRule::ReversedRate, AnomalyDimension::Global, "all"),
            ],
            volume: VolumeSeries::new(AnomalyDimension::Global, "all"),
            ..Default::default()
        }
    }

    /// The state a checkpoint of version 4 held, before the profile of earlier days.
    pub fn from_v4(v4: MergeStateV4) -> Self {
        MergeState { volume: VolumeSeries::from_v4(v4.volume), ..MergeState::from_v3(v4.v3) }
    }

    /// The state a checkpoint of version 3 held, before the volume rules: the global volume
    /// series starts afresh.
    pub fn from_v3(v3: MergeStateV3) -> Self {
        MergeState {
            partition_count: v3.partition_count,
            sources: v3
                .sources
                .into_iter()
                .map(|(p, s)| (p, Source { watermark: s.watermark, idle: s.idle, high_minute: s.high_minute }))
                .collect(),
            pending: v3
                .pending
                .into_iter()
                .map(|(m, p)| (m, Pending { counts: p.counts, sources: p.sources }))
                .collect(),
            frontier: v3.frontier,
            late: v3.late,
            status_series: v3.status_series,
            auth_series: v3.auth_series,
            recent_totals: v3.recent_totals,
            volume: VolumeSeries::new(AnomalyDimension::Global, "all"),
        }
    }

    /// The state a checkpoint of version 1 or 2 held: sources, pending minutes and late books
    /// as they were; each rate series keeps its baseline minutes and its open incident.
    pub fn from_v2(v2: MergeStateV2) -> Self {
        MergeState::from_v3(MergeStateV3 {
            partition_count: v2.partition_count,
            sources: v2.sources,
            pending: v2.pending,
            frontier: v2.frontier,
            late: v2.late,
            status_series: v2.status_series.into_iter().map(RateSeries::from_v2).collect(),
            auth_series: v2.auth_series.into_iter().map(|(k, s)| (k, RateSeries::from_v2(s))).collect(),
            recent_totals: v2.recent_totals,
        })
    }

    pub fn frontier(&self) -> Option<i64> {
        self.frontier
    }

    pub fn pending_minutes(&self) -> usize {
        self.pending.len()
    }

    pub fn active_anomalies(&self) -> usize {
        self.status_series.iter().chain(self.auth_series.values()).filter(|s| s.is_active()).count()
            + usize::from(self.volume.is_active())
    }

    /// Takes one partial; returns whatever became final.
    pub fn on_partial(&mut self, p: &MinutePartial, cfg: &CoreConfig) -> Vec<Stage2Output> {
        let mut out = Vec::new();
        self.partition_count = self.partition_count.max(p.partition_count);
        let src = self.sources.entry(p.source_partition).or_default();
        src.watermark = Some(src.watermark.map_or(p.watermark, |w| w.max(p.watermark)));
        src.idle = p.kind == PartialKind::Idle;

        if let (PartialKind::Window, Some(minute)) = (p.kind, p.minute_start) {
            let key = (minute, p.source_partition);
            if src.high_minute.is_none_or(|h| minute > h) {
                src.high_minute = Some(minute);
                let counts = MinuteCounts::from_partial(p);
                if self.frontier.is_some_and(|f| minute < f) {
                    let n = self.late.entry(key).or_default();
                    *n += counts.total();
                    out.push(Stage2Output::Late(LateEvents {
                        minute_start: minute,
                        source: format!("merge:p{}", p.source_partition),
                        late_count: *n,
                    }));
                } else {
                    let pending = self.pending.entry(minute).or_default();
                    pending.counts.merge(&counts);
                    pending.sources.insert(p.source_partition);
                }
            }
        }
        self.finalise(cfg, &mut out);
        out
    }

    /// The time up to which every partition is complete: +∞ when all are idle.
    fn global_watermark(&self) -> Option<i64> {
        let mut wm = i64::MAX;
        for part in 0..self.partition_count {
            match self.sources.get(&part) {
                Some(s) if s.idle => {}
                Some(Source { watermark: Some(w), .. }) => wm = wm.min(*w),
                _ => return None,
            }
        }
        Some(wm)
    }

    fn finalise(&mut self, cfg: &CoreConfig, out: &mut Vec<Stage2Output>) {
        let Some(wm) = self.global_watermark() else { return };
        while let Some(minute) = self.pending.keys().next().copied() {
            if minute.saturating_add(MINUTE_MS) > wm {
                break;
            }
            self.quiet_until(minute, cfg, out);
            let Some(pending) = self.pending.remove(&minute) else { break };
            self.frontier = Some(self.frontier.map_or(minute + MINUTE_MS, |f| f.max(minute + MINUTE_MS)));
            self.judge(minute, &pending.counts, pending.sources.len() as i32, cfg, out);
        }
        // Minutes before the one holding the watermark are final, with data or without; when
        // every partition is idle, those before the one holding the earliest horizon an idle
        // partition of a live feed has reported past the frontier (see `PartitionState::go_idle`).
        let until = if wm != i64::MAX {
            Some(super::config::minute_of(wm))
        } else {
            let frontier = self.frontier.unwrap_or(i64::MAX);
            self.sources
                .values()
                .filter_map(|s| s.watermark)
                .filter(|w| *w > frontier)
                .min()
                .map(super::config::minute_of)
        };
        if let Some(f) = until {
            self.quiet_until(f, cfg, out);
            if self.frontier.is_none_or(|old| f > old) {
                self.frontier = Some(f);
            }
        }
        if let Some(f) = self.frontier {
            let keep_from = f - cfg.late_horizon_ms.max(60 * MINUTE_MS);
            while self.late.first_key_value().is_some_and(|((m, _), _)| *m < keep_from) {
                self.late.pop_first();
            }
        }
    }

    /// The minutes from the frontier up to `until` (exclusive) had no transaction at all: with
    /// the volume rules on, each is final with a total of 0 (an aggregate, and judged), at most
    /// `max_gap_minutes` of them after the frontier.
    fn quiet_until(&mut self, until: i64, cfg: &CoreConfig, out: &mut Vec<Stage2Output>) {
        // From the first minute with a transaction on (none is quiet before traffic began).
        let (Some(frontier), Some(last)) = (self.frontier, self.volume.last()) else { return };
        if !cfg.volume.enabled {
            return;
        }
        let from = frontier.max(last + MINUTE_MS);
        let end = until.min(from.saturating_add(cfg.volume.max_gap_minutes.max(0) * MINUTE_MS));
        let mut minute = from;
        while minute < end {
            self.judge(minute, &MinuteCounts::default(), 0, cfg, out);
            minute += MINUTE_MS;
        }
    }

    /// Judges a final minute (its counts from `sources` partitions) and emits its aggregate.
    fn judge(&mut self, minute: i64, c: &MinuteCounts, sources: i32, cfg: &CoreConfig, out: &mut Vec<Stage2Output>) {
        let total = c.total();
        let volume =
            if cfg.volume.enabled { self.volume.observe(minute, total, &cfg.volume) } else { Default::default() };
        let mut aggregate = c.to_aggregate(minute, sources);
        if let Some(e) = volume.expectation {
            aggregate.expected_total = Some(e.expected);
            aggregate.expected_low = Some(e.low);
            aggregate.expected_high = Some(e.high);
        }
        out.push(Stage2Output::Aggregate(aggregate));
        if let Some(a) = volume.anomaly {
            out.push(Stage2Output::Anomaly(a));
        }
        if total == 0 {
            return;
        }
        let statuses = [TransactionStatus::Denied, TransactionStatus::Failed, TransactionStatus::Reversed];
        // The global level's false-alarm share is divided among the series judged this minute.
        let judged = self.status_series.len() + self.auth_series.len();
        for (series, status) in self.status_series.iter_mut().zip(statuses) {
            if let Some(a) = series.observe(minute, c.count(status), total, judged, &cfg.rate) {
                out.push(Stage2Output::Anomaly(a));
            }
        }
        if cfg.rate.auth_codes {
            for code in c.auth_codes.keys() {
                if APPROVAL_CODES.contains(&code.as_str())
                    || self.auth_series.contains_key(code)
                    || self.auth_series.len() >= MAX_AUTH_CODE_SERIES
                {
                    continue;
                }
                let history = self.recent_totals.iter().map(|(m, n)| Point { minute: *m, count: 0, total: *n });
                let series = RateSeries::new(AnomalyRule::AuthCodeRate, AnomalyDimension::AuthCode, code)
                    .with_history(history, &cfg.rate);
                self.auth_series.insert(code.clone(), series);
            }
            let judged = self.status_series.len() + self.auth_series.len();
            for (code, series) in &mut self.auth_series {
                let count = c.auth_codes.get(code).copied().unwrap_or(0);
                if let Some(a) = series.observe(minute, count, total, judged, &cfg.rate) {
                    out.push(Stage2Output::Anomaly(a));
                }
            }
        }
        self.recent_totals.push_back((minute, total));
        while self.recent_totals.len() > cfg.rate.baseline_minutes.max(1) {
            self.recent_totals.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
