//! Hostile keys: ids crafted so that every one of them has the same hash under `rustc_hash`'s
//! Fx hasher (the detector's hasher before it used [`KeyedMap`](super::KeyedMap)) leave the
//! detector's time per event what it is for random ids.
//!
//! The bound is a ratio of two timings taken in the same test, best of three each, with a wide
//! margin: run against the Fx hasher (the maps' hasher swapped back), the crafted events of
//! these tests were 38 (categories), 60 (merchant ids) and 86 (transaction ids) times slower per
//! event than random ones, as every insert compares the new key with each colliding key before
//! it; with the seeded hasher the two are within a few percent.

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rustc_hash::FxBuildHasher;
use vigil_schemas::{Transaction, TransactionStatus};

use crate::core::{CoreConfig, PartitionState, Verdict, MINUTE_MS};

const T0: i64 = 1_765_713_600_000;
/// Events per run: enough that a quadratic cost dwarfs the rest of the detector's work. Fewer
/// for strings: crafting one takes about 3 000 tries.
const N_IDS: usize = 20_000;
const N_STRINGS: usize = 5_000;
/// Crafted ids may cost at most this many times random ones per event.
const MAX_RATIO: u32 = 5;

/// rustc-hash 2's multiplier.
const K: u64 = 0xf135_7aea_2e62_a9c5;

/// `n` UUIDs whose 128-bit values (the duplicate set's keys) all have one Fx hash. Fx hashes a
/// u128 as `((lo · K) + hi) · K` (then a rotation), so `hi = C − lo · K` collides for every
/// `lo`.
fn fx_colliding_uuids(n: usize) -> Vec<String> {
    const C: u64 = 0x5eed_5eed_5eed_5eed;
    (1..=n as u64).map(|lo| uuid::Uuid::from_u64_pair(C.wrapping_sub(lo.wrapping_mul(K)), lo).to_string()).collect()
}

/// The 64-bit folded multiply of rustc-hash 2's string hash.
fn mix(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    full as u64 ^ (full >> 64) as u64
}

fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

/// `n` distinct 32-character strings of visible ASCII (what the producer accepts as a merchant
/// id or a category) starting with `prefix` (8 bytes), all with one Fx hash.
///
/// rustc-hash 2 hashes 32 bytes `a b c d` (8 bytes each) as `mix(S2 ^ c, t ^ d) ^ 32` with
/// `t = mix(S1 ^ a, P ^ b)`: with `c` fixed and `d = t ^ D` the hash is the same whatever `a`
/// and `b` are. `b` runs through counter values until `d` is visible ASCII too (about one in
/// 3 000).
fn fx_colliding_strings(prefix: &[u8; 8], n: usize) -> Vec<String> {
    const S1: u64 = 0x243f_6a88_85a3_08d3;
    const P: u64 = 0xa409_3822_299f_31d0;
    const D: u64 = 0x1234_5678_9abc_def0;
    let visible = |w: u64| (0..8).all(|i| matches!((w >> (8 * i)) as u8, 0x21..=0x7e));
    let c = *b"-hostile";
    let s1a = S1 ^ word(prefix);
    let mut out = Vec::with_capacity(n);
    let mut counter: u64 = 0;
    while out.len() < n {
        counter += 1;
        // Eight characters from 0x30 to 0x6f, six bits of the counter each.
        let mut b = 0x3030_3030_3030_3030u64;
        for i in 0..8 {
            b += ((counter >> (6 * i)) & 0x3f) << (8 * i);
        }
        let d = mix(s1a, P ^ b) ^ D;
        if !visible(d) {
            continue;
        }
        let bytes = [prefix.as_slice(), &b.to_le_bytes(), &c, &d.to_le_bytes()].concat();
        out.push(String::from_utf8(bytes).unwrap_or_default());
    }
    out
}

/// One Fx hash shared by all of `keys` (the construction is what the test says it is).
fn all_collide_under_fx<T: std::hash::Hash>(keys: &[T]) -> bool {
    let first = FxBuildHasher.hash_one(&keys[0]);
    keys.iter().all(|k| FxBuildHasher.hash_one(k) == first)
}

fn random_uuids(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::from_u128(rng.gen()).to_string()).collect()
}

fn random_strings(rng: &mut rand::rngs::StdRng, prefix: &[u8; 8], n: usize) -> Vec<String> {
    let tail =
        |rng: &mut rand::rngs::StdRng| -> String { (0..24).map(|_| rng.gen_range(0x21u8..=0x7e) as char).collect() };
    (0..n).map(|_| format!("{}{}", String::from_utf8_lossy(prefix), tail(rng))).collect()
}

