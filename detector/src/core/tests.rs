//! Properties of the whole core (both stages).

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use vigil_schemas::{AnomalyRule, AnomalyState, Transaction, TransactionStatus};

use super::*;

const T0: i64 = 1_765_713_600_000;
const CATEGORIES: [&str; 5] = ["food", "travel", "electronics", "fuel", "grocery"];

/// Minute-by-minute traffic: `rates[i]` = (per minute, denied, failed, reversed) for minute i.
fn generate(seed: u64, rates: &[(usize, f64, f64, f64)]) -> Vec<Transaction> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut id = 0u64;
    for (m, (n, d, f, r)) in rates.iter().enumerate() {
        for _ in 0..*n {
            id += 1;
            let u: f64 = rng.gen();
            let status = if u < *d {
                TransactionStatus::Denied
            } else if u < d + f {
                TransactionStatus::Failed
            } else if u < d + f + r {
                TransactionStatus::Reversed
            } else {
                TransactionStatus::Approved
            };
            out.push(Transaction {
                transaction_id: uuid::Uuid::from_u64_pair(7, id).to_string(),
                occurred_at: T0 + m as i64 * MINUTE_MS + rng.gen_range(0..MINUTE_MS),
                status,
                auth_code: match status {
                    TransactionStatus::Approved => "00".into(),
                    TransactionStatus::Denied => "05".into(),
                    TransactionStatus::Failed => "91".into(),
                    TransactionStatus::Reversed => "00".into(),
                },
                amount_minor: rng.gen_range(500..5000),
                currency: "EUR".into(),
                category: String::new(),
                // A merchant trades in one category (its series then live in one partition,
                // whatever the partition count).
                merchant_id: format!("m{}", rng.gen_range(0..20)),
                received_at: 0,
            });
        }
    }
    for tx in &mut out {
        let m: usize = tx.merchant_id[1..].parse().unwrap_or(0);
        tx.category = CATEGORIES[m % CATEGORIES.len()].into();
    }
    out.sort_by_key(|t| t.occurred_at);
    out
}

fn run(cfg: &CoreConfig, partitions: i32, txs: &[Transaction]) -> Vec<Output> {
    let mut p = Pipeline::new(cfg.clone(), partitions);
    let mut out = Vec::new();
    for tx in txs {
        out.extend(p.push(tx).1);
    }
    out.extend(p.finish());
    out
}

/// Outputs as a comparable set of strings (order between partitions is not part of the contract).
fn as_set(out: &[Output]) -> BTreeSet<String> {
    out.iter().map(|o| format!("{o:?}")).collect()
}

/// The global and auth-code rate anomalies (a global spike also lifts each category's and
/// merchant's rate, which their own series may report).
fn rate_anomalies(out: &[Output]) -> Vec<&vigil_schemas::Anomaly> {
    out.iter()
        .filter_map(|o| match o {
            Output::Anomaly(a)
                if a.window_start.is_some()
                    && !matches!(a.rule, AnomalyRule::VolumeDrop | AnomalyRule::VolumeSurge)
                    && matches!(
                        a.dimension,
                        vigil_schemas::AnomalyDimension::Global | vigil_schemas::AnomalyDimension::AuthCode
                    ) =>
            {
                Some(a)
            }
            _ => None,
        })
        .collect()
}

fn normal(minutes: usize) -> Vec<(usize, f64, f64, f64)> {
    vec![(200, 0.05, 0.02, 0.01); minutes]
}

