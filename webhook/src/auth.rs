//! Who may call: bearer tokens (several at once, for rotation) compared in constant time, and
//! Grafana's optional HMAC signature with a bounded clock skew against replays.
//!
//! Rules, per route:
//! * `POST /grafana/webhook`: a valid write token when tokens are configured, and a valid
//!   signature when HMAC secrets are configured (both when both are).
//! * `POST /alertmanager/webhook`: a valid write token (Alertmanager cannot sign).
//! * `GET` list routes: a valid write token or read token.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vigil_common::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Inbound credentials, validated at start-up.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Accepted on the webhooks and the read routes.
    pub write_tokens: Vec<Secret>,
    /// Accepted on the read routes only.
    pub read_tokens: Vec<Secret>,
    /// Grafana HMAC secrets; any one may have signed.
    pub hmac_secrets: Vec<Secret>,
    pub hmac_header: HeaderName,
    pub hmac_timestamp_header: HeaderName,
    pub require_timestamp: bool,
    pub max_clock_skew: Duration,
    /// Triage users and their tokens (TRIAGE_USERS).
    pub users: Vec<(String, Secret)>,
}

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Write,
    Read,
}

/// Who is triaging, as far as the token tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriageCaller {
    User(String),
    /// A write token: the user is named by the `X-Vigil-User` header.
    WriteToken,
}

/// Why a request was refused (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingToken,
    WrongToken,
    NoTokenConfigured,
    MissingSignature,
    WrongSignature,
    MissingTimestamp,
    BadTimestamp,
    StaleTimestamp,
}

impl AuthFailure {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::WrongToken => "wrong_token",
            AuthFailure::NoTokenConfigured => "no_token_configured",
            AuthFailure::MissingSignature => "missing_signature",
            AuthFailure::WrongSignature => "wrong_signature",
            AuthFailure::MissingTimestamp => "missing_timestamp",
            AuthFailure::BadTimestamp => "bad_timestamp",
            AuthFailure::StaleTimestamp => "stale_timestamp",
        }
    }

    /// What the client is told: enough to fix its configuration, nothing about our secrets.
    pub fn detail(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "Send Authorization: Bearer <token>.",
            AuthFailure::WrongToken => "The bearer token is not valid.",
            AuthFailure::NoTokenConfigured => "This route needs a bearer token and none is configured on the server.",
            AuthFailure::MissingSignature => "The HMAC signature header is missing.",
            AuthFailure::WrongSignature => "The HMAC signature does not match the body.",
            AuthFailure::MissingTimestamp => "The signature timestamp header is missing.",
            AuthFailure::BadTimestamp => "The signature timestamp is not a Unix time in seconds.",
            AuthFailure::StaleTimestamp => "The signature timestamp is outside the allowed clock skew.",
        }
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// True when `presented` equals one of `tokens`. Both sides are hashed first so the comparison
/// is constant-time in the content and the length, and every token is compared, so timing shows
/// neither which token matched nor how much of one did.
pub fn token_matches(presented: &str, tokens: &[Secret]) -> bool {
    let p = Sha256::digest(presented.as_bytes());
    let mut matched = subtle::Choice::from(0u8);
    for t in tokens {
        matched |= Sha256::digest(t.expose().as_bytes()).ct_eq(&p);
    }
    matched.into()
}

/// Grafana's signature: hex HMAC-SHA256 of `timestamp:body`, or of the body alone when it sends
/// no timestamp.
pub fn grafana_signature(secret: &[u8], timestamp: Option<&str>, body: &[u8]) -> String {
    hex::encode(grafana_mac(secret, timestamp, body).finalize().into_bytes())
}

fn grafana_mac(secret: &[u8], timestamp: Option<&str>, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    if let Some(ts) = timestamp {
        mac.update(ts.as_bytes());
        mac.update(b":");
    }
    mac.update(body);
    mac
}

/// True when `signature_hex` is the signature of the body by one of `secrets` (constant time).
pub fn verify_grafana_signature(secrets: &[Secret], signature_hex: &str, timestamp: Option<&str>, body: &[u8]) -> bool {
    let sig = signature_hex.trim();
    let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
    let Ok(bytes) = hex::decode(sig) else { return false };
    let mut ok = false;
    for s in secrets {
        ok |= grafana_mac(s.expose().as_bytes(), timestamp, body).verify_slice(&bytes).is_ok();
    }
    ok
}

