use vigil_schemas::TransactionStatus;

use super::*;

const T0: i64 = 1_765_713_600_000; // 12:00:00Z

fn tx(id: u32, at_ms: i64, status: TransactionStatus) -> Transaction {
    Transaction {
        transaction_id: format!("00000000-0000-4000-8000-{id:012}"),
        occurred_at: T0 + at_ms,
        status,
        auth_code: if status == TransactionStatus::Approved { "00".into() } else { "05".into() },
        amount_minor: 1000,
        currency: "EUR".into(),
        category: "food".into(),
        merchant_id: "m".into(),
        received_at: 0,
    }
}

fn partials(out: &[Stage1Output]) -> Vec<&MinutePartial> {
    out.iter().filter_map(|o| if let Stage1Output::Partial(p) = o { Some(p) } else { None }).collect()
}

#[test]
fn a_window_closes_when_the_watermark_passes_its_end_and_not_before() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    let ts = |i| T0 + i;
    s.process(&tx(1, 0, TransactionStatus::Approved), ts(0), &cfg);
    s.process(&tx(2, 59_999, TransactionStatus::Denied), ts(59_999), &cfg);
    // 12:01:29.999 - 30 s = 12:00:59.999: minute 12:00 still open.
    let step = s.process(&tx(3, 89_999, TransactionStatus::Approved), ts(89_999), &cfg);
    assert!(partials(&step.outputs).iter().all(|p| p.kind != PartialKind::Window), "{step:?}");
    // 12:01:30 - 30 s = 12:01:00 = the end (exclusive) of 12:00: final now.
    let step = s.process(&tx(4, 90_000, TransactionStatus::Approved), ts(90_000), &cfg);
    let closed = partials(&step.outputs);
    assert_eq!(closed.len(), 1, "the window's own end already reports progress into 12:01");
    assert_eq!((closed[0].kind, closed[0].minute_start), (PartialKind::Window, Some(T0)));
    assert_eq!((closed[0].approved, closed[0].denied), (1, 1));
    assert_eq!(closed[0].auth_codes.get("05"), Some(&1));
    assert_eq!(closed[0].watermark, T0 + 60_000);
}

#[test]
fn the_window_start_is_inclusive_and_the_end_exclusive() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    s.process(&tx(1, 60_000, TransactionStatus::Approved), T0 + 60_000, &cfg);
    s.process(&tx(2, 119_999, TransactionStatus::Approved), T0 + 119_999, &cfg);
    s.process(&tx(3, 120_000, TransactionStatus::Approved), T0 + 120_000, &cfg);
    let out = s.go_idle(i64::MAX, &cfg);
    let counts: Vec<(Option<i64>, i64)> =
        partials(&out).iter().filter(|p| p.kind == PartialKind::Window).map(|p| (p.minute_start, p.approved)).collect();
    assert_eq!(counts, vec![(Some(T0 + 60_000), 2), (Some(T0 + 120_000), 1)]);
}

#[test]
fn a_late_event_is_booked_against_its_final_minute_without_amending_it() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(3, 6);
    s.process(&tx(1, 10_000, TransactionStatus::Approved), T0 + 10_000, &cfg);
    s.process(&tx(2, 95_000, TransactionStatus::Approved), T0 + 95_000, &cfg); // closes 12:00
    let step = s.process(&tx(3, 20_000, TransactionStatus::Denied), T0 + 95_000, &cfg);
    assert_eq!(step.verdict, Verdict::Late);
    assert_eq!(
        step.outputs,
        vec![Stage1Output::Late(LateEvents { minute_start: T0, source: "p3".into(), late_count: 1 })]
    );
    let step = s.process(&tx(4, 30_000, TransactionStatus::Denied), T0 + 95_000, &cfg);
    assert!(matches!(&step.outputs[0], Stage1Output::Late(l) if l.late_count == 2));
}

#[test]
fn duplicates_count_once_and_future_or_ancient_events_are_refused() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    assert_eq!(s.process(&tx(1, 0, TransactionStatus::Approved), T0, &cfg).verdict, Verdict::Counted);
    assert_eq!(s.process(&tx(1, 0, TransactionStatus::Approved), T0, &cfg).verdict, Verdict::Duplicate);
    let future = tx(2, 10 * 60_000, TransactionStatus::Approved);
    assert_eq!(s.process(&future, T0, &cfg).verdict, Verdict::Refused(Refusal::FromTheFuture));
    s.process(&tx(3, 3_600_000, TransactionStatus::Approved), T0 + 3_600_000, &cfg);
    // The dedup set forgot ids older than the horizon: memory stays bounded.
    assert_eq!(s.dedup_entries(), 1);
    // Older than the dedup horizon: booked as late, unchecked for duplicates.
    let step = s.process(&tx(4, 60_000, TransactionStatus::Approved), T0 + 3_600_000, &cfg);
    assert_eq!((step.verdict, step.dedup_checked), (Verdict::Late, false));
    // Older than the late horizon: refused.
    let ancient = Transaction { occurred_at: T0 - 8 * 86_400_000, ..tx(5, 0, TransactionStatus::Approved) };
    assert_eq!(s.process(&ancient, T0 + 3_600_000, &cfg).verdict, Verdict::Refused(Refusal::TooOld));
}