#[test]
fn spikes_of_each_outcome_fire_once_within_two_windows_and_resolve() {
    let cfg = CoreConfig { rate: RateConfig { auth_codes: false, ..RateConfig::default() }, ..CoreConfig::default() };
    let mut plan = normal(30);
    plan.extend(vec![(200, 0.30, 0.02, 0.01); 5]); // denied spike at minute 30
    plan.extend(normal(15));
    plan.extend(vec![(200, 0.05, 0.20, 0.01); 5]); // failed spike at minute 50
    plan.extend(normal(15));
    plan.extend(vec![(200, 0.05, 0.02, 0.15); 5]); // reversed spike at minute 70
    plan.extend(normal(15));
    let out = run(&cfg, 6, &generate(11, &plan));
    let rates = rate_anomalies(&out);
    for (rule, onset) in [(AnomalyRule::DeniedRate, 30), (AnomalyRule::FailedRate, 50), (AnomalyRule::ReversedRate, 70)]
    {
        let mine: Vec<_> = rates.iter().filter(|a| a.rule == rule).collect();
        let firing: Vec<_> = mine.iter().filter(|a| a.state == AnomalyState::Firing).collect();
        assert_eq!(firing.len(), 1, "{rule:?}: {mine:#?}");
        let start = firing[0].first_seen;
        let delay = (start - (T0 + onset * MINUTE_MS)) / MINUTE_MS;
        assert!((0..2).contains(&delay), "{rule:?} detected {delay} windows after onset");
        assert_eq!(mine.iter().filter(|a| a.state == AnomalyState::Resolved).count(), 1, "{rule:?} resolves");
        let ids: BTreeSet<_> = mine.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids.len(), 1);
    }
    assert_eq!(rates.iter().filter(|a| a.state == AnomalyState::Firing).count(), 3, "no other rate anomaly");
}

#[test]
fn the_same_spike_at_five_transactions_a_minute_fires_nothing() {
    let cfg = CoreConfig::default();
    let mut plan = vec![(5, 0.05, 0.02, 0.01); 30];
    plan.extend(vec![(5, 0.30, 0.02, 0.01); 5]);
    let out = run(&cfg, 1, &generate(12, &plan));
    assert!(rate_anomalies(&out).is_empty());
}

#[test]
fn auth_code_surges_are_watched_per_code() {
    let cfg = CoreConfig::default();
    let mut plan = normal(30);
    plan.extend(vec![(200, 0.30, 0.02, 0.01); 3]);
    let out = run(&cfg, 1, &generate(13, &plan));
    let rules: BTreeSet<_> = rate_anomalies(&out)
        .iter()
        .filter(|a| a.state == AnomalyState::Firing)
        .map(|a| (a.rule, a.dimension_value.clone()))
        .collect();
    assert!(rules.contains(&(AnomalyRule::AuthCodeRate, "05".to_string())), "{rules:?}");
}