impl AuthConfig {
    /// Checks the bearer token for `access`.
    pub fn check_bearer(&self, headers: &HeaderMap, access: Access) -> Result<(), AuthFailure> {
        let tokens_configured = !self.write_tokens.is_empty()
            || (access == Access::Read && !(self.read_tokens.is_empty() && self.users.is_empty()));
        if !tokens_configured {
            return Err(AuthFailure::NoTokenConfigured);
        }
        let presented = bearer(headers).ok_or(AuthFailure::MissingToken)?;
        let user_tokens: Vec<Secret> = self.users.iter().map(|(_, t)| t.clone()).collect();
        let ok = token_matches(presented, &self.write_tokens)
            | (access == Access::Read
                && (token_matches(presented, &self.read_tokens) | token_matches(presented, &user_tokens)));
        if ok {
            Ok(())
        } else {
            Err(AuthFailure::WrongToken)
        }
    }

    /// Who may triage: a TRIAGE_USERS token names its user; a write token is an integration
    /// that must name the user itself (`X-Vigil-User`). Every user token is compared, in
    /// constant time, whichever matches.
    pub fn check_triage(&self, headers: &HeaderMap) -> Result<TriageCaller, AuthFailure> {
        if self.write_tokens.is_empty() && self.users.is_empty() {
            return Err(AuthFailure::NoTokenConfigured);
        }
        let presented = bearer(headers).ok_or(AuthFailure::MissingToken)?;
        let p = Sha256::digest(presented.as_bytes());
        let mut user = None;
        for (name, t) in &self.users {
            if bool::from(Sha256::digest(t.expose().as_bytes()).ct_eq(&p)) {
                user = Some(name.clone());
            }
        }
        let write = token_matches(presented, &self.write_tokens);
        match (user, write) {
            (Some(u), _) => Ok(TriageCaller::User(u)),
            (None, true) => Ok(TriageCaller::WriteToken),
            (None, false) => Err(AuthFailure::WrongToken),
        }
    }

    /// The Grafana route's token check: required only when tokens are configured (a deployment
    /// may rely on the HMAC signature alone).
    pub fn check_grafana_bearer(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        if self.write_tokens.is_empty() {
            return Ok(());
        }
        self.check_bearer(headers, Access::Write)
    }

