//! The signature on outbound deliveries, so a receiver can tell they come from us and are fresh.
//!
//! `X-Vigil-Timestamp: <unix seconds>` and `X-Vigil-Signature: sha256=<hex>`, where hex is the
//! HMAC-SHA256 with the shared secret of `<timestamp>.<body>` (the exact bytes sent). Receivers
//! should refuse timestamps far from their clock, and deduplicate on `X-Vigil-Anomaly-Id` with
//! the body's `severity` (an anomaly is pushed once per severity it reaches): delivery is at least
//! once.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "x-vigil-timestamp";
pub const SIGNATURE_HEADER: &str = "x-vigil-signature";
pub const ANOMALY_ID_HEADER: &str = "x-vigil-anomaly-id";
pub const DELIVERY_ID_HEADER: &str = "x-vigil-delivery-id";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Vigil-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Checks a `X-Vigil-Signature` value in constant time (for receivers written in Rust, and tests).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else { return false };
    let Ok(bytes) = hex::decode(hex_sig) else { return false };
    mac(secret, timestamp, body).verify_slice(&bytes).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_an_independent_hmac() {
        // `printf '%s' '1700000000.{"id":"a1"}' | openssl dgst -sha256 -hmac outbound-secret-0001`
        let sig = sign(b"outbound-secret-0001", 1_700_000_000, br#"{"id":"a1"}"#);
        assert_eq!(sig, "sha256=0fb126117c7153f2b9514f76d664e0ca98a2ebc3cf93362680cdf103d1d4ca06");
        assert!(verify(b"outbound-secret-0001", 1_700_000_000, br#"{"id":"a1"}"#, &sig));
    }

    #[test]
    fn another_secret_timestamp_or_body_fails_verification() {
        let sig = sign(b"outbound-secret-0001", 1_700_000_000, b"{}");
        assert!(!verify(b"outbound-secret-0002", 1_700_000_000, b"{}", &sig));
        assert!(!verify(b"outbound-secret-0001", 1_700_000_001, b"{}", &sig));
        assert!(!verify(b"outbound-secret-0001", 1_700_000_000, b"{ }", &sig));
        assert!(!verify(b"outbound-secret-0001", 1_700_000_000, b"{}", sig.trim_start_matches("sha256=")));
    }
}
