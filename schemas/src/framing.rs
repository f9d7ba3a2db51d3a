//! The two standard framings and the codec every service uses.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Hex;
use crate::events::{
    Anomaly, LateEvents, MerchantMinute, MinuteAggregate, MinutePartial, Transaction, TransactionVerdict,
};
use crate::registry::SchemaRegistry;
use crate::subjects::{TopicBindings, COMPATIBILITY};
use crate::{avsc, Error, Result};

/// Avro single-object encoding marker (Avro specification, "Single-object encoding").
const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Confluent wire format magic byte.
const CONFLUENT_MAGIC: u8 = 0x00;
/// The longest string and the most items of one array or map block a datum may declare.
///
/// apache-avro refuses lengths above its allocation limit (512 MiB by default) but reserves an
/// array or map block's declared item count times the item's size (about 80 bytes), so a
/// 21-byte message declaring 500 million items made the decoder ask for 43 GB and abort the
/// process (found by `cargo fuzz`, see `fuzz/`). A message is at most 1 MiB on a default
/// broker and ours are far smaller; 256 Ki bounds that reservation to about 20 MB.
pub const MAX_DECODED_LEN: usize = 256 * 1024;

/// How [`Codec::encode`] frames messages. Decoding accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    SingleObject,
    Confluent,
}

/// A schema this build knows, parsed once.
struct Known {
    name: &'static str,
    source: &'static str,
    schema: Schema,
    fingerprint: [u8; 8],
}

fn known() -> &'static [Known] {
    static KNOWN: OnceLock<Vec<Known>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        avsc::ALL
            .iter()
            .map(|(name, source)| {
                // The .avsc files are part of this crate and covered by its tests.
                #[allow(clippy::expect_used)]
                let schema = Schema::parse_str(source).expect("embedded .avsc parses");
                let fp = without_logical_types(source).fingerprint::<Rabin>().bytes;
                let mut fingerprint = [0u8; 8];
                fingerprint.copy_from_slice(&fp[..8]);
                Known { name, source, schema, fingerprint }
            })
            .collect()
    })
}

/// The schema's Parsing Canonical Form (Avro specification).
///
/// apache-avro 0.21's `canonical_form` keeps `{"type":"long"}` for a long with a logical type
/// instead of reducing it to `"long"` (its [PRIMITIVES] rule runs before `logicalType` is
/// stripped), which gives a fingerprint no other implementation computes. Stripping the
/// logical types first lets it produce the form the specification defines.
pub fn canonical_form(source: &str) -> String {
    without_logical_types(source).canonical_form()
}

fn without_logical_types(source: &str) -> Schema {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("logicalType");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json: serde_json::Value = serde_json::from_str(source).unwrap_or_default();
    strip(&mut json);
    // The embedded .avsc files parse (tested); so does any of them without logical types.
    #[allow(clippy::expect_used)]
    Schema::parse(&json).expect("embedded .avsc parses")
}

fn known_by_name(name: &str) -> Option<&'static Known> {
    known().iter().find(|k| k.name == name)
}

/// An event type with an `.avsc` contract.
pub trait WireEvent: Serialize + DeserializeOwned + Sized {
    /// The record's full name in its schema.
    const NAME: &'static str;
    /// A short label for messages and metrics.
    const LABEL: &'static str;

    fn schema() -> &'static Schema {
        &known_by_name(Self::NAME).unwrap_or_else(|| unreachable!("{} is embedded", Self::NAME)).schema
    }

    /// The CRC-64-AVRO fingerprint of the schema's canonical form, little-endian.
    fn fingerprint() -> [u8; 8] {
        known_by_name(Self::NAME).unwrap_or_else(|| unreachable!("{} is embedded", Self::NAME)).fingerprint
    }

    fn into_decoded(self) -> Decoded;
    fn from_decoded(d: Decoded) -> Option<Self>;
}

/// Any event, for topics that carry several types.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Transaction(Transaction),
    MinutePartial(MinutePartial),
    MinuteAggregate(MinuteAggregate),
    LateEvents(LateEvents),
    Anomaly(Anomaly),
    MerchantMinute(MerchantMinute),
    TransactionVerdict(TransactionVerdict),
}

impl Decoded {
    pub fn label(&self) -> &'static str {
        match self {
            Decoded::Transaction(_) => Transaction::LABEL,
            Decoded::MinutePartial(_) => MinutePartial::LABEL,
            Decoded::MinuteAggregate(_) => MinuteAggregate::LABEL,
            Decoded::LateEvents(_) => LateEvents::LABEL,
            Decoded::Anomaly(_) => Anomaly::LABEL,
            Decoded::MerchantMinute(_) => MerchantMinute::LABEL,
            Decoded::TransactionVerdict(_) => TransactionVerdict::LABEL,
        }
    }
}

