//! The fingerprint of an alert that arrives without one (Alertmanager before v0.19).
//!
//! It is the same function Alertmanager itself uses (`model.LabelSet.Fingerprint` of
//! prometheus/common): FNV-1a 64 over each label name and value in byte-wise sorted order, each
//! followed by the separator byte 0xFF, printed as 16 lower-case hex digits. So an alert keeps its
//! identity when its sender is upgraded and starts sending fingerprints itself.

use std::collections::BTreeMap;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const SEPARATOR: u8 = 0xff;

fn add(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The fingerprint of a label set (a `BTreeMap` iterates in byte-wise sorted key order, as Go's
/// `sort.Strings` does).
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = FNV_OFFSET;
    for (name, value) in labels {
        h = add(h, name.as_bytes());
        h = add(h, &[SEPARATOR]);
        h = add(h, value.as_bytes());
        h = add(h, &[SEPARATOR]);
    }
    format!("{h:016x}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_fingerprint_matches_prometheus_common_test_vectors() {
        // prometheus/common model TestMetricToFingerprint: 14695981039346656037 and 5799056148416392346.
        assert_eq!(fingerprint(&labels(&[])), "cbf29ce484222325");
        assert_eq!(
            fingerprint(&labels(&[("name", "garland, briggs"), ("fear", "love is not enough")])),
            format!("{:016x}", 5_799_056_148_416_392_346u64)
        );
    }

    #[test]
    fn the_fingerprint_ignores_insertion_order_but_not_label_boundaries() {
        let a = labels(&[("alertname", "High"), ("zone", "eu")]);
        let b = labels(&[("zone", "eu"), ("alertname", "High")]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        // The separator keeps "ab"="c" apart from "a"="bc".
        assert_ne!(fingerprint(&labels(&[("ab", "c")])), fingerprint(&labels(&[("a", "bc")])));
        assert_eq!(fingerprint(&a).len(), 16);
    }
}
