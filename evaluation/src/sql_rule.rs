//! The older design's rule: the logic of the `v_tx_anomaly` view
//! (`migrations/20261122000003_tx_anomaly_view.sql`) over the detector's final minutes.
//!
//! Per minute with traffic and per status (denied, failed, reversed): the baseline is the
//! 30 preceding minutes with traffic, anomalous ones included; the minute is flagged when the
//! baseline has at least 10 minutes, the minute has at least 5 transactions of the status, and
//! `rate ≥ mean + 4 · max(stddev, 0.005, √(pooled·(1 − pooled)/total))`, with `mean` and the
//! sample `stddev` taken over the baseline minutes' rates and `pooled` = Σ count / Σ total.
//!
//! The view flags minutes; it has no notion of an incident. For counting, a run of consecutive
//! flagged minutes (consecutive among the minutes with traffic) is one anomaly: it fires on
//! its first minute, is updated on each further one and resolves on the first minute not
//! flagged (`resolved_at` = that minute's end, as the detector dates a resolution). Only the
//! three global rates exist in the view: no auth codes, categories or merchants.

use vigil_schemas::{AnomalyState, MinuteAggregate, TransactionStatus};

use crate::score::{Emission, MINUTE_MS};

/// The statuses the view watches, in its column order.
pub const STATUSES: [TransactionStatus; 3] =
    [TransactionStatus::Denied, TransactionStatus::Failed, TransactionStatus::Reversed];

const BASELINE_MINUTES: usize = 30;
const MIN_BASELINE: usize = 10;
const MIN_COUNT: i64 = 5;
const Z: f64 = 4.0;
const SPREAD_FLOOR: f64 = 0.005;

