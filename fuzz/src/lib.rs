//! What the fuzz targets share: the codecs they decode with, the re-encoding oracle, and the
//! valid encodings their corpora are seeded from (`src/bin/seed_corpora.rs` writes them to
//! `fuzz/seeds/`).

use std::collections::BTreeMap;

use apache_avro::types::Value;
use apache_avro::Schema;

use vigil_schemas::{
    avsc, Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, CategoryMinute, Codec, Decoded, LateEvents,
    MerchantMinute, MinuteAggregate, MinutePartial, PartialKind, Severity, Transaction, TransactionStatus,
};

/// Confluent schema ids the fuzzed codec knows: one per embedded schema (1 to 6, in
/// `avsc::ALL` order), and 7 for an older Anomaly writer without the optional fields (a
/// producer from before they were added), so the reader-resolution path with defaults is
/// exercised too.
pub const EVOLVED_ANOMALY_ID: u32 = 7;

/// A codec that frames in single-object encoding and knows no Confluent id: what a consumer
/// without a registry has.
pub fn single_object() -> Codec {
    Codec::single_object()
}

/// A codec that knows Confluent ids 1 to 7 (see [`EVOLVED_ANOMALY_ID`]).
pub fn confluent() -> Codec {
    let ids: Vec<(&str, u32)> = avsc::ALL.iter().zip(1u32..).map(|((name, _), id)| (*name, id)).collect();
    let codec = Codec::confluent_with_ids(&ids);
    codec.insert_schema_id(EVOLVED_ANOMALY_ID, "io.vigil.v1.Anomaly", evolved_anomaly_writer());
    codec
}

/// `anomaly.avsc` without the fields that have defaults.
pub fn evolved_anomaly_writer() -> Schema {
    let mut json: serde_json::Value = serde_json::from_str(avsc::ANOMALY).unwrap_or_default();
    if let Some(fields) = json.get_mut("fields").and_then(|f| f.as_array_mut()) {
        fields.retain(|f| f.get("default").is_none());
    }
    match Schema::parse(&json) {
        Ok(s) => s,
        Err(e) => panic!("the evolved Anomaly writer schema does not parse: {e}"),
    }
}

/// A Confluent frame (id 7) of `anomaly` as the older writer ([`evolved_anomaly_writer`])
/// encodes it: the fields it lacks are left out.
pub fn evolved_anomaly_frame(anomaly: &Anomaly) -> Vec<u8> {
    let writer = evolved_anomaly_writer();
    let value = match apache_avro::to_value(anomaly) {
        Ok(Value::Record(fields)) => {
            let Schema::Record(record) = &writer else { unreachable!("the Anomaly schema is a record") };
            Value::Record(fields.into_iter().filter(|(name, _)| record.lookup.contains_key(name)).collect())
        }
        other => panic!("an Anomaly is not an Avro record: {other:?}"),
    };
    let value = value.resolve(&writer).unwrap_or_else(|e| panic!("the older Anomaly does not fit its schema: {e}"));
    let mut frame = vec![0];
    frame.extend_from_slice(&EVOLVED_ANOMALY_ID.to_be_bytes());
    frame.extend(apache_avro::to_avro_datum(&writer, value).unwrap_or_else(|e| panic!("encoding failed: {e}")));
    frame
}

/// Encodes a decoded event again with `codec`.
pub fn encode(codec: &Codec, d: &Decoded) -> vigil_schemas::Result<Vec<u8>> {
    match d {
        Decoded::Transaction(e) => codec.encode(e),
        Decoded::MinutePartial(e) => codec.encode(e),
        Decoded::MinuteAggregate(e) => codec.encode(e),
        Decoded::LateEvents(e) => codec.encode(e),
        Decoded::Anomaly(e) => codec.encode(e),
        Decoded::MerchantMinute(e) => codec.encode(e),
    }
}

