//! Silences and maintenance windows: `POST /silences`, `GET /silences`, `GET /silences/{id}`,
//! `POST /silences/{id}/expire`.
//!
//! A silence matches anomalies by rule, dimension (and its value), merchant, category and
//! severities, for a window `[starts_at, ends_at)` of the anomaly's first_seen (a start in the
//! future is a planned maintenance window). A silenced anomaly is still detected and stored; it is
//! marked `silenced` in `GET /alerts` (and can be filtered on) and is not pushed outbound. At
//! least one matcher is required: a silence of everything is not a maintenance window. Silences
//! are never deleted; expiring one ends its window now (anomalies that began inside it stay
//! silenced, those beginning later are not) and both actions stay in `silence_events`.

pub mod store;

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vigil_common::problem::{FieldError, Problem};
use vigil_schemas::{AnomalyRule, Severity};

use self::store::Silence;
use crate::error::ApiError;
use crate::openapi::ProblemDoc;
use crate::state::AppState;

/// Longest silence: a window longer than this is a rule change, not maintenance.
pub const MAX_WINDOW_DAYS: i64 = 90;
const MAX_COMMENT: usize = 500;
const DIMENSIONS: [&str; 4] = ["global", "category", "merchant", "auth_code"];
const STATES: [&str; 3] = ["pending", "active", "expired"];

/// A checked request to create a silence.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub rule: Option<String>,
    pub dimension: Option<String>,
    pub dimension_value: Option<String>,
    pub merchant_id: Option<String>,
    pub category: Option<String>,
    pub severities: Option<Vec<String>>,
    /// `None`: now (the database's clock).
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
}

/// The body of `POST /silences`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SilenceRequest {
    /// denied_rate, failed_rate, reversed_rate, auth_code_rate, amount_zscore,
    /// amount_low_variance, volume_drop or volume_surge.
    rule: Option<String>,
    /// global, category, merchant or auth_code.
    dimension: Option<String>,
    /// The dimension's value (a category, merchant id or auth code; `all` for global).
    dimension_value: Option<String>,
    merchant_id: Option<String>,
    category: Option<String>,
    /// Any of medium, high, critical.
    severities: Option<Vec<String>>,
    /// RFC 3339; default now. May lie in the future (a planned maintenance window).
    #[schema(value_type = Option<String>, format = DateTime)]
    starts_at: Option<String>,
    /// RFC 3339, after starts_at and in the future, at most 90 days after starts_at.
    #[schema(value_type = String, format = DateTime)]
    ends_at: String,
    /// Why (1 to 500 characters).
    comment: String,
}

use crate::validation::field as err;

fn invalid(errors: Vec<FieldError>) -> Problem {
    crate::validation::unprocessable("invalid-silence", "Invalid silence", errors)
}