macro_rules! wire_event {
    ($ty:ident, $name:literal, $label:literal) => {
        impl WireEvent for $ty {
            const NAME: &'static str = $name;
            const LABEL: &'static str = $label;
            fn into_decoded(self) -> Decoded {
                Decoded::$ty(self)
            }
            fn from_decoded(d: Decoded) -> Option<Self> {
                match d {
                    Decoded::$ty(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

wire_event!(Transaction, "io.vigil.v1.Transaction", "transaction");
wire_event!(MinutePartial, "io.vigil.v1.MinutePartial", "minute_partial");
wire_event!(MinuteAggregate, "io.vigil.v1.MinuteAggregate", "minute_aggregate");
wire_event!(LateEvents, "io.vigil.v1.LateEvents", "late_events");
wire_event!(Anomaly, "io.vigil.v1.Anomaly", "anomaly");
wire_event!(MerchantMinute, "io.vigil.v1.MerchantMinute", "merchant_minute");
wire_event!(TransactionVerdict, "io.vigil.v1.TransactionVerdict", "transaction_verdict");

/// Encodes and decodes every Vigil event.
///
/// Cheap to share behind an `Arc`; the schema-id table is behind a lock only because a registry
/// may teach it ids at run time.
pub struct Codec {
    framing: Framing,
    /// Confluent schema id -> (record name, writer schema).
    ids: RwLock<HashMap<u32, (String, Schema)>>,
    /// Our own record name -> the id the registry gave it.
    own_ids: RwLock<HashMap<&'static str, u32>>,
    registry: Option<SchemaRegistry>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("framing", &self.framing).finish_non_exhaustive()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Self::single_object()
    }
}

impl Codec {
    /// Frames as Avro single-object encoding; decodes both framings (Confluent ids only once
    /// learnt, see [`Codec::learn_schema_id`]).
    pub fn single_object() -> Self {
        Codec { framing: Framing::SingleObject, ids: RwLock::default(), own_ids: RwLock::default(), registry: None }
    }

    /// Frames as single-object encoding but resolves unknown Confluent schema ids with
    /// `registry` (for consumers that only read).
    pub fn reading_with_registry(registry: SchemaRegistry) -> Self {
        Codec { registry: Some(registry), ..Codec::single_object() }
    }

    /// Registers every schema on its default topic ([`TopicBindings::defaults`]) and frames in
    /// the Confluent wire format. Services pass the topics they are configured with to
    /// [`Codec::with_registry_for`] instead.
    pub async fn with_registry(registry: SchemaRegistry) -> Result<Self> {
        Self::with_registry_for(registry, &TopicBindings::defaults()).await
    }

    /// Registers the schema of each record type in `bindings` under its topic's subject
    /// ([`crate::subjects`]: `<topic>-value`, or `<topic>-<record>` on a topic carrying several
    /// types), after setting that subject's compatibility to [`COMPATIBILITY`], and frames in
    /// the Confluent wire format. A service binds what it writes and what it reads (registering
    /// a schema that is already there only returns its id), so it encodes and decodes those
    /// types without asking the registry again; other ids are learnt with
    /// [`Codec::learn_schema_id`].
    pub async fn with_registry_for(registry: SchemaRegistry, bindings: &TopicBindings) -> Result<Self> {
        let codec = Codec {
            framing: Framing::Confluent,
            ids: RwLock::default(),
            own_ids: RwLock::default(),
            registry: Some(registry),
        };
        let registry = codec.registry.as_ref().unwrap_or_else(|| unreachable!());
        for (subject, record) in bindings.subjects() {
            let k = known_by_name(record).unwrap_or_else(|| unreachable!("{record} is embedded"));
            registry.set_compatibility(&subject, COMPATIBILITY).await?;
            let id = registry.register(&subject, k.source).await?;
            codec.own_ids.write().unwrap_or_else(|e| e.into_inner()).insert(k.name, id);
            codec.ids.write().unwrap_or_else(|e| e.into_inner()).insert(id, (k.name.to_owned(), k.schema.clone()));
        }
        Ok(codec)
    }

    /// Frames in the Confluent wire format with ids assigned out of band (tools and tests that
    /// have no registry): `ids` maps each record full name to its id.
    pub fn confluent_with_ids(ids: &[(&str, u32)]) -> Self {
        let codec = Codec::single_object();
        let mut own = codec.own_ids.write().unwrap_or_else(|e| e.into_inner());
        for (name, id) in ids {
            if let Some(k) = known_by_name(name) {
                own.insert(k.name, *id);
                codec.insert_schema_id(*id, k.name, k.schema.clone());
            }
        }
        drop(own);
        Codec { framing: Framing::Confluent, ..codec }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn encode<T: WireEvent>(&self, event: &T) -> Result<Vec<u8>> {
        let value = apache_avro::to_value(event)?.resolve(T::schema())?;
        let mut out = Vec::with_capacity(128);
        match self.framing {
            Framing::SingleObject => {
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(&T::fingerprint());
            }
            Framing::Confluent => {
                let id = *self
                    .own_ids
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(T::NAME)
                    .ok_or_else(|| Error::Registry(format!("{} was never registered", T::NAME)))?;
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        out.extend_from_slice(&apache_avro::to_avro_datum(T::schema(), value)?);
        Ok(out)
    }

    /// Decodes a message that must be of type `T`.
    pub fn decode<T: WireEvent>(&self, bytes: &[u8]) -> Result<T> {
        let decoded = self.decode_any(bytes)?;
        let found = decoded.label();
        T::from_decoded(decoded).ok_or(Error::WrongType { expected: T::LABEL, found })
    }

    /// Decodes a message of any known type, whichever framing it has.
    pub fn decode_any(&self, bytes: &[u8]) -> Result<Decoded> {
        let first = *bytes.first().ok_or(Error::Empty)?;
        match first {
            0xC3 => {
                if bytes.len() < 10 {
                    return Err(Error::Truncated { framing: "single-object", len: bytes.len() });
                }
                if bytes[1] != SINGLE_OBJECT_MAGIC[1] {
                    return Err(Error::UnknownFraming(first));
                }
                let fp = &bytes[2..10];
                let k = known()
                    .iter()
                    .find(|k| k.fingerprint == fp)
                    .ok_or_else(|| Error::UnknownFingerprint(Hex(fp.to_vec())))?;
                decode_datum(k.name, &k.schema, &bytes[10..])
            }
            CONFLUENT_MAGIC => {
                if bytes.len() < 5 {
                    return Err(Error::Truncated { framing: "Confluent", len: bytes.len() });
                }
                let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                let ids = self.ids.read().unwrap_or_else(|e| e.into_inner());
                let (name, writer) = ids.get(&id).ok_or(Error::UnknownSchemaId(id))?;
                decode_datum(name, writer, &bytes[5..])
            }
            other => Err(Error::UnknownFraming(other)),
        }
    }

    /// Asks the registry for a schema id seen in a message, so later decodes know it.
    pub async fn learn_schema_id(&self, id: u32) -> Result<()> {
        let registry = self.registry.as_ref().ok_or(Error::UnknownSchemaId(id))?;
        let source = registry.schema_by_id(id).await?;
        let schema = Schema::parse_str(&source)?;
        let name = schema
            .name()
            .map(|n| n.fullname(None))
            .ok_or_else(|| Error::Registry(format!("schema {id} is not a named record")))?;
        self.ids.write().unwrap_or_else(|e| e.into_inner()).insert(id, (name, schema));
        Ok(())
    }

    /// Teaches the codec a schema id without a registry (tests, tools).
    pub fn insert_schema_id(&self, id: u32, name: &str, writer: Schema) {
        self.ids.write().unwrap_or_else(|e| e.into_inner()).insert(id, (name.to_owned(), writer));
    }
}

fn decode_datum(name: &str, writer: &Schema, mut datum: &[u8]) -> Result<Decoded> {
    let reader = known_by_name(name).ok_or_else(|| Error::Registry(format!("no reader schema for {name}")))?;
    // Process-wide and set once: the first call wins, so it is made before every decode.
    apache_avro::util::max_allocation_bytes(MAX_DECODED_LEN);
    let value: Value = apache_avro::from_avro_datum(writer, &mut datum, Some(&reader.schema))?;
    if !datum.is_empty() {
        return Err(Error::TrailingBytes(datum.len()));
    }
    Ok(match reader.name {
        Transaction::NAME => Decoded::Transaction(apache_avro::from_value(&value)?),
        MinutePartial::NAME => Decoded::MinutePartial(apache_avro::from_value(&value)?),
        MinuteAggregate::NAME => Decoded::MinuteAggregate(apache_avro::from_value(&value)?),
        LateEvents::NAME => Decoded::LateEvents(apache_avro::from_value(&value)?),
        Anomaly::NAME => Decoded::Anomaly(apache_avro::from_value(&value)?),
        MerchantMinute::NAME => Decoded::MerchantMinute(apache_avro::from_value(&value)?),
        TransactionVerdict::NAME => Decoded::TransactionVerdict(apache_avro::from_value(&value)?),
        other => return Err(Error::Registry(format!("no Rust type for {other}"))),
    })
}

#[cfg(test)]
mod tests;
