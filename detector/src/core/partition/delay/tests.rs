use proptest::prelude::*;

use super::*;

const L: i64 = 30_000;
const T0: i64 = 1_765_713_600_000; // 12:00:00Z

/// One partition's records: the estimator and the highest event time.
struct Feed {
    d: FeedDelay,
    m: i64,
}

impl Feed {
    fn new() -> Self {
        Feed { d: FeedDelay::default(), m: i64::MIN }
    }

    fn record(&mut self, t: i64, r: i64) {
        self.m = self.m.max(t);
        self.d.observe(t, r, self.m, L);
    }

    /// `n` records `behind` ms behind the clock, one every `every` ms of record time from `from`.
    fn live(&mut self, from: i64, every: i64, n: i64, behind: i64) {
        for i in 0..n {
            let r = from + i * every;
            self.record(r - behind, r);
        }
    }

    fn idle_delay(&self) -> Option<i64> {
        self.d.idle_delay(self.m, L)
    }
}

#[test]
fn buckets_are_log_spaced_and_their_bounds_hold_their_delays() {
    assert_eq!(bucket(0), 0);
    assert_eq!(bucket(999), 0);
    assert_eq!(bucket(1000), 1);
    assert_eq!(bucket(2000), 1 + PER_OCTAVE);
    assert_eq!(bucket(i64::MAX / 2_000_000), BUCKETS - 1);
    let mut last = 0;
    for ms in (0..40_000_000i64).step_by(997) {
        let b = bucket(ms);
        assert!(b >= last, "monotone");
        last = b;
        assert!(ms < upper_bound(b), "{ms} in bucket {b} below its bound {}", upper_bound(b));
        if b > 0 {
            assert!(ms >= upper_bound(b - 1), "{ms} at or above the bound below");
            // About 9 % wide: the estimate errs by at most that.
            assert!(upper_bound(b) * 100 <= upper_bound(b - 1) * 110 + 100);
        }
    }
}

#[test]
fn a_feed_three_minutes_behind_the_clock_learns_about_three_minutes() {
    let mut f = Feed::new();
    f.live(T0, 1000, 120, 180_000);
    let q = f.d.quantile().unwrap();
    assert!((180_000..=180_000 * 110 / 100).contains(&q), "{q}");
    assert!(!f.d.catching_up());
    assert_eq!(f.idle_delay(), Some(q));
}

#[test]
fn the_quantile_ignores_a_few_outliers_and_follows_a_change_within_a_few_half_lives() {
    let mut f = Feed::new();
    f.live(T0, 100, 3000, 60_000);
    // One record in 500 is an hour late (a retried webhook): below the 1 % the quantile skips.
    for i in 0..6 {
        let r = T0 + 300_000 + i;
        f.record(r - 3_600_000, r);
    }
    assert!(f.d.quantile().unwrap() < 70_000, "{:?}", f.d.quantile());
    // The feed falls 5 minutes behind, gradually (no jump of the frontier): learned within a
    // few half-lives of record time.
    f.live(T0 + 300_000, 100, (5 * HALF_LIFE_MS) / 100, 300_000);
    let q = f.d.quantile().unwrap();
    assert!((300_000..=330_000).contains(&q), "{q}");
    assert!(!f.d.catching_up());
}

#[test]
fn memory_is_bounded_by_the_number_of_buckets() {
    let mut f = Feed::new();
    for i in 0..200_000i64 {
        let r = T0 + i;
        f.record(r - (i * 7919) % 1_000_000_000, r);
    }
    assert!(f.d.weights.len() <= BUCKETS);
}

#[test]
fn weights_halve_per_half_life_of_record_time_and_vanish_after_a_long_silence() {
    let mut f = Feed::new();
    f.live(T0, 1000, 40, 5_000);
    assert_eq!(f.d.support(), 40);
    // One record two half-lives later: the 40 weigh 10 now.
    let r = T0 + 40_000 + 2 * HALF_LIFE_MS;
    f.record(r - 5_000, r);
    assert!((10..=11).contains(&f.d.support()), "{}", f.d.support());
    // Hours later: only the newest record counts.
    let r = r + 5 * 3_600_000;
    f.record(r - 5_000, r);
    assert_eq!(f.d.support(), 1);
}