/// Checks a body into a [`NewSilence`] at wall-clock `now`, naming every bad field.
pub fn parse(value: &Value, now: DateTime<Utc>) -> Result<NewSilence, Problem> {
    let Some(obj) = value.as_object() else { return Err(invalid(vec![err("body", "must be a JSON object")])) };
    const FIELDS: [&str; 9] = [
        "rule",
        "dimension",
        "dimension_value",
        "merchant_id",
        "category",
        "severities",
        "starts_at",
        "ends_at",
        "comment",
    ];
    let mut errors = crate::validation::unknown_keys(obj.keys(), &FIELDS, "field");
    let text = |name: &str, max: usize, errors: &mut Vec<FieldError>| -> Option<String> {
        match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Some(s.clone()),
            Some(_) => {
                errors.push(err(name, format!("must be a string of 1 to {max} characters")));
                None
            }
        }
    };
    let rule = text("rule", 64, &mut errors);
    if let Some(r) = &rule {
        if !crate::listing::filter::rules().iter().any(|k| k.as_str() == r) {
            let names: Vec<&str> = crate::listing::filter::rules().iter().map(|k| AnomalyRule::as_str(*k)).collect();
            errors.push(err("rule", format!("one of {}", names.join(", "))));
        }
    }
    let dimension = text("dimension", 16, &mut errors);
    if dimension.as_deref().is_some_and(|d| !DIMENSIONS.contains(&d)) {
        errors.push(err("dimension", format!("one of {}", DIMENSIONS.join(", "))));
    }
    let dimension_value = text("dimension_value", 128, &mut errors);
    let merchant_id = text("merchant_id", 128, &mut errors);
    let category = text("category", 64, &mut errors);
    let severities = match obj.get("severities") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for i in items {
                match i.as_str().and_then(Severity::parse) {
                    Some(s) => out.push(s.as_str().to_owned()),
                    None => errors.push(err("severities", "each one of medium, high, critical")),
                }
            }
            out.sort();
            out.dedup();
            Some(out)
        }
        Some(_) => {
            errors.push(err("severities", "a non-empty list of medium, high, critical"));
            None
        }
    };
    let time = |name: &str, errors: &mut Vec<FieldError>| -> Option<DateTime<Utc>> {
        match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    errors.push(err(name, format!("must be an RFC 3339 time ({e})")));
                    None
                }
            },
            Some(_) => {
                errors.push(err(name, "must be an RFC 3339 time"));
                None
            }
        }
    };
    let starts_at = time("starts_at", &mut errors);
    let ends_at = time("ends_at", &mut errors);
    if ends_at.is_none() && !errors.iter().any(|e| e.field == "ends_at") {
        errors.push(err("ends_at", "required: when the silence ends"));
    }
    if let Some(end) = ends_at {
        let start = starts_at.unwrap_or(now);
        if end <= now {
            errors.push(err("ends_at", "must be in the future"));
        } else if end <= start {
            errors.push(err("ends_at", "must be after starts_at"));
        } else if end - start > chrono::Duration::days(MAX_WINDOW_DAYS) {
            errors.push(err("ends_at", format!("at most {MAX_WINDOW_DAYS} days after starts_at")));
        }
    }
    let comment = text("comment", MAX_COMMENT, &mut errors);
    if comment.is_none() && !errors.iter().any(|e| e.field == "comment") {
        errors.push(err("comment", format!("required: why (1 to {MAX_COMMENT} characters)")));
    }
    let matchers = [&rule, &dimension, &dimension_value, &merchant_id, &category].iter().any(|m| m.is_some())
        || severities.is_some();
    if !matchers && errors.is_empty() {
        errors.push(err(
            "rule",
            "set at least one matcher (rule, dimension, dimension_value, merchant_id, category, severities)",
        ));
    }
    match (ends_at, comment) {
        (Some(ends_at), Some(comment)) if errors.is_empty() => Ok(NewSilence {
            rule,
            dimension,
            dimension_value,
            merchant_id,
            category,
            severities,
            starts_at,
            ends_at,
            comment,
        }),
        _ => Err(invalid(errors)),
    }
}

fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail("No silence with this id.")
}

fn silence_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| invalid(vec![err("id", "must be a UUID")]))
}

/// Creates a silence (a maintenance window when it starts later).
#[utoipa::path(
    post,
    path = "/silences",
    tag = "silences",
    params(("X-Vigil-User" = Option<String>, Header, description = "Who silences, when the token is a write token.")),
    request_body(content = SilenceRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (Location: /silences/{id})", body = Silence),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token, or a read token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad field; `errors` names each", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = state.authorize_triage(&headers)?;
    let value = crate::validation::json_body(&headers, &body)?;
    let new = parse(&value, Utc::now())?;
    let silence = store::create(&state.pool, &state.metrics.db, &new, &actor).await?;
    tracing::info!(silence = %silence.id, actor = %actor, "Silence created.");
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/silences/{}", silence.id))], Json(silence)).into_response())
}

/// Query of `GET /silences`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SilenceListParams {
    /// Only these states, comma-separated: pending, active, expired.
    state: Option<String>,
}

/// Silences, newest first (500 at most).
#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceList {
    pub items: Vec<Silence>,
}

