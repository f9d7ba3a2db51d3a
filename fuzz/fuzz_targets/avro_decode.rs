//! Any bytes through the Avro decoders, in both framings: `Codec::decode_any` and the typed
//! `decode::<T>` of a codec without Confluent ids and of one that knows six (one of them an
//! older writer schema). See `vigil_fuzz::check_decoders` for what must hold.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vigil_schemas::Codec;

fn codecs() -> &'static [Codec; 2] {
    static CODECS: OnceLock<[Codec; 2]> = OnceLock::new();
    CODECS.get_or_init(|| [vigil_fuzz::single_object(), vigil_fuzz::confluent()])
}

fuzz_target!(|data: &[u8]| {
    vigil_fuzz::check_decoders(codecs(), data);
});