#[test]
fn going_idle_flushes_every_open_window_and_marks_the_partition() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(1, 2);
    s.process(&tx(1, 5_000, TransactionStatus::Approved), T0, &cfg);
    s.process(&tx(2, 65_000, TransactionStatus::Failed), T0, &cfg);
    let out = s.go_idle(i64::MAX, &cfg);
    let kinds: Vec<(PartialKind, Option<i64>)> = partials(&out).iter().map(|p| (p.kind, p.minute_start)).collect();
    assert_eq!(
        kinds,
        vec![(PartialKind::Window, Some(T0)), (PartialKind::Window, Some(T0 + 60_000)), (PartialKind::Idle, None)]
    );
    assert!(s.is_idle());
    assert!(s.go_idle(i64::MAX, &cfg).is_empty(), "idle is announced once");
    // The next event wakes it; an event for a flushed minute is late.
    let step = s.process(&tx(3, 70_000, TransactionStatus::Approved), T0, &cfg);
    assert_eq!(step.verdict, Verdict::Late);
    assert!(!s.is_idle());
}

#[test]
fn a_quiet_partition_of_a_live_stream_keeps_its_current_minute_open_until_the_wall_clock_passes_it() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    // Live traffic: events stamped as they happen, then a pause longer than the idle timeout.
    s.process(&tx(1, 5_000, TransactionStatus::Approved), T0 + 5_000, &cfg);
    s.process(&tx(2, 20_000, TransactionStatus::Denied), T0 + 20_000, &cfg);
    // 12:00 is still the current minute: at most progress up to its start, no window, not idle.
    let out = s.go_idle(T0 + 35_000, &cfg);
    assert!(partials(&out).iter().all(|p| p.kind == PartialKind::Progress && p.watermark == T0), "{out:?}");
    assert!(!s.is_idle());
    // The traffic resumes within the minute: counted in it, not late.
    let step = s.process(&tx(3, 40_000, TransactionStatus::Approved), T0 + 40_000, &cfg);
    assert_eq!(step.verdict, Verdict::Counted);
    // Nothing more: the wall clock passes 12:01 + the allowed lateness, and the minute closes.
    assert!(s.go_idle(T0 + 60_000 + 29_999, &cfg).is_empty(), "within the allowed lateness");
    let out = s.go_idle(T0 + 90_000, &cfg);
    let kinds: Vec<(PartialKind, Option<i64>, i64)> =
        partials(&out).iter().map(|p| (p.kind, p.minute_start, p.approved)).collect();
    assert_eq!(kinds, vec![(PartialKind::Window, Some(T0), 2), (PartialKind::Idle, None, 0)]);
    assert!(s.is_idle());
}

#[test]
fn the_wall_clock_closes_the_windows_it_has_passed_while_the_current_one_stays_open() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    s.process(&tx(1, 50_000, TransactionStatus::Approved), T0 + 50_000, &cfg);
    // 12:01:05 − 30 s: the watermark is still in 12:00, whose window is open.
    s.process(&tx(2, 65_000, TransactionStatus::Failed), T0 + 65_000, &cfg);
    assert_eq!(s.open_windows(), 2);
    // Quiet until 12:01:35: 12:00 is over by the wall clock, 12:01 is not.
    let out = s.go_idle(T0 + 95_000, &cfg);
    let kinds: Vec<(PartialKind, Option<i64>)> = partials(&out).iter().map(|p| (p.kind, p.minute_start)).collect();
    assert_eq!(kinds, vec![(PartialKind::Window, Some(T0))], "its end is the progress reported");
    assert!(!s.is_idle(), "the merge stage still waits for 12:01 from this partition");
    assert_eq!(s.open_windows(), 1);
    // Asked again before the next minute of wall clock: no change, no output.
    assert!(s.go_idle(T0 + 100_000, &cfg).is_empty());
    // A replayed stream (stamped in the past) closes everything at once.
    let mut r = PartitionState::new(0, 1);
    r.process(&tx(3, 50_000, TransactionStatus::Approved), T0 + 50_000, &cfg);
    let out = r.go_idle(T0 + 3_600_000, &cfg);
    assert!(r.is_idle());
    assert_eq!(partials(&out).iter().filter(|p| p.kind == PartialKind::Window).count(), 1);
}

#[test]
fn a_partition_reports_progress_when_the_watermark_enters_a_new_minute() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    let first = s.process(&tx(1, 40_000, TransactionStatus::Approved), T0, &cfg);
    assert_eq!(partials(&first.outputs)[0].kind, PartialKind::Progress);
    // Watermark 12:00:10 -> 12:00:50: same minute, nothing new to say.
    let quiet = s.process(&tx(2, 80_000, TransactionStatus::Approved), T0 + 80_000, &cfg);
    assert!(partials(&quiet.outputs).is_empty());
}
