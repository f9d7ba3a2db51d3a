use std::collections::BTreeMap;

use super::*;
use crate::events::*;

fn tx() -> Transaction {
    Transaction {
        transaction_id: "7d9c5f5e-58f5-4a0e-9d43-3f1f3f0c1a11".into(),
        occurred_at: 1_765_713_600_000,
        status: TransactionStatus::Denied,
        auth_code: "05".into(),
        amount_minor: 12_345,
        currency: "EUR".into(),
        category: "food".into(),
        merchant_id: "m-1".into(),
        received_at: 1_765_713_600_123,
    }
}

fn anomaly() -> Anomaly {
    Anomaly {
        id: "denied_rate:global:all:2025-12-14T12:00:00Z".into(),
        sequence: 0,
        rule: AnomalyRule::DeniedRate,
        dimension: AnomalyDimension::Global,
        dimension_value: "all".into(),
        window_start: Some(1_765_713_600_000),
        window_end: Some(1_765_713_660_000),
        transaction_id: None,
        category: None,
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
    }
}

fn confluent() -> Codec {
    let ids: Vec<(&str, u32)> = known().iter().enumerate().map(|(i, k)| (k.name, 100 + i as u32)).collect();
    Codec::confluent_with_ids(&ids)
}

#[test]
fn every_embedded_schema_parses_with_a_distinct_fingerprint() {
    let fps: Vec<_> = known().iter().map(|k| k.fingerprint).collect();
    assert_eq!(fps.len(), avsc::ALL.len());
    for (i, a) in fps.iter().enumerate() {
        for b in &fps[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn single_object_frame_starts_with_c301_and_the_rabin_fingerprint() {
    let codec = Codec::single_object();
    let bytes = codec.encode(&tx()).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(&bytes[2..10], &Transaction::fingerprint());
}

#[test]
fn confluent_frame_starts_with_zero_and_the_big_endian_schema_id() {
    let bytes = confluent().encode(&tx()).unwrap();
    assert_eq!(bytes[0], 0);
    assert_eq!(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]), 100);
}

#[test]
fn every_event_type_round_trips_in_both_framings() {
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
        auth_codes: BTreeMap::from([("00".into(), 10), ("05".into(), 3)]),
        categories: vec![CategoryMinute {
            category: "food".into(),
            currency: "EUR".into(),
            count: 13,
            amount_sum: 1000,
            amount_min: 5,
            amount_max: 500,
        }],
    };
    let agg = MinuteAggregate {
        minute_start: 1_765_713_540_000,
        total: 13,
        approved: 10,
        denied: 2,
        failed: 1,
        reversed: 0,
        auth_codes: partial.auth_codes.clone(),
        categories: partial.categories.clone(),
        source_partitions: 1,
        expected_total: None,
        expected_low: None,
        expected_high: None,
    };
    let late = LateEvents { minute_start: 1_765_713_540_000, source: "p3".into(), late_count: 2 };
    let idle = MinutePartial { kind: PartialKind::Idle, minute_start: None, categories: vec![], ..partial.clone() };
    let merchant = MerchantMinute {
        minute_start: 1_765_713_540_000,
        category: "food".into(),
        merchant_id: "m-042".into(),
        total: 13,
        approved: 10,
        denied: 2,
        failed: 1,
        reversed: 0,
    };

    let verdict = TransactionVerdict {
        transaction_id: "6f1c2a7e-0000-4000-8000-000000000001".into(),
        reply_to: "producer-a".into(),
        occurred_at: 1_765_713_540_000,
        decision: VerdictDecision::Counted,
        anomaly: true,
        severity: Some("critical".into()),
        anomaly_ids: vec!["amount:6f1c2a7e-0000-4000-8000-000000000001".into()],
    };
    let clean = TransactionVerdict {
        decision: VerdictDecision::Duplicate,
        anomaly: false,
        severity: None,
        anomaly_ids: vec![],
        ..verdict.clone()
    };

    let so = Codec::single_object();
    let cf = confluent();
    for codec in [&so, &cf] {
        assert_eq!(codec.decode::<Transaction>(&codec.encode(&tx()).unwrap()).unwrap(), tx());
        assert_eq!(codec.decode::<MinutePartial>(&codec.encode(&partial).unwrap()).unwrap(), partial);
        assert_eq!(codec.decode::<MinutePartial>(&codec.encode(&idle).unwrap()).unwrap(), idle);
        assert_eq!(codec.decode::<MinuteAggregate>(&codec.encode(&agg).unwrap()).unwrap(), agg);
        assert_eq!(codec.decode::<LateEvents>(&codec.encode(&late).unwrap()).unwrap(), late);
        assert_eq!(codec.decode::<MerchantMinute>(&codec.encode(&merchant).unwrap()).unwrap(), merchant);
        // Shares tx-minute with the aggregates and late bookings: told apart by its schema alone.
        assert_eq!(
            codec.decode_any(&codec.encode(&merchant).unwrap()).unwrap(),
            Decoded::MerchantMinute(merchant.clone())
        );
        assert!(matches!(
            codec.decode::<MinuteAggregate>(&codec.encode(&merchant).unwrap()),
            Err(Error::WrongType { expected: "minute_aggregate", found: "merchant_minute" })
        ));
        assert_eq!(codec.decode::<Anomaly>(&codec.encode(&anomaly()).unwrap()).unwrap(), anomaly());
        for verdict in [&verdict, &clean] {
            assert_eq!(codec.decode::<TransactionVerdict>(&codec.encode(verdict).unwrap()).unwrap(), *verdict);
        }
    }
    // A decoder without the id cannot read a Confluent frame; one with it reads both framings.
    assert!(matches!(so.decode::<Transaction>(&cf.encode(&tx()).unwrap()), Err(Error::UnknownSchemaId(100))));
    assert_eq!(cf.decode::<Transaction>(&so.encode(&tx()).unwrap()).unwrap(), tx());
}

