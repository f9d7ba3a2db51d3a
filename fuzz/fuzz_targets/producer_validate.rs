//! Any bytes as the JSON body of the producer's ingest routes, through the validation every
//! event passes (current and legacy body, with and without an Idempotency-Key), under the
//! default limits and the widest ones: never a panic, and an event that validates always
//! encodes (else the client would get a 500 for an event we called valid) and decodes back
//! unchanged.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vigil_producer::validation::{check_idempotency_key, from_legacy, id_from_key, validate, Rules};
use vigil_schemas::{Codec, Transaction};

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(Codec::single_object)
}

fn rules() -> [Rules; 2] {
    let default = Rules {
        max_amount_minor: 100_000_000_000,
        max_future_skew: Duration::from_secs(300),
        max_event_age: Duration::from_secs(7 * 86_400),
    };
    // The largest values the configuration accepts (1e10 s).
    let widest = Rules {
        max_amount_minor: i64::MAX,
        max_future_skew: Duration::from_secs(10_000_000_000),
        max_event_age: Duration::from_secs(10_000_000_000),
    };
    [default, widest]
}

fn check(value: &Value, rules: &Rules, now: DateTime<Utc>, key: Option<&str>) {
    let key_id = key.map(|k| id_from_key(k, None));
    if let Ok(tx) = validate(value, rules, now, key_id) {
        let bytes = codec().encode(&tx).unwrap_or_else(|e| panic!("a valid event does not encode: {e}"));
        let back: Transaction = codec().decode(&bytes).unwrap_or_else(|e| panic!("a valid event does not decode: {e}"));
        assert_eq!(back, tx);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first line, if any, is an Idempotency-Key; the rest the body.
    let (key, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    let key = key.filter(|k| check_idempotency_key(k).is_ok());
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return };
    let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap_or_default();
    for rules in &rules() {
        check(&value, rules, now, key);
        if let Ok(mapped) = from_legacy(&value, "USD") {
            check(&mapped, rules, now, key);
        }
    }
});