/// The view's three flags for every minute with traffic, in minute order:
/// `(minute, [denied, failed, reversed])`.
pub fn flags(aggregates: &[MinuteAggregate]) -> Vec<(i64, [bool; 3])> {
    let mut minutes: Vec<&MinuteAggregate> = aggregates.iter().collect();
    minutes.sort_by_key(|a| a.minute_start);
    minutes.dedup_by_key(|a| a.minute_start);
    let mut out = Vec::with_capacity(minutes.len());
    for (i, m) in minutes.iter().enumerate() {
        if m.total <= 0 {
            continue;
        }
        // The 30 preceding minutes (the view reads the newest 120 rows, four per minute), then
        // those with traffic.
        let baseline: Vec<&&MinuteAggregate> =
            minutes[i.saturating_sub(BASELINE_MINUTES)..i].iter().filter(|p| p.total > 0).collect();
        let n = baseline.len();
        let mut f = [false; 3];
        for (k, status) in STATUSES.into_iter().enumerate() {
            if n < MIN_BASELINE {
                continue;
            }
            let rates: Vec<f64> = baseline.iter().map(|p| p.count(status) as f64 / p.total as f64).collect();
            let mean = rates.iter().sum::<f64>() / n as f64;
            let stddev = if n > 1 {
                (rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
            } else {
                0.0
            };
            let (c, t) = baseline.iter().fold((0i64, 0i64), |(c, t), p| (c + p.count(status), t + p.total));
            let pooled = c as f64 / t as f64;
            let count = m.count(status);
            let rate = count as f64 / m.total as f64;
            let spread = stddev.max(SPREAD_FLOOR).max((pooled * (1.0 - pooled) / m.total as f64).sqrt());
            f[k] = count >= MIN_COUNT && rate >= mean + Z * spread;
        }
        out.push((m.minute_start, f));
    }
    out
}

/// The flagged minutes as anomalies, one per run of consecutive flagged minutes and status.
pub fn emissions(aggregates: &[MinuteAggregate]) -> Vec<Emission> {
    let flagged = flags(aggregates);
    let mut out = Vec::new();
    for (k, status) in STATUSES.into_iter().enumerate() {
        let rule = format!("{status}_rate");
        let mut open: Option<String> = None;
        for (minute, f) in &flagged {
            let state = match (&open, f[k]) {
                (None, true) => {
                    open = Some(format!("sql:{rule}:{minute}"));
                    AnomalyState::Firing
                }
                (Some(_), true) => AnomalyState::Updated,
                (Some(_), false) => AnomalyState::Resolved,
                (None, false) => continue,
            };
            let id = open.clone().unwrap_or_default();
            if state == AnomalyState::Resolved {
                open = None;
            }
            out.push(Emission {
                id,
                rule: rule.clone(),
                dimension: "global".into(),
                value: "all".into(),
                state,
                minute: *minute,
                resolved_at: (state == AnomalyState::Resolved).then_some(minute + MINUTE_MS),
            });
        }
    }
    out.sort_by_key(|e| e.minute);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn minute(i: i64, total: i64, denied: i64) -> MinuteAggregate {
        MinuteAggregate {
            minute_start: i * MINUTE_MS,
            total,
            approved: total - denied,
            denied,
            failed: 0,
            reversed: 0,
            auth_codes: Default::default(),
            categories: vec![],
            source_partitions: 1,
            expected_total: None,
            expected_low: None,
            expected_high: None,
        }
    }

    /// 40 minutes of 200 transactions with 6 % denied (12, ±1 alternating), then `spike`.
    fn day(spike: &[(i64, i64)]) -> Vec<MinuteAggregate> {
        let mut v: Vec<MinuteAggregate> =
            (0..40).map(|i| minute(i, 200, 12 + if i % 2 == 0 { 1 } else { -1 })).collect();
        v.extend(spike.iter().enumerate().map(|(k, (t, d))| minute(40 + k as i64, *t, *d)));
        v
    }

    #[test]
    fn a_minute_is_flagged_at_four_spreads_above_the_baseline_mean_with_five_matching_transactions() {
        // Baseline: mean 6 %, stddev ≈ 0.5 %, binomial spread at 200: √(0.06·0.94/200) ≈ 1.68 %:
        // the threshold is 6 % + 4 × 1.68 % ≈ 12.7 %, i.e. 26 of 200.
        let f = flags(&day(&[(200, 25), (200, 27)]));
        assert_eq!(f.len(), 42);
        assert_eq!(f[40].1, [false, false, false], "25 of 200 is below the threshold");
        // Minute 40 is in minute 41's baseline: threshold about 13.0 %.
        assert_eq!(f[41].1, [true, false, false], "27 of 200 is above");
        // Nothing before the baseline has 10 minutes; fewer than 5 denied never flags.
        let f = flags(&[minute(0, 10, 9), minute(1, 10, 0)]);
        assert!(f.iter().all(|(_, x)| !x[0]));
        let mut quiet: Vec<MinuteAggregate> = (0..20).map(|i| minute(i, 100, 0)).collect();
        quiet.push(minute(20, 100, 4));
        assert!(!flags(&quiet)[20].1[0], "4 denied of 100 against a baseline of 0 %");
    }

    #[test]
    fn consecutive_flagged_minutes_are_one_anomaly_resolved_by_the_first_minute_not_flagged() {
        // A second spike once the first has left the 30-minute baseline.
        let mut spike = vec![(200, 60), (200, 60)];
        spike.extend((0..31).map(|_| (200, 12)));
        spike.extend([(200, 60), (200, 12)]);
        let e = emissions(&day(&spike));
        let states: Vec<(i64, AnomalyState)> = e.iter().map(|x| (x.minute / MINUTE_MS, x.state)).collect();
        assert_eq!(
            states,
            vec![
                (40, AnomalyState::Firing),
                (41, AnomalyState::Updated),
                (42, AnomalyState::Resolved),
                (73, AnomalyState::Firing),
                (74, AnomalyState::Resolved),
            ]
        );
        assert_eq!(e[2].resolved_at, Some(43 * MINUTE_MS));
        assert_ne!(e[0].id, e[3].id);
        assert!(e.iter().all(|x| x.rule == "denied_rate" && x.dimension == "global" && x.value == "all"));
    }

    #[test]
    fn the_baseline_keeps_flagged_minutes_so_a_long_incident_stops_being_flagged() {
        // The view's documented difference from the detector: after enough incident minutes the
        // baseline has absorbed them.
        let spike: Vec<(i64, i64)> = (0..30).map(|_| (200, 40)).collect();
        let f = flags(&day(&spike));
        assert!(f[40].1[0]);
        assert!(!f[69].1[0], "still flagged after 30 minutes of 20 %");
    }
}