/// The decoder contract the `avro_decode` target checks on any input: decoding never panics,
/// the typed decoders agree with `decode_any`, and whatever decodes re-encodes to bytes that
/// decode to the same event (a decoded event is always a valid event). Events are compared by
/// their `Debug` text, so NaN equals NaN; bytes are not compared, since apache-avro writes a
/// map's entries in hash order, which differs between two encodings of one event.
pub fn check_decoders(codecs: &[Codec], data: &[u8]) {
    for codec in codecs {
        let any = codec.decode_any(data);
        let typed = [
            codec.decode::<Transaction>(data).is_ok(),
            codec.decode::<MinutePartial>(data).is_ok(),
            codec.decode::<MinuteAggregate>(data).is_ok(),
            codec.decode::<LateEvents>(data).is_ok(),
            codec.decode::<Anomaly>(data).is_ok(),
            codec.decode::<MerchantMinute>(data).is_ok(),
        ];
        let Ok(decoded) = any else {
            assert!(typed.iter().all(|ok| !ok), "a typed decoder accepted what decode_any refused");
            continue;
        };
        let label = decoded.label();
        assert_eq!(typed.iter().filter(|ok| **ok).count(), 1, "exactly one typed decoder accepts a {label}");
        let bytes = encode(codec, &decoded).unwrap_or_else(|e| panic!("a decoded {label} does not re-encode: {e}"));
        let again = codec.decode_any(&bytes).unwrap_or_else(|e| panic!("a re-encoded {label} does not decode: {e}"));
        assert_eq!(format!("{again:?}"), format!("{decoded:?}"), "a {label} changed through re-encoding");
    }
}

/// One valid event of each type (with and without its optional fields).
pub fn sample_events() -> Vec<Decoded> {
    let categories = vec![CategoryMinute {
        category: "food".into(),
        currency: "EUR".into(),
        count: 13,
        amount_sum: 1000,
        amount_min: 5,
        amount_max: 500,
    }];
    let auth_codes = BTreeMap::from([("00".to_owned(), 10), ("05".to_owned(), 3)]);
    let partial = MinutePartial {
        source_partition: 3,
        partition_count: 6,
        kind: PartialKind::Window,
        watermark: 1_765_713_630_000,
        minute_start: Some(1_765_713_540_000),
        approved: 10,
        denied: 2,
        failed: 1,
        reversed: 0,
        auth_codes: auth_codes.clone(),
        categories: categories.clone(),
    };
    let anomaly = Anomaly {
        id: "denied_rate:global:all:2025-12-14T12:00:00Z".into(),
        sequence: 0,
        rule: AnomalyRule::DeniedRate,
        dimension: AnomalyDimension::Global,
        dimension_value: "all".into(),
        window_start: Some(1_765_713_600_000),
        window_end: Some(1_765_713_660_000),
        transaction_id: None,
        category: Some("food".into()),
        merchant_id: None,
        observed: 0.4,
        observed_count: 40,
        observed_total: 100,
        baseline_mean: 0.05,
        baseline_stddev: 0.02,
        baseline_n: 30,
        scored_on: "rate".into(),
        score: 17.5,
        p_value: Some(1e-20),
        threshold: 4.0,
        severity: Severity::Critical,
        state: AnomalyState::Firing,
        message: "Denied rate 40.0% vs 5.0%".into(),
        first_seen: 1_765_713_600_000,
        last_updated: 1_765_713_660_000,
        resolved_at: None,
    };
    vec![
        Decoded::Transaction(Transaction {
            transaction_id: "7d9c5f5e-58f5-4a0e-9d43-3f1f3f0c1a11".into(),
            occurred_at: 1_765_713_600_000,
            status: TransactionStatus::Denied,
            auth_code: "05".into(),
            amount_minor: 12_345,
            currency: "EUR".into(),
            category: "food".into(),
            merchant_id: "m-1".into(),
            received_at: 1_765_713_600_123,
        }),
        Decoded::MinutePartial(partial.clone()),
        Decoded::MinutePartial(MinutePartial {
            kind: PartialKind::Idle,
            minute_start: None,
            categories: vec![],
            auth_codes: BTreeMap::new(),
            ..partial
        }),
        Decoded::MinuteAggregate(MinuteAggregate {
            minute_start: 1_765_713_540_000,
            total: 13,
            approved: 10,
            denied: 2,
            failed: 1,
            reversed: 0,
            auth_codes,
            categories,
            source_partitions: 1,
            expected_total: None,
            expected_low: None,
            expected_high: None,
        }),
        Decoded::LateEvents(LateEvents { minute_start: 1_765_713_540_000, source: "p3".into(), late_count: 2 }),
        Decoded::MerchantMinute(MerchantMinute {
            minute_start: 1_765_713_540_000,
            category: "food".into(),
            merchant_id: "m-1".into(),
            total: 13,
            approved: 10,
            denied: 2,
            failed: 1,
            reversed: 0,
        }),
        Decoded::Anomaly(anomaly.clone()),
        Decoded::Anomaly(Anomaly {
            state: AnomalyState::Resolved,
            resolved_at: Some(1_765_713_720_000),
            transaction_id: Some("7d9c5f5e-58f5-4a0e-9d43-3f1f3f0c1a11".into()),
            merchant_id: Some("m-1".into()),
            p_value: None,
            ..anomaly
        }),
    ]
}

/// True when a string or a key anywhere in `value` holds U+0000.
pub fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(holds_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}