/// `ids.len()` transactions within one minute of event time (inside the duplicate set's horizon), the i-th with the i-th of each of
/// `ids`, `merchants` and `categories` (or a fixed value where that list is empty).
fn transactions(ids: &[String], merchants: &[String], categories: &[String]) -> Vec<Transaction> {
    let pick = |list: &[String], i: usize, fixed: &str| list.get(i).cloned().unwrap_or_else(|| fixed.to_owned());
    (0..ids.len())
        .map(|i| Transaction {
            transaction_id: ids[i].clone(),
            occurred_at: T0 + (i as i64 * MINUTE_MS) / ids.len() as i64,
            status: if i % 20 == 0 { TransactionStatus::Denied } else { TransactionStatus::Approved },
            auth_code: if i % 20 == 0 { "05".into() } else { "00".into() },
            amount_minor: 500 + (i as i64 * 37) % 4500,
            currency: "EUR".into(),
            category: pick(categories, i, "food"),
            merchant_id: pick(merchants, i, "m-1"),
            received_at: 0,
        })
        .collect()
}

/// The time per event of one partition's detector over `txs`, and the partition after.
fn run(txs: &[Transaction]) -> (Duration, PartitionState) {
    let cfg = CoreConfig::default();
    let mut p = PartitionState::new(0, 1);
    let started = Instant::now();
    for tx in txs {
        let step = p.process(tx, tx.occurred_at, &cfg);
        assert!(!matches!(step.verdict, Verdict::Refused(_) | Verdict::Duplicate), "{:?}", step.verdict);
    }
    (started.elapsed() / txs.len() as u32, p)
}

/// Best of three of each, alternating (the machine is shared): the crafted events' time per
/// event against the random ones'.
fn assert_flat(what: &str, crafted: &[Transaction], random: &[Transaction], check: impl Fn(&PartitionState)) {
    let (mut best_crafted, mut best_random) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let (r, p) = run(random);
        check(&p);
        best_random = best_random.min(r);
        let (c, p) = run(crafted);
        check(&p);
        best_crafted = best_crafted.min(c);
    }
    eprintln!("{what}: {best_crafted:?} an event crafted, {best_random:?} random");
    assert!(
        best_crafted < best_random * MAX_RATIO,
        "{} {what} colliding under Fx took {best_crafted:?} an event, random ones {best_random:?}",
        crafted.len()
    );
}

#[test]
fn transaction_ids_colliding_under_fx_cost_the_duplicate_set_no_more_than_random_ones() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let crafted = fx_colliding_uuids(N_IDS);
    let as_keys: Vec<u128> = crafted.iter().map(|id| crate::core::dedup::id_key(id)).collect();
    assert!(all_collide_under_fx(&as_keys));
    let random = random_uuids(&mut rng, N_IDS);
    assert_flat("transaction ids", &transactions(&crafted, &[], &[]), &transactions(&random, &[], &[]), |p| {
        assert_eq!(p.dedup_entries(), N_IDS)
    });
}

#[test]
fn merchant_ids_colliding_under_fx_cost_the_amount_baselines_no_more_than_random_ones() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let ids = random_uuids(&mut rng, N_STRINGS);
    let crafted = fx_colliding_strings(b"merchant", N_STRINGS);
    assert!(all_collide_under_fx(&crafted));
    let random = random_strings(&mut rng, b"merchant", N_STRINGS);
    // One baseline for the category, one per merchant.
    assert_flat("merchant ids", &transactions(&ids, &crafted, &[]), &transactions(&ids, &random, &[]), |p| {
        assert_eq!(p.amount_keys(), N_STRINGS + 1)
    });
}

#[test]
fn categories_colliding_under_fx_cost_the_amount_baselines_no_more_than_random_ones() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let ids = random_uuids(&mut rng, N_STRINGS);
    let crafted = fx_colliding_strings(b"category", N_STRINGS);
    assert!(all_collide_under_fx(&crafted));
    let random = random_strings(&mut rng, b"category", N_STRINGS);
    // Each category's baseline and its one merchant's.
    assert_flat("categories", &transactions(&ids, &[], &crafted), &transactions(&ids, &[], &random), |p| {
        assert_eq!(p.amount_keys(), 2 * N_STRINGS)
    });
}

#[test]
fn the_same_state_encodes_to_the_same_bytes_whatever_its_maps_hash_seeds() {
    // Each map draws its own keys, so two partitions fed the same events hold their merchants
    // and categories in different hash orders.
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let ids = random_uuids(&mut rng, 3000);
    let merchants = random_strings(&mut rng, b"merchant", 3000);
    let categories: Vec<String> = random_strings(&mut rng, b"category", 60).into_iter().cycle().take(3000).collect();
    let txs = transactions(&ids, &merchants, &categories);
    let (_, a) = run(&txs);
    let (_, b) = run(&txs);
    assert_eq!(a.amount_keys(), 3060);
    let bytes = postcard::to_allocvec(&a).unwrap_or_default();
    assert!(bytes == postcard::to_allocvec(&b).unwrap_or_default(), "the same state encoded to different bytes");
    let back: PartitionState = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(bytes == postcard::to_allocvec(&back).unwrap_or_default(), "a decoded state encodes to other bytes");
}
