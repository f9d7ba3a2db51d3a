//! What the write routes (triage, silences, settings) and the lists share in checking input:
//! a field error, the 422 that names each, unknown keys, and the JSON body itself.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use vigil_common::problem::{FieldError, Problem};

/// One bad field (or parameter, or header) and why.
pub fn field(name: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: name.to_owned(), message: message.into() }
}

/// 422 problem+json naming every bad field.
pub fn unprocessable(kind: &str, title: &str, errors: Vec<FieldError>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, kind, title).with_errors(errors)
}

/// An error per key not in `allowed` (`what`: "field" or "parameter").
pub fn unknown_keys<'a>(keys: impl IntoIterator<Item = &'a String>, allowed: &[&str], what: &str) -> Vec<FieldError> {
    keys.into_iter().filter(|k| !allowed.contains(&k.as_str())).map(|k| field(k, format!("unknown {what}"))).collect()
}

/// A write route's body: `application/json`, parsed (415 and 400 problem+json otherwise).
pub fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Problem> {
    vigil_common::body::require_media_type(headers, &["application/json"])?;
    vigil_common::body::parse_json(body)
}