#[test]
fn decoding_rejects_garbage_truncation_trailing_bytes_and_the_wrong_type() {
    let codec = Codec::single_object();
    assert!(matches!(codec.decode_any(&[]), Err(Error::Empty)));
    assert!(matches!(codec.decode_any(b"hello"), Err(Error::UnknownFraming(b'h'))));
    assert!(matches!(codec.decode_any(&[0xC3, 0x01, 1, 2]), Err(Error::Truncated { .. })));
    assert!(matches!(codec.decode_any(&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]), Err(Error::UnknownFingerprint(_))));
    let good = codec.encode(&tx()).unwrap();
    assert!(codec.decode_any(&good[..good.len() - 3]).is_err());
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(codec.decode_any(&long), Err(Error::TrailingBytes(1))));
    assert!(matches!(
        codec.decode::<Anomaly>(&good),
        Err(Error::WrongType { expected: "anomaly", found: "transaction" })
    ));
}

/// Confluent ids in the order of `avsc::ALL`, from 1: the codec of the `avro_decode` fuzz target.
fn fuzz_codec() -> Codec {
    let ids: Vec<(&str, u32)> = avsc::ALL.iter().zip(1u32..).map(|((name, _), id)| (*name, id)).collect();
    Codec::confluent_with_ids(&ids)
}

/// Found by `cargo fuzz` (fuzz/, target avro_decode): a 21-byte MinuteAggregate whose
/// auth_codes map declares a block of about 543 million entries. apache-avro reserved that many
/// entries at once (43 GB) and the process aborted; now the count is refused.
#[test]
fn a_map_block_declaring_millions_of_entries_is_refused_not_an_abort() {
    let input = include_bytes!("../../fuzz-regressions/avro_decode/crash-cfd1c375c42d74fc6c259e723e519f8b14d9f84e");
    let err = fuzz_codec().decode_any(input).unwrap_err();
    assert!(err.to_string().contains("allocat"), "{err}");
    // Just under the limit is still decoded as far as the bytes go: the datum is short.
    let mut under = input[..input.len() - 6].to_vec();
    under.extend_from_slice(&[0x80, 0x80, 0x20, 0]); // 2 * 262_144 zigzag: 262_144 entries
    assert!(fuzz_codec().decode_any(&under).is_err());
}

/// Every input the fuzzers ever crashed on (`fuzz-regressions/<target>/`) decodes or is refused.
#[test]
fn every_fuzz_regression_input_decodes_or_is_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-regressions/avro_decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let _ = Codec::single_object().decode_any(&bytes);
        let _ = fuzz_codec().decode_any(&bytes);
        let _ = fuzz_codec().decode::<MinutePartial>(&bytes);
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}

proptest::proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = Codec::single_object().decode_any(&bytes);
        let _ = confluent().decode_any(&bytes);
    }

    #[test]
    fn decoding_mutated_frames_never_panics(idx in 0usize..512, val in proptest::num::u8::ANY) {
        let codec = Codec::single_object();
        let mut bytes = codec.encode(&anomaly()).unwrap();
        let i = idx % bytes.len();
        bytes[i] = val;
        let _ = codec.decode_any(&bytes);
    }
}

/// The Parsing Canonical Form and CRC-64-AVRO fingerprint agree with an independent
/// implementation (fastavro 1.13: `fingerprint(to_parsing_canonical_form(s), "CRC-64-AVRO")`
/// prints the same 8 bytes, in the little-endian order the frame holds).
#[test]
fn the_fingerprint_matches_fastavro_for_logical_types() {
    assert_eq!(
        canonical_form(avsc::TRANSACTION),
        r#"{"name":"io.vigil.v1.Transaction","type":"record","fields":[{"name":"transaction_id","type":"string"},{"name":"occurred_at","type":"long"},{"name":"status","type":{"name":"io.vigil.v1.TransactionStatus","type":"enum","symbols":["approved","denied","failed","reversed"]}},{"name":"auth_code","type":"string"},{"name":"amount_minor","type":"long"},{"name":"currency","type":"string"},{"name":"category","type":"string"},{"name":"merchant_id","type":"string"},{"name":"received_at","type":"long"}]}"#
    );
    let fp = Transaction::fingerprint();
    assert_eq!(fp.iter().map(|b| format!("{b:02x}")).collect::<String>(), "370aa28c01fd5da3");
}
