//! Remembers transaction ids for a horizon of event time, with memory bounded by the traffic
//! within that horizon.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keyed::KeyedSet;

/// Ids seen, indexed by the second of event time they were seen at, for eviction. The ids come
/// from clients (a UUID's 128 bits are the key itself), so the set is a [`KeyedSet`]; checkpoints
/// hold only `by_second`, in order.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    seen: KeyedSet<u128>,
    by_second: BTreeMap<i64, Vec<u128>>,
}

impl Dedup {
    /// Records `id` at `t` (ms); false when it was already there (a duplicate).
    pub fn insert(&mut self, id: u128, t: i64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.by_second.entry(t.div_euclid(1000)).or_default().push(id);
        true
    }

    /// Forgets ids seen before `cutoff` (ms), to the second.
    pub fn evict_before(&mut self, cutoff: i64) {
        let cutoff = cutoff.div_euclid(1000);
        while let Some(entry) = self.by_second.first_entry() {
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

/// Checkpoints hold the ids once, 16 bytes each, grouped by second; the set is rebuilt on load.
impl Serialize for Dedup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let groups: Vec<(i64, Vec<[u8; 16]>)> =
            self.by_second.iter().map(|(t, ids)| (*t, ids.iter().map(|id| id.to_le_bytes()).collect())).collect();
        groups.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dedup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let groups: Vec<(i64, Vec<[u8; 16]>)> = Vec::deserialize(d)?;
        let mut out = Dedup::default();
        for (t, ids) in groups {
            let ids: Vec<u128> = ids.into_iter().map(u128::from_le_bytes).collect();
            out.seen.extend(ids.iter().copied());
            out.by_second.insert(t, ids);
        }
        Ok(out)
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
        assert!(d.insert(1, 100_000));
        assert!(!d.insert(1, 150_000));
        assert!(d.insert(2, 200_000));
        d.evict_before(150_000);
        assert_eq!(d.len(), 1);
        assert!(d.insert(1, 300_000));
    }

    #[test]
    fn a_checkpointed_set_still_catches_duplicates_and_evicts() {
        let mut d = Dedup::default();
        for i in 0..1000u128 {
            d.insert(i * 7919, i as i64 * 100);
        }
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert!(bytes.len() < 1000 * 20, "{} bytes", bytes.len());
        let mut back: Dedup = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), 1000);
        assert!(!back.insert(500 * 7919, 0));
        back.evict_before(50_000);
        assert_eq!(back.len(), 500);
    }
}
