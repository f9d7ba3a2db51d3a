//! Any bytes as the `cursor` query parameter of the two list routes: refused or decoded, and a
//! decoded cursor encodes back to one that decodes to the same position.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_webhook::listing::cursor::{Cursor, List};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    for list in [List::Anomalies, List::ReceivedAlerts] {
        if let Ok(c) = Cursor::decode(list, &raw) {
            let again = c.encode(list);
            assert_eq!(again.len(), 34);
            assert_eq!(Cursor::decode(list, &again), Ok(c));
        }
    }
});