    /// Checks Grafana's signature when HMAC secrets are configured. `now` is Unix seconds.
    pub fn check_signature(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), AuthFailure> {
        if self.hmac_secrets.is_empty() {
            return Ok(());
        }
        let signature = headers
            .get(&self.hmac_header)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.trim().is_empty())
            .ok_or(AuthFailure::MissingSignature)?;
        let timestamp = match headers.get(&self.hmac_timestamp_header) {
            Some(v) => {
                let raw = v.to_str().map_err(|_| AuthFailure::BadTimestamp)?.trim();
                let ts: i64 = raw.parse().map_err(|_| AuthFailure::BadTimestamp)?;
                let skew = i64::try_from(self.max_clock_skew.as_secs()).unwrap_or(i64::MAX);
                if now.abs_diff(ts) > skew.unsigned_abs() {
                    return Err(AuthFailure::StaleTimestamp);
                }
                Some(raw)
            }
            None if self.require_timestamp => return Err(AuthFailure::MissingTimestamp),
            None => None,
        };
        if verify_grafana_signature(&self.hmac_secrets, signature, timestamp, body) {
            Ok(())
        } else {
            Err(AuthFailure::WrongSignature)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "grafana-hmac-secret-0001";
    const BODY: &[u8] = br#"{"status":"firing"}"#;
    // `printf '%s' '1700000000:{"status":"firing"}' | openssl dgst -sha256 -hmac grafana-hmac-secret-0001`
    const SIGNED_WITH_TS: &str = "d478f72a613bcddf08d8a45f1fef21ad9ef587338815ae1540070397cc7be518";
    // The same over the body alone.
    const SIGNED_BODY_ONLY: &str = "9d8bc6e74137cd13e10ec539a347ae0db93af816fd593e90fcae8f890fab6f9b";

    fn config() -> AuthConfig {
        AuthConfig {
            write_tokens: vec![Secret::new("write-token-0000001"), Secret::new("write-token-0000002")],
            read_tokens: vec![Secret::new("read-token-00000001")],
            hmac_secrets: vec![Secret::new("an-older-secret-000"), Secret::new(SECRET)],
            hmac_header: HeaderName::from_static("x-grafana-alerting-signature"),
            hmac_timestamp_header: HeaderName::from_static("x-grafana-alerting-signature-timestamp"),
            require_timestamp: false,
            max_clock_skew: Duration::from_secs(300),
            users: vec![],
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_grafana_signature_matches_an_independent_hmac() {
        assert_eq!(grafana_signature(SECRET.as_bytes(), Some("1700000000"), BODY), SIGNED_WITH_TS);
        assert_eq!(grafana_signature(SECRET.as_bytes(), None, BODY), SIGNED_BODY_ONLY);
    }

    #[test]
    fn a_signature_by_any_configured_secret_verifies() {
        let c = config();
        let h = headers(&[
            ("x-grafana-alerting-signature", SIGNED_WITH_TS),
            ("x-grafana-alerting-signature-timestamp", "1700000000"),
        ]);
        assert_eq!(c.check_signature(&h, BODY, 1_700_000_100), Ok(()));
        let h = headers(&[("x-grafana-alerting-signature", SIGNED_BODY_ONLY)]);
        assert_eq!(c.check_signature(&h, BODY, 1_700_000_100), Ok(()));
    }

    #[test]
    fn a_changed_body_or_timestamp_breaks_the_signature() {
        let c = config();
        let h = headers(&[
            ("x-grafana-alerting-signature", SIGNED_WITH_TS),
            ("x-grafana-alerting-signature-timestamp", "1700000001"),
        ]);
        assert_eq!(c.check_signature(&h, BODY, 1_700_000_000), Err(AuthFailure::WrongSignature));
        let h = headers(&[("x-grafana-alerting-signature", SIGNED_BODY_ONLY)]);
        assert_eq!(c.check_signature(&h, b"{}", 1_700_000_000), Err(AuthFailure::WrongSignature));
        let h = headers(&[("x-grafana-alerting-signature", "not hex")]);
        assert_eq!(c.check_signature(&h, BODY, 1_700_000_000), Err(AuthFailure::WrongSignature));
    }

    #[test]
    fn a_timestamp_beyond_the_clock_skew_is_refused_either_way() {
        let c = config();
        let h = headers(&[
            ("x-grafana-alerting-signature", SIGNED_WITH_TS),
            ("x-grafana-alerting-signature-timestamp", "1700000000"),
        ]);
        assert_eq!(c.check_signature(&h, BODY, 1_700_000_301), Err(AuthFailure::StaleTimestamp));
        assert_eq!(c.check_signature(&h, BODY, 1_699_999_699), Err(AuthFailure::StaleTimestamp));
        assert_eq!(c.check_signature(&h, BODY, 1_700_000_300), Ok(()));
        let h = headers(&[
            ("x-grafana-alerting-signature", SIGNED_WITH_TS),
            ("x-grafana-alerting-signature-timestamp", "soon"),
        ]);
        assert_eq!(c.check_signature(&h, BODY, 1_700_000_000), Err(AuthFailure::BadTimestamp));
    }

    #[test]
    fn a_required_timestamp_or_signature_that_is_missing_is_refused() {
        let mut c = config();
        assert_eq!(c.check_signature(&HeaderMap::new(), BODY, 0), Err(AuthFailure::MissingSignature));
        c.require_timestamp = true;
        let h = headers(&[("x-grafana-alerting-signature", SIGNED_BODY_ONLY)]);
        assert_eq!(c.check_signature(&h, BODY, 0), Err(AuthFailure::MissingTimestamp));
        c.hmac_secrets.clear();
        assert_eq!(c.check_signature(&HeaderMap::new(), BODY, 0), Ok(()));
    }

    #[test]
    fn bearer_tokens_are_matched_per_access() {
        let c = config();
        let w = headers(&[("authorization", "Bearer write-token-0000002")]);
        let r = headers(&[("authorization", "bearer read-token-00000001")]);
        assert_eq!(c.check_bearer(&w, Access::Write), Ok(()));
        assert_eq!(c.check_bearer(&w, Access::Read), Ok(()));
        assert_eq!(c.check_bearer(&r, Access::Read), Ok(()));
        assert_eq!(c.check_bearer(&r, Access::Write), Err(AuthFailure::WrongToken));
        assert_eq!(c.check_bearer(&HeaderMap::new(), Access::Write), Err(AuthFailure::MissingToken));
        let basic = headers(&[("authorization", "Basic d3JpdGUtdG9rZW4tMDAwMDAwMg==")]);
        assert_eq!(c.check_bearer(&basic, Access::Write), Err(AuthFailure::MissingToken));
        let prefix = headers(&[("authorization", "Bearer write-token-000000")]);
        assert_eq!(c.check_bearer(&prefix, Access::Write), Err(AuthFailure::WrongToken));
    }

    #[test]
    fn without_write_tokens_the_grafana_route_relies_on_the_signature_alone() {
        let mut c = config();
        c.write_tokens.clear();
        assert_eq!(c.check_grafana_bearer(&HeaderMap::new()), Ok(()));
        assert_eq!(c.check_bearer(&HeaderMap::new(), Access::Write), Err(AuthFailure::NoTokenConfigured));
    }
}