/// Lists silences, newest first.
#[utoipa::path(
    get,
    path = "/silences",
    tag = "silences",
    params(SilenceListParams),
    responses(
        (status = 200, description = "Newest first, 500 at most", body = SilenceList),
        (status = 401, description = "Missing or wrong token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad parameter", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<SilenceList>, ApiError> {
    state.authorize_read(&headers)?;
    let params = query.map(|q| q.0).unwrap_or_default();
    let mut errors = crate::validation::unknown_keys(params.keys(), &["state"], "parameter");
    let states = params.get("state").map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter_map(|s| {
                if STATES.contains(&s) {
                    Some(s.to_owned())
                } else {
                    errors.push(err("state", format!("{s:?} is not one of pending, active, expired")));
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    if !errors.is_empty() {
        return Err(crate::validation::unprocessable("invalid-query", "Invalid query parameters", errors).into());
    }
    let items = store::list(&state.pool, &state.metrics.db, states.as_deref(), 500).await?;
    Ok(Json(SilenceList { items }))
}

/// One silence.
#[utoipa::path(
    get,
    path = "/silences/{id}",
    tag = "silences",
    params(("id" = String, Path, description = "The silence's id (a UUID).")),
    responses(
        (status = 200, description = "The silence", body = Silence),
        (status = 401, description = "Missing or wrong token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No silence with this id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Silence>, ApiError> {
    state.authorize_read(&headers)?;
    let id = silence_id(&id)?;
    match store::get(&state.pool, &state.metrics.db, id).await? {
        Some(s) => Ok(Json(s)),
        None => Err(not_found().into()),
    }
}

/// Expires a pending or active silence now (it stays listed, expired).
#[utoipa::path(
    post,
    path = "/silences/{id}/expire",
    tag = "silences",
    params(
        ("id" = String, Path, description = "The silence's id (a UUID)."),
        ("X-Vigil-User" = Option<String>, Header, description = "Who expires it, when the token is a write token."),
    ),
    responses(
        (status = 200, description = "Expired", body = Silence),
        (status = 401, description = "Missing or wrong token, or a read token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No silence with this id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Already expired", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID, or X-Vigil-User is missing", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn expire(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Silence>, ApiError> {
    let actor = state.authorize_triage(&headers)?;
    let id = silence_id(&id)?;
    match store::expire(&state.pool, &state.metrics.db, id, &actor).await? {
        Some(Ok(s)) => {
            tracing::info!(silence = %s.id, actor = %actor, "Silence expired.");
            Ok(Json(s))
        }
        Some(Err(_)) => Err(Problem::new(StatusCode::CONFLICT, "already-expired", "Already expired")
            .detail("This silence is already expired.")
            .into()),
        None => Err(not_found().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn fields(v: Value) -> Vec<String> {
        match parse(&v, now()) {
            Err(p) => p.errors.into_iter().map(|e| e.field).collect(),
            Ok(s) => panic!("accepted {s:?}"),
        }
    }

    #[test]
    fn a_silence_needs_a_matcher_an_end_in_the_future_and_a_reason() {
        let ok = parse(
            &json!({"merchant_id": "m-7", "severities": ["high", "critical", "high"], "ends_at": "2026-12-05T12:00:00Z", "comment": "planned"}),
            now(),
        )
        .unwrap();
        assert_eq!(ok.severities.as_deref(), Some(&["critical".to_owned(), "high".to_owned()][..]));
        assert_eq!(ok.starts_at, None);
        assert_eq!(fields(json!({"ends_at": "2026-12-05T12:00:00Z", "comment": "x"})), ["rule"]);
        assert_eq!(fields(json!({"rule": "denied_rate", "comment": "x"})), ["ends_at"]);
        assert_eq!(
            fields(json!({"rule": "denied_rate", "ends_at": "2026-12-05T09:00:00Z", "comment": "x"})),
            ["ends_at"]
        );
        assert_eq!(
            fields(
                json!({"rule": "denied", "dimension": "shop", "severities": ["low"], "ends_at": "soon", "extra": 1})
            ),
            ["extra", "rule", "dimension", "severities", "ends_at", "comment"]
        );
        // A planned window: starts tomorrow; ends before it starts is refused.
        let planned = json!({"category": "travel", "starts_at": "2026-12-06T01:00:00Z", "ends_at": "2026-12-06T03:00:00Z", "comment": "x"});
        assert!(parse(&planned, now()).is_ok());
        assert_eq!(
            fields(
                json!({"category": "travel", "starts_at": "2026-12-06T04:00:00Z", "ends_at": "2026-12-06T03:00:00Z", "comment": "x"})
            ),
            ["ends_at"]
        );
        assert_eq!(
            fields(json!({"category": "travel", "ends_at": "2027-12-06T03:00:00Z", "comment": "x"})),
            ["ends_at"]
        );
    }
}
