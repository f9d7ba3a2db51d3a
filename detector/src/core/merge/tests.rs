use std::collections::BTreeMap;

use super::*;
use crate::core::counts::marker;

const T0: i64 = 1_765_713_600_000;

fn window(src: i32, parts: i32, minute: i64, wm: i64, approved: i64, denied: i64) -> MinutePartial {
    MinutePartial {
        source_partition: src,
        partition_count: parts,
        kind: PartialKind::Window,
        watermark: wm,
        minute_start: Some(minute),
        approved,
        denied,
        failed: 0,
        reversed: 0,
        auth_codes: BTreeMap::from([("00".to_string(), approved)]),
        categories: vec![],
    }
}

fn aggregates(out: &[Stage2Output]) -> Vec<(i64, i64, i32)> {
    out.iter()
        .filter_map(|o| {
            if let Stage2Output::Aggregate(a) = o {
                Some((a.minute_start, a.total, a.source_partitions))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn a_minute_is_final_only_when_every_partition_is_past_it_or_idle() {
    let cfg = CoreConfig::default();
    let mut m = MergeState::new();
    assert!(m.on_partial(&window(0, 3, T0, T0 + 60_000, 5, 0), &cfg).is_empty());
    assert!(m.on_partial(&window(1, 3, T0, T0 + 70_000, 2, 1), &cfg).is_empty());
    // Partition 2 has said nothing yet: wait.
    let out = m.on_partial(&marker(PartialKind::Idle, 2, 3, i64::MIN), &cfg);
    assert_eq!(aggregates(&out), vec![(T0, 8, 2)]);
}

#[test]
fn re_sent_partials_count_once_and_truly_late_ones_are_booked() {
    let cfg = CoreConfig::default();
    let mut m = MergeState::new();
    m.on_partial(&window(0, 2, T0, T0 + 60_000, 5, 0), &cfg);
    m.on_partial(&window(0, 2, T0, T0 + 60_000, 5, 0), &cfg); // a restarted stage 1 re-sends
    let out = m.on_partial(&window(1, 2, T0, T0 + 60_000, 1, 0), &cfg);
    assert_eq!(aggregates(&out), vec![(T0, 6, 2)]);
    let again = m.on_partial(&window(1, 2, T0, T0 + 60_000, 1, 0), &cfg);
    assert!(again.is_empty(), "{again:?}");
    // Partition 1 idles, the other moves on; then 1 resumes with a minute already final.
    m.on_partial(&marker(PartialKind::Idle, 1, 2, T0 + 60_000), &cfg);
    let out = m.on_partial(&window(0, 2, T0 + 60_000, T0 + 185_000, 3, 0), &cfg);
    // The watermark is past T0 + 120 s too: a final minute without transactions (total 0).
    assert_eq!(aggregates(&out), vec![(T0 + 60_000, 3, 1), (T0 + 120_000, 0, 0)]);
    let late = m.on_partial(&window(1, 2, T0 + 120_000, T0 + 200_000, 4, 0), &cfg);
    assert_eq!(
        late,
        vec![Stage2Output::Late(LateEvents { minute_start: T0 + 120_000, source: "merge:p1".into(), late_count: 4 })]
    );
}

#[test]
fn minutes_are_final_in_order_whatever_order_partials_arrive_in() {
    let cfg = CoreConfig::default();
    let a = [window(0, 2, T0, T0 + 60_000, 1, 0), window(0, 2, T0 + 60_000, T0 + 120_000, 2, 0)];
    let b = [window(1, 2, T0, T0 + 60_000, 3, 0), window(1, 2, T0 + 60_000, T0 + 120_000, 4, 0)];
    let orders: [Vec<&MinutePartial>; 3] =
        [vec![&a[0], &a[1], &b[0], &b[1]], vec![&b[0], &b[1], &a[0], &a[1]], vec![&a[0], &b[0], &b[1], &a[1]]];
    let mut results = Vec::new();
    for order in orders {
        let mut m = MergeState::new();
        let out: Vec<_> = order.into_iter().flat_map(|p| m.on_partial(p, &cfg)).collect();
        results.push(aggregates(&out));
    }
    assert_eq!(results[0], vec![(T0, 4, 2), (T0 + 60_000, 6, 2)]);
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
}

#[test]
fn a_partial_beyond_the_future_skew_of_its_record_timestamp_is_recognised() {
    let cfg = CoreConfig::default();
    let ts = T0 + 10 * 60_000;
    // The newest minute stage 1 can close: the one holding an event MAX_FUTURE_SKEW ahead.
    let newest = ts + cfg.max_future_skew_ms;
    let minute = newest - newest % 60_000;
    assert!(!is_from_the_future(&window(0, 3, minute, minute + 60_000, 1, 0), ts, &cfg));
    assert!(!is_from_the_future(&window(0, 3, T0, T0 + 60_000, 1, 0), ts, &cfg), "the past is fine");
    let year = 365 * 24 * 60 * 60_000;
    assert!(is_from_the_future(&window(0, 3, T0 + year, T0 + year + 60_000, 1, 0), ts, &cfg));
    assert!(is_from_the_future(&marker(PartialKind::Progress, 0, 3, ts + year), ts, &cfg));
}
