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
    let out = s.go_idle(END_OF_INPUT, &cfg);
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
    let out = s.go_idle(END_OF_INPUT, &cfg);
    let kinds: Vec<(PartialKind, Option<i64>)> = partials(&out).iter().map(|p| (p.kind, p.minute_start)).collect();
    assert_eq!(
        kinds,
        vec![(PartialKind::Window, Some(T0)), (PartialKind::Window, Some(T0 + 60_000)), (PartialKind::Idle, None)]
    );
    assert!(s.is_idle());
    assert!(s.go_idle(END_OF_INPUT, &cfg).is_empty(), "idle is announced once");
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

/// Live traffic stamped `behind` ms behind the clock: one event every `every` ms of wall clock
/// from `from` (wall clock, relative to 12:00) for `n` events, ids from `first_id`.
fn delayed(
    s: &mut PartitionState,
    cfg: &CoreConfig,
    first_id: u32,
    from: i64,
    every: i64,
    n: u32,
    behind: i64,
) -> Vec<Step> {
    (0..n)
        .map(|i| {
            let wall = T0 + from + i64::from(i) * every;
            let event = tx(first_id + i, wall - behind - T0, TransactionStatus::Approved);
            s.process(&event, wall, cfg)
        })
        .collect()
}

#[test]
fn a_feed_three_minutes_behind_the_clock_keeps_its_minute_through_a_pause() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    // Wall clock 12:03:00 to 12:03:19, events stamped 12:00:00 to 12:00:19: 12:00 is current.
    delayed(&mut s, &cfg, 1, 180_000, 1000, 20, 180_000);
    // A 30 s pause: the wall clock is past 12:01 + the allowed lateness, but the feed is not.
    let out = s.go_idle(T0 + 199_000 + 30_000, &cfg);
    assert!(partials(&out).iter().all(|p| p.kind != PartialKind::Window), "{out:?}");
    assert!(!s.is_idle());
    // It resumes at 12:03:50 with 12:00:50: the rest of 12:00 is counted in it, none late.
    let steps = delayed(&mut s, &cfg, 100, 230_000, 1000, 10, 180_000);
    assert!(steps.iter().all(|st| st.verdict == Verdict::Counted));
    // 12:00's window closes by the feed's own watermark (12:01:30 − 30 s), with its 30 events.
    let steps = delayed(&mut s, &cfg, 200, 240_000, 1000, 31, 180_000);
    let windows: Vec<(Option<i64>, i64)> = steps
        .iter()
        .flat_map(|st| partials(&st.outputs).into_iter().filter(|p| p.kind == PartialKind::Window))
        .map(|p| (p.minute_start, p.approved))
        .collect();
    assert_eq!(windows, vec![(Some(T0), 30)]);
}

#[test]
fn a_delayed_feed_that_stops_has_its_minutes_closed_as_the_wall_clock_passes_them_plus_the_delay() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    // Events 12:00:00 to 12:01:09, sent 3 minutes later; then nothing more, ever.
    delayed(&mut s, &cfg, 1, 180_000, 1000, 70, 180_000);
    let delay = s.feed_delay().idle_delay(T0 + 69_000, cfg.allowed_lateness_ms).unwrap();
    assert!((180_000..=180_000 + cfg.allowed_lateness_ms).contains(&delay), "{delay}");
    let windows_at = |s: &mut PartitionState, now: i64| -> Vec<(PartialKind, Option<i64>)> {
        partials(&s.go_idle(now, &cfg)).iter().map(|p| (p.kind, p.minute_start)).collect()
    };
    // The feed's own watermark stopped at 12:00:39. 12:00 closes once the wall clock passes
    // 12:01 + the delay + the allowed lateness, and not a moment before; 12:01 a minute later,
    // and the partition is idle.
    let due = T0 + 60_000 + delay + cfg.allowed_lateness_ms;
    assert!(windows_at(&mut s, due - 1).is_empty());
    assert_eq!(windows_at(&mut s, due), vec![(PartialKind::Window, Some(T0))]);
    assert!(windows_at(&mut s, due + 59_999).is_empty());
    assert!(!s.is_idle());
    assert_eq!(
        windows_at(&mut s, due + 60_000),
        vec![(PartialKind::Window, Some(T0 + 60_000)), (PartialKind::Idle, None)]
    );
    assert!(s.is_idle());
}

