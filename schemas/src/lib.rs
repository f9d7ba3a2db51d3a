//! Vigil's wire contracts.
//!
//! One `.avsc` file per event type lives beside this crate's manifest and is embedded at compile
//! time; every service encodes and decodes through [`Codec`], so none defines the wire format
//! itself. Two framings are supported, both standard:
//!
//! * **Avro single-object encoding** (the Avro specification): `C3 01`, the 8-byte little-endian
//!   CRC-64-AVRO (Rabin) fingerprint of the schema's canonical form, then the binary datum.
//! * **Confluent wire format** (used with a schema registry): byte `0`, the 4-byte big-endian
//!   schema id, then the binary datum.
//!
//! Decoders accept both, whatever the encoder was configured with.

mod error;
mod events;
mod framing;
mod registry;
pub mod settings;
pub mod subjects;

pub use error::{Error, Result};
pub use events::{
    Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, CategoryMinute, LateEvents, MerchantMinute, MinuteAggregate,
    MinutePartial, PartialKind, Severity, Transaction, TransactionStatus, TransactionVerdict, VerdictDecision,
};
pub use framing::{canonical_form, Codec, Decoded, Framing, WireEvent};
pub use registry::{RegistryOptions, SchemaRegistry};
pub use subjects::TopicBindings;

/// The embedded schema sources, by event type.
pub mod avsc {
    pub const TRANSACTION: &str = include_str!("../transaction.avsc");
    pub const MINUTE_PARTIAL: &str = include_str!("../minute_partial.avsc");
    pub const MINUTE_AGGREGATE: &str = include_str!("../minute_aggregate.avsc");
    pub const LATE_EVENTS: &str = include_str!("../late_events.avsc");
    pub const ANOMALY: &str = include_str!("../anomaly.avsc");
    pub const MERCHANT_MINUTE: &str = include_str!("../merchant_minute.avsc");
    pub const TRANSACTION_VERDICT: &str = include_str!("../transaction_verdict.avsc");

    /// Every schema by its record's full name. The registry subjects they are registered under
    /// follow the topics they are written to: see [`crate::subjects`].
    pub const ALL: [(&str, &str); 7] = [
        ("io.vigil.v1.Transaction", TRANSACTION),
        ("io.vigil.v1.MinutePartial", MINUTE_PARTIAL),
        ("io.vigil.v1.MinuteAggregate", MINUTE_AGGREGATE),
        ("io.vigil.v1.LateEvents", LATE_EVENTS),
        ("io.vigil.v1.Anomaly", ANOMALY),
        ("io.vigil.v1.MerchantMinute", MERCHANT_MINUTE),
        ("io.vigil.v1.TransactionVerdict", TRANSACTION_VERDICT),
    ];
}

/// Topic names used by default. Every service lets them be overridden by configuration.
pub mod topics {
    pub const TRANSACTIONS: &str = "transactions";
    pub const PARTIALS: &str = "tx-partials";
    pub const MINUTES: &str = "tx-minute";
    pub const ANOMALIES: &str = "anomalies";
    pub const CHECKPOINTS: &str = "detector-checkpoints";
    pub const DEAD_LETTER: &str = "vigil-dead-letter";
    /// The detector's verdicts on transactions whose producer asked for one.
    pub const VERDICTS: &str = "transaction-verdicts";
    /// The detector's rule settings changed at run time (JSON, compacted; see `settings`).
    pub const SETTINGS: &str = "detector-settings";
}