#[test]
fn a_back_fill_sent_at_once_is_catching_up_and_its_delays_are_not_learned() {
    let mut f = Feed::new();
    // 30 minutes of events, stamped from 33 to 3 minutes ago, sent in 3 s.
    let now = T0 + 3_600_000;
    for i in 0..3000i64 {
        f.record(now - 33 * 60_000 + i * 600, now + i);
    }
    assert!(f.d.catching_up());
    assert_eq!(f.idle_delay(), None, "a back-fill closes at once");
    // Only the records before the catch-up showed (30 s of event time) were learned.
    assert!(f.d.support() <= 60, "{}", f.d.support());

    // Live traffic follows, 3 minutes behind: once the back-fill is behind the pace span it is a
    // live feed again, granted its own lag (the back-fill's first delays add at most the slack).
    f.live(now + 4000, 1000, 90, 180_000);
    assert!(!f.d.catching_up());
    let delay = f.idle_delay().unwrap();
    assert!((180_000..=180_000 + L).contains(&delay), "{delay}");
}

#[test]
fn a_few_records_stamped_in_the_past_are_no_feed() {
    let mut f = Feed::new();
    f.live(T0, 1000, MIN_SUPPORT as i64 - 1, 20 * 60_000);
    assert_eq!(f.idle_delay(), None, "too few records to trust");
    f.live(T0 + 10_000, 1000, 5, 20 * 60_000);
    assert_eq!(f.idle_delay(), None, "enough records, but further behind than a live feed is granted");
    let mut near = Feed::new();
    near.live(T0, 1000, 10, 10 * 60_000);
    assert!(near.idle_delay().is_some_and(|d| d >= 10 * 60_000));
}

#[test]
fn a_feed_whose_frontier_jumps_ahead_of_record_time_has_caught_up() {
    // Learned at 3 minutes, then the feed is 1 minute behind in one step (a queue drained):
    // event time outran record time, so the old delays no longer hold anything open.
    let mut f = Feed::new();
    f.live(T0, 1000, 300, 180_000);
    f.live(T0 + 300_000, 1000, 3, 60_000);
    assert!(f.d.catching_up());
    assert_eq!(f.idle_delay(), None);
}

#[test]
fn the_delay_is_at_least_the_lag_of_the_highest_event_behind_the_newest_record() {
    let mut f = Feed::new();
    f.live(T0, 1000, 300, 180_000);
    // Only re-sends of older events arrive: the frontier stands still while record time goes on,
    // and its lag (the delay taken) grows with it.
    for i in 1..=60 {
        let r = T0 + 299_000 + i * 1000;
        f.record(f.m - 10_000, r);
    }
    let lag = T0 + 359_000 - f.m;
    let delay = f.idle_delay().unwrap();
    assert!((lag..=lag + L).contains(&delay), "{delay} vs lag {lag}");
}

proptest! {
    /// The delay granted to a live feed always covers the frontier's lag behind the newest
    /// record, never exceeds it by more than the slack, and never exceeds the cap.
    #[test]
    fn the_idle_delay_is_bounded_by_the_lag_and_the_cap(
        behind in 0i64..40 * 60_000,
        jitter in 0i64..120_000,
        n in 1i64..400,
        every in 1i64..5_000,
        seed in any::<u64>(),
    ) {
        let mut f = Feed::new();
        let mut x = seed;
        for i in 0..n {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let r = T0 + i * every;
            f.record(r - behind - ((x >> 33) as i64 % (jitter + 1)), r);
        }
        if let Some(delay) = f.idle_delay() {
            let lag = T0 + (n - 1) * every - f.m;
            prop_assert!(delay >= lag.max(0) && delay <= (lag + L).max(0), "{} vs lag {}", delay, lag);
            prop_assert!(delay <= MAX_FEED_DELAY_MS);
        }
    }
}