#[test]
fn a_back_fill_stamped_in_the_past_closes_at_once_when_it_goes_quiet() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    // Yesterday 12:00 to 12:30, all sent within 3 s today at 12:00 (the producer stamps the
    // records when it accepts them).
    let today = T0 + 86_400_000;
    for i in 0..1800u32 {
        let event = tx(i, -86_400_000 + i64::from(i) * 1000, TransactionStatus::Approved);
        s.process(&event, today + i64::from(i) * 2, &cfg);
    }
    assert!(s.feed_delay().catching_up());
    // Quiet for the idle timeout: everything is closed at once.
    let out = s.go_idle(today + 3_600 + 10_000, &cfg);
    assert!(s.is_idle());
    assert!(partials(&out)
        .iter()
        .any(|p| p.kind == PartialKind::Window && p.minute_start == Some(T0 - 86_400_000 + 29 * 60_000)));

    // A handful of events stamped 40 minutes ago, sent at the pace they happened (a slow
    // replay): further behind than any live feed is granted, so also closed at once.
    let mut r = PartitionState::new(0, 1);
    delayed(&mut r, &cfg, 1, 2_400_000, 1000, 20, 2_400_000);
    r.go_idle(T0 + 2_420_000 + 10_000, &cfg);
    assert!(r.is_idle());

    // One event stamped 5 minutes ago on a quiet partition (a retried webhook) is no feed.
    let mut one = PartitionState::new(0, 1);
    one.process(&tx(1, 0, TransactionStatus::Approved), T0 + 300_000, &cfg);
    one.go_idle(T0 + 310_000, &cfg);
    assert!(one.is_idle());
}

#[test]
fn a_live_feed_after_a_back_fill_learns_its_own_delay() {
    let cfg = CoreConfig::default();
    let mut s = PartitionState::new(0, 1);
    // 16 minutes of history ending 3 minutes before the wall clock, sent at once at 12:19:00;
    // then the live feed, 3 minutes behind, from 12:19:10 on.
    let sent = T0 + 19 * 60_000;
    for i in 0..960u32 {
        s.process(&tx(i, i64::from(i) * 1000, TransactionStatus::Approved), sent + i64::from(i), &cfg);
    }
    s.go_idle(sent + 10_000, &cfg);
    assert!(s.is_idle(), "the history closed at once");
    delayed(&mut s, &cfg, 10_000, 19 * 60_000 + 10_000, 1000, 80, 180_000);
    assert!(!s.feed_delay().catching_up());
    // Its last event is stamped 12:17:29 (sent 12:20:29). A 25 s pause does not close 12:17.
    let out = s.go_idle(sent + 89_000 + 25_000, &cfg);
    let current = T0 + 17 * 60_000;
    assert!(partials(&out).iter().all(|p| p.minute_start != Some(current)), "{out:?}");
    assert!(!s.is_idle());
    // The feed resumes at 12:20:55 with 12:17:55: the rest of 12:17 is counted in it.
    let steps = delayed(&mut s, &cfg, 20_000, 19 * 60_000 + 115_000, 1000, 20, 180_000);
    assert!(steps.iter().all(|st| st.verdict == Verdict::Counted), "the rest of 12:17 is not late");
}

#[test]
fn idle_decisions_are_the_same_after_a_checkpoint_round_trip() {
    let cfg = CoreConfig::default();
    let mut a = PartitionState::new(0, 1);
    delayed(&mut a, &cfg, 1, 180_000, 700, 100, 180_000);
    let mut b: PartitionState = postcard::from_bytes(&postcard::to_allocvec(&a).unwrap()).unwrap();
    assert_eq!(a.feed_delay(), b.feed_delay());
    for now in (0..10).map(|k| T0 + 250_000 + k * 20_000) {
        assert_eq!(a.go_idle(now, &cfg), b.go_idle(now, &cfg));
    }
}
