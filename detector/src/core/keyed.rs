//! Hash maps and sets keyed by values a client chose: transaction ids, merchant ids, categories,
//! currencies.
//!
//! They use std's `RandomState` (SipHash-1-3 with keys drawn at random per process), not a
//! fixed-key hasher such as `rustc_hash`'s Fx: with a fixed key anyone who can post to the
//! producer can compute many ids with the same hash and make every lookup in the map walk all
//! of them, so the detector's work grows with the square of the flood (see the tests in
//! `core/keyed/tests.rs`). The price, measured with `make bench ARGS=detector`, is in the
//! detector's README.
//!
//! The seed differs per process, so iteration order does too: it must never reach an output or
//! a checkpoint. A map that is serialised goes through [`sorted`], so the same state always
//! encodes to the same bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::RandomState;

use serde::{Serialize, Serializer};

/// A map keyed by client input.
pub type KeyedMap<K, V> = HashMap<K, V, RandomState>;
/// A set of client input.
pub type KeyedSet<K> = HashSet<K, RandomState>;

/// A map serialised in key order, whatever its hash order (a postcard map either way, so it
/// reads back into a [`KeyedMap`] and checkpoints written before this wrapper still decode).
pub struct Sorted<'a, K, V>(pub &'a KeyedMap<K, V>);

impl<K: Ord + Serialize, V: Serialize> Serialize for Sorted<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().collect::<BTreeMap<_, _>>())
    }
}

/// `#[serde(serialize_with = "sorted")]` for a [`KeyedMap`] field.
pub fn sorted<K: Ord + Serialize, V: Serialize, S: Serializer>(m: &KeyedMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
    Sorted(m).serialize(s)
}

#[cfg(test)]
mod tests;
