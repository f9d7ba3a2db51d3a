//! Reading request bodies with the checks every JSON route needs, each answered as
//! problem+json: 415 for a content type the route does not take, 413 over the size limit,
//! 400 for malformed JSON.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};

use crate::problem::Problem;

/// The media type of a request body, without parameters, lower-cased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Checks the content type against `accepted` and returns the matched one.
pub fn require_media_type(headers: &HeaderMap, accepted: &[&'static str]) -> Result<&'static str, Problem> {
    let got = media_type(headers);
    accepted.iter().copied().find(|a| got.as_deref() == Some(*a)).ok_or_else(|| {
        Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type").detail(
            format!(
                "Content-Type {} is not accepted here; send {}.",
                got.map(|g| format!("{g:?}")).unwrap_or_else(|| "(none)".into()),
                accepted.join(" or ")
            ),
        )
    })
}

/// Reads at most `limit` bytes; a larger body is a 413.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))
}

pub fn too_large(limit: usize) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large")
        .detail(format!("The body exceeds the limit of {limit} bytes."))
}

/// Parses JSON, answering 400 with the parser's position on failure.
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, Problem> {
    serde_json::from_slice(bytes).map_err(|e| malformed(&e.to_string()))
}

pub fn malformed(detail: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON").detail(detail.to_owned())
}
