//! Remembers transaction ids for a horizon of event time, with memory bounded by the traffic
//! within that horizon.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Ids seen, with the event time each was seen at, and an index by time for eviction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dedup {
    seen: HashMap<u128, i64>,
    by_time: BTreeMap<i64, Vec<u128>>,
}

impl Dedup {
    /// Records `id` at `t`; false when it was already there (a duplicate).
    pub fn insert(&mut self, id: u128, t: i64) -> bool {
        if self.seen.contains_key(&id) {
            return false;
        }
        self.seen.insert(id, t);
        self.by_time.entry(t).or_default().push(id);
        true
    }

    /// Forgets ids seen before `cutoff`.
    pub fn evict_before(&mut self, cutoff: i64) {
        while let Some(entry) = self.by_time.first_entry() {
            if *entry.key() >= cutoff {
                break;
            }
            for id in entry.remove() {
                self.seen.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The 128-bit value of a UUID string, or a stable hash of any other id.
pub fn id_key(id: &str) -> u128 {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => u.as_u128(),
        Err(_) => {
            // FNV-1a 128: ids that are not UUIDs still dedup deterministically.
            let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
            for b in id.bytes() {
                h ^= u128::from(b);
                h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
            }
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_caught_until_evicted() {
        let mut d = Dedup::default();
        assert!(d.insert(1, 100));
        assert!(!d.insert(1, 150));
        assert!(d.insert(2, 200));
        d.evict_before(150);
        assert_eq!(d.len(), 1);
        assert!(d.insert(1, 300));
    }
}
