//! Writes the seed inputs of the Avro and cursor targets to `fuzz/seeds/<target>/`: every
//! sample event in both framings, the older Anomaly writer's frame, and valid cursors. The
//! webhook payload target is seeded from `webhook/tests/fixtures/` directly.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpora` (the seeds are committed;
//! re-run it when the schemas change).

use std::path::{Path, PathBuf};

use vigil_webhook::listing::cursor::{Cursor, List};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let avro = root.join("avro_decode");
    let cursor = root.join("webhook_cursor");
    for dir in [&avro, &cursor] {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    let so = vigil_fuzz::single_object();
    let cf = vigil_fuzz::confluent();
    for (i, event) in vigil_fuzz::sample_events().iter().enumerate() {
        let label = event.label();
        let single = vigil_fuzz::encode(&so, event).unwrap_or_else(|e| panic!("{label}: {e}"));
        let confluent = vigil_fuzz::encode(&cf, event).unwrap_or_else(|e| panic!("{label}: {e}"));
        write(&avro, &format!("{i}-{label}-single-object.bin"), &single);
        write(&avro, &format!("{i}-{label}-confluent.bin"), &confluent);
        if let vigil_schemas::Decoded::Anomaly(a) = event {
            write(&avro, &format!("{i}-{label}-confluent-older-writer.bin"), &vigil_fuzz::evolved_anomaly_frame(a));
        }
    }
    for (list, tag, name) in [(List::Anomalies, b'a', "anomalies"), (List::ReceivedAlerts, b'r', "received")] {
        // The layout `Cursor::encode` documents: the list's tag, micros and id, big-endian, hex.
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&1_795_000_000_123_456i64.to_be_bytes());
        bytes.extend_from_slice(&42i64.to_be_bytes());
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let decoded = Cursor::decode(list, &hex).unwrap_or_else(|e| panic!("the {name} seed cursor: {e}"));
        write(&cursor, &format!("{name}.txt"), decoded.encode(list).as_bytes());
    }
    println!("Seeds written to {}.", root.display());
}