#[test]
fn aggregates_count_every_event_exactly_once() {
    let txs = generate(14, &normal(10));
    let out = run(&CoreConfig::default(), 3, &txs);
    let total: i64 = out.iter().filter_map(|o| if let Output::Aggregate(a) = o { Some(a.total) } else { None }).sum();
    assert_eq!(total, txs.len() as i64);
    let minutes: Vec<i64> =
        out.iter().filter_map(|o| if let Output::Aggregate(a) = o { Some(a.minute_start) } else { None }).collect();
    let mut sorted = minutes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(minutes, sorted, "each minute once, in order");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any number of partitions, any assignment by key: the same outputs (each merchant trading
    /// in one category, as the generator has it).
    #[test]
    fn outputs_do_not_depend_on_the_partition_count(seed in 0u64..1000, parts in 2i32..7) {
        let mut plan = normal(12);
        plan.extend(vec![(200, 0.35, 0.02, 0.01); 2]);
        let txs = generate(seed, &plan);
        let one = run(&CoreConfig::default(), 1, &txs);
        let many = run(&CoreConfig::default(), parts, &txs);
        let strip = |o: &[Output]| -> BTreeSet<String> {
            // Amount anomalies and late bookings are per partition by design; compare final minutes and rate anomalies.
            o.iter().filter(|x| !matches!(x, Output::Late(_))).map(|x| match x {
                Output::Aggregate(a) => format!("{:?}", vigil_schemas::MinuteAggregate { source_partitions: 0, ..a.clone() }),
                other => format!("{other:?}"),
            }).collect()
        };
        prop_assert_eq!(strip(&one), strip(&many));
    }

    /// Disorder within the allowed lateness changes nothing.
    #[test]
    fn out_of_order_input_within_the_lateness_equals_sorted_input(seed in 0u64..1000, parts in 1i32..4) {
        let cfg = CoreConfig::default();
        let txs = generate(seed, &normal(6));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabc);
        // Shuffle within blocks of 25 s of event time: never later than 30 s behind the max.
        let mut shuffled = Vec::new();
        let mut block: Vec<Transaction> = Vec::new();
        for t in &txs {
            if block.first().is_some_and(|b| t.occurred_at - b.occurred_at > 25_000) {
                shuffle(&mut block, &mut rng);
                shuffled.append(&mut block);
            }
            block.push(t.clone());
        }
        shuffle(&mut block, &mut rng);
        shuffled.append(&mut block);
        let sorted_out = run(&cfg, parts, &txs);
        let shuffled_out = run(&cfg, parts, &shuffled);
        prop_assert!(!shuffled_out.iter().any(|o| matches!(o, Output::Late(_))));
        prop_assert_eq!(as_set(&sorted_out), as_set(&shuffled_out));
    }

    /// Each event lands in the window of its own minute: [start, start + 60 s).
    #[test]
    fn every_event_is_counted_in_the_minute_that_contains_it(offsets in prop::collection::vec(0i64..600_000, 1..200)) {
        let mut txs: Vec<Transaction> = offsets.iter().enumerate().map(|(i, o)| Transaction {
            transaction_id: uuid::Uuid::from_u64_pair(9, i as u64).to_string(),
            occurred_at: T0 + o,
            status: TransactionStatus::Approved,
            auth_code: "00".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            category: "food".into(),
            merchant_id: "m".into(),
            received_at: 0,
        }).collect();
        txs.sort_by_key(|t| t.occurred_at);
        let out = run(&CoreConfig::default(), 1, &txs);
        for o in &out {
            if let Output::Aggregate(a) = o {
                let expected = offsets.iter().filter(|o| (T0 + **o).div_euclid(MINUTE_MS) * MINUTE_MS == a.minute_start).count();
                prop_assert_eq!(a.total, expected as i64);
            }
        }
        let total: i64 = out.iter().filter_map(|o| if let Output::Aggregate(a) = o { Some(a.total) } else { None }).sum();
        prop_assert_eq!(total, offsets.len() as i64);
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut rand::rngs::StdRng) {
    for i in (1..v.len()).rev() {
        let j = rng.gen_range(0..=i);
        v.swap(i, j);
    }
}

fn volume_anomalies(out: &[Output]) -> Vec<&vigil_schemas::Anomaly> {
    out.iter()
        .filter_map(|o| match o {
            Output::Anomaly(a) if matches!(a.rule, AnomalyRule::VolumeDrop | AnomalyRule::VolumeSurge) => Some(a),
            _ => None,
        })
        .collect()
}

fn zero_minutes(out: &[Output]) -> Vec<i64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Aggregate(a) if a.total == 0 => Some((a.minute_start - T0) / MINUTE_MS),
            _ => None,
        })
        .collect()
}

/// A replay (event time only): traffic stops for 20 minutes and resumes. The quiet minutes are
/// final with a total of 0 once the traffic after them moves the watermarks on, the global
/// volume rule reports the stop from its first minute, and the outputs are the same whatever
/// the partition count.
#[test]
fn traffic_that_stops_in_a_replay_is_reported_from_its_first_minute_whatever_the_partition_count() {
    let cfg = CoreConfig::default();
    let mut plan = normal(90);
    plan.extend(vec![(0, 0.05, 0.02, 0.01); 20]);
    plan.extend(normal(30));
    let txs = generate(5, &plan);
    let one = run(&cfg, 1, &txs);
    assert_eq!(zero_minutes(&one), (90..110).collect::<Vec<_>>());
    let global: Vec<_> =
        volume_anomalies(&one).into_iter().filter(|a| a.dimension == vigil_schemas::AnomalyDimension::Global).collect();
    let firing: Vec<_> = global.iter().filter(|a| a.state == AnomalyState::Firing).collect();
    assert_eq!(firing.len(), 1, "{global:#?}");
    assert_eq!(firing[0].rule, AnomalyRule::VolumeDrop);
    assert_eq!(firing[0].first_seen, T0 + 90 * MINUTE_MS);
    assert_eq!(firing[0].severity, vigil_schemas::Severity::Critical);
    let resolved = global.iter().find(|a| a.state == AnomalyState::Resolved).expect("resolves once traffic is back");
    assert!(resolved.resolved_at.unwrap() <= T0 + 115 * MINUTE_MS, "{resolved:?}");
    // Each category and merchant stopped too: theirs are reported as well.
    assert!(volume_anomalies(&one).iter().any(|a| a.dimension == vigil_schemas::AnomalyDimension::Merchant));
    for partitions in [2, 5] {
        let many = run(&cfg, partitions, &txs);
        let global_many: Vec<_> = volume_anomalies(&many)
            .into_iter()
            .filter(|a| a.dimension == vigil_schemas::AnomalyDimension::Global)
            .collect();
        assert_eq!(global_many, global, "{partitions} partitions");
        assert_eq!(zero_minutes(&many), zero_minutes(&one), "{partitions} partitions");
    }
}

/// A live feed (record timestamps a second after event time) that stops: no event arrives, but
/// the wall clock moves on, so the idle partitions report time passing, the quiet minutes are
/// final with a total of 0, and the stop is reported within two minutes of the wall clock
/// passing its first minute (plus the allowed lateness). A back-fill (stamped days before its
/// records) that pauses is not taken for a stop: its time is its events'.
#[test]
fn a_live_feed_that_stops_is_reported_although_no_event_arrives_and_a_paused_back_fill_or_an_old_topic_is_not() {
    let cfg = CoreConfig::default();
    let txs = generate(8, &normal(90));
    let days = 2 * 24 * 60 * MINUTE_MS;
    // (record time − event time, wall clock at the first idle tick − newest record time, live):
    // a live feed; a back-fill stamped two days late; a live feed's topic read two days later.
    for (lag, read_after, live) in [(1_000, 0, true), (days, 0, false), (1_000, days, false)] {
        let mut p = Pipeline::new(cfg.clone(), 3);
        let mut out = Vec::new();
        for tx in &txs {
            let part = p.partition_of(tx);
            out.extend(p.push_to(part, tx, tx.occurred_at + lag).1);
        }
        // The service's idle ticks: every 10 s of wall clock for 10 minutes after the last record.
        let last = txs.last().unwrap().occurred_at + lag + read_after;
        let mut fired_at = None;
        for tick in 1..=60 {
            let now = last + tick * 10_000;
            let got = p.idle(now);
            if fired_at.is_none()
                && volume_anomalies(&got)
                    .iter()
                    .any(|a| a.dimension == vigil_schemas::AnomalyDimension::Global && a.state == AnomalyState::Firing)
            {
                fired_at = Some(now - lag);
            }
            out.extend(got);
        }
        let zeros = zero_minutes(&out);
        if live {
            // Minute 90 is the first without traffic; the clock passes its end (plus the 30 s
            // lateness and the learned delay, about a second) 60–91 s after the last event.
            assert!(zeros.len() >= 8 && zeros[0] == 90, "{zeros:?}");
            let fired = fired_at.expect("the stop is reported");
            assert!(
                fired <= T0 + 92 * MINUTE_MS + 30_000,
                "reported {} s after minute 90 began",
                (fired - T0 - 90 * MINUTE_MS) / 1000
            );
            let a = volume_anomalies(&out)
                .into_iter()
                .find(|a| a.state == AnomalyState::Firing && a.dimension == vigil_schemas::AnomalyDimension::Global)
                .unwrap();
            assert_eq!((a.rule, a.first_seen), (AnomalyRule::VolumeDrop, T0 + 90 * MINUTE_MS));
        } else {
            assert!(zeros.is_empty(), "a paused back-fill or an old topic has no quiet minutes: {zeros:?}");
            assert!(fired_at.is_none());
        }
    }
}
