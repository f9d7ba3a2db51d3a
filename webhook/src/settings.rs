//! `POST /settings` and `GET /settings`: the detector's rule settings changed at run time.
//!
//! A record (see `vigil_schemas::settings`) names a scope (`global`, `category:<c>`,
//! `merchant:<m>`), the minute of event time it takes effect from, and the amount rule's
//! overrides. It is validated, recorded in `settings_events` (who, when, what) and published on
//! `detector-settings` (keyed `<scope>@<minute>`, acknowledged by the broker) in one step: the
//! audit row is committed only once the broker has the record. Every detector applies it from
//! that minute on; its earliest allowed minute is SETTINGS_LEAD (6 minutes, more than the
//! producer's MAX_FUTURE_SKEW) after the wall clock, so every detector has it before any
//! transaction of that minute, and a replay with the topic's records reproduces the outputs.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use vigil_common::problem::{FieldError, Problem};
use vigil_schemas::settings::{AmountOverrides, RuleSettings, MINUTE_MS};

use crate::error::ApiError;
use crate::metrics::DbQuery;
use crate::openapi::ProblemDoc;
use crate::state::AppState;

/// The body of `POST /settings`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SettingsRequest {
    /// global, category:<category> or merchant:<merchant_id>.
    scope: String,
    /// RFC 3339, a whole minute, at least SETTINGS_LEAD after now; default the earliest allowed.
    #[schema(value_type = Option<String>, format = DateTime)]
    effective_from: Option<String>,
    /// Amount rule overrides: z_medium, z_high, z_critical (1 to 20, ascending), min_severity
    /// (medium, high, critical), min_samples (10 to 10 000 000). None: back to the defaults.
    #[schema(value_type = Object)]
    amount: Option<Value>,
    comment: Option<String>,
}

/// A published record with its audit data.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct PublishedSettings {
    pub record_key: String,
    pub scope: String,
    pub effective_from: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub record: Value,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// Published settings, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsList {
    pub items: Vec<PublishedSettings>,
}

fn invalid(errors: Vec<FieldError>) -> Problem {
    crate::validation::unprocessable("invalid-settings", "Invalid settings", errors)
}

use crate::validation::field as err;

/// The earliest minute a record published at `now` may take effect from.
pub fn earliest(now: DateTime<Utc>, lead: Duration) -> i64 {
    let t = now.timestamp_millis() + lead.as_millis() as i64;
    (t + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Checks a body into a record by `actor` at wall-clock `now`, naming every bad field.
pub fn parse(value: &Value, actor: &str, now: DateTime<Utc>, lead: Duration) -> Result<RuleSettings, Problem> {
    let Some(obj) = value.as_object() else { return Err(invalid(vec![err("body", "must be a JSON object")])) };
    let mut errors =
        crate::validation::unknown_keys(obj.keys(), &["scope", "effective_from", "amount", "comment"], "field");
    let scope = obj.get("scope").and_then(Value::as_str).unwrap_or_default().to_owned();
    let min_from = earliest(now, lead);
    let effective_from = match obj.get("effective_from") {
        None | Some(Value::Null) => min_from,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.timestamp_millis(),
            Err(e) => {
                errors.push(err("effective_from", format!("an RFC 3339 time ({e})")));
                min_from
            }
        },
        Some(_) => {
            errors.push(err("effective_from", "an RFC 3339 time"));
            min_from
        }
    };
    if effective_from < min_from {
        let at = Utc.timestamp_millis_opt(min_from).single().unwrap_or_default();
        errors.push(err(
            "effective_from",
            format!("at the earliest {} (SETTINGS_LEAD after now, so every detector has it first)", at.to_rfc3339()),
        ));
    }
    let amount: AmountOverrides = match obj.get("amount") {
        None | Some(Value::Null) => AmountOverrides::default(),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(a) => a,
            Err(e) => {
                errors.push(err("amount", format!("z_medium, z_high, z_critical, min_severity, min_samples ({e})")));
                AmountOverrides::default()
            }
        },
    };
    let comment = match obj.get("comment") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errors.push(err("comment", "a string"));
            String::new()
        }
    };
    let record = RuleSettings { scope, effective_from, amount, actor: actor.to_owned(), comment };
    for (field, message) in record.problems() {
        if !errors.iter().any(|e| e.field == field) {
            errors.push(err(field, message));
        }
    }
    if errors.is_empty() {
        Ok(record)
    } else {
        Err(invalid(errors))
    }
}

/// Publishes a rule settings record for the detectors.
#[utoipa::path(
    post,
    path = "/settings",
    tag = "settings",
    params(("X-Vigil-User" = Option<String>, Header, description = "Who changes the settings, when the token is a write token.")),
    request_body(content = SettingsRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Recorded and acknowledged by the broker: in force from effective_from", body = PublishedSettings),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token, or a read token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad field (scope, effective_from, amount.*); `errors` names each", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not acknowledge the record: nothing changed; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = state.authorize_triage(&headers)?;
    let value = crate::validation::json_body(&headers, &body)?;
    let record = parse(&value, &actor, Utc::now(), state.config.settings_lead)?;
    let json = serde_json::to_value(&record).map_err(crate::Error::Json)?;
    let db = &state.metrics.db;
    let mut tx = db.time(DbQuery::SettingsWrite, state.pool.begin()).await?;
    let row: PublishedSettings = db
        .time(
            DbQuery::SettingsWrite,
            sqlx::query_as(
                "INSERT INTO settings_events (record_key, scope, effective_from, record, actor)
                 VALUES ($1, $2, $3, $4, $5)
                 RETURNING record_key, scope, effective_from, record, actor, at",
            )
            .bind(record.key())
            .bind(&record.scope)
            .bind(Utc.timestamp_millis_opt(record.effective_from).single().unwrap_or_default())
            .bind(&json)
            .bind(&actor)
            .fetch_one(&mut *tx),
        )
        .await?;
    let payload = json.to_string();
    let key = record.key();
    let sent = state
        .producer
        .send(
            FutureRecord::to(&state.config.settings_topic).key(&key).payload(&payload).partition(0),
            Duration::from_secs(10),
        )
        .await;
    if let Err((e, _)) = sent {
        tracing::warn!(error = %e, "A settings record was not acknowledged; nothing changed.");
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Broker unavailable")
            .detail("The settings record was not acknowledged; nothing changed. Retry.")
            .retry_after(1)
            .into());
    }
    db.time(DbQuery::SettingsWrite, tx.commit()).await?;
    tracing::info!(key = %key, actor = %actor, "Rule settings published.");
    Ok((StatusCode::CREATED, [(header::LOCATION, "/settings".to_owned())], Json(row)).into_response())
}

/// Lists published settings records, newest first (500 at most).
#[utoipa::path(
    get,
    path = "/settings",
    tag = "settings",
    params(("scope" = Option<String>, Query, description = "Only this scope (global, category:<c>, merchant:<m>).")),
    responses(
        (status = 200, description = "Newest first", body = SettingsList),
        (status = 401, description = "Missing or wrong token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad parameter", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<SettingsList>, ApiError> {
    state.authorize_read(&headers)?;
    let mut errors = crate::validation::unknown_keys(params.keys(), &["scope"], "parameter");
    if let Some(s) = params.get("scope") {
        if vigil_schemas::settings::Scope::parse(s).is_none() {
            errors.push(err("scope", "global, category:<category> or merchant:<merchant_id>"));
        }
    }
    if !errors.is_empty() {
        return Err(invalid(errors).into());
    }
    let items = state
        .metrics
        .db
        .time(
            DbQuery::SettingsRead,
            sqlx::query_as(
                "SELECT record_key, scope, effective_from, record, actor, at FROM settings_events
                 WHERE $1::text IS NULL OR scope = $1 ORDER BY seq DESC LIMIT 500",
            )
            .bind(params.get("scope"))
            .fetch_all(&state.pool),
        )
        .await?;
    Ok(Json(SettingsList { items }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T10:00:30Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_earliest_minute_is_the_lead_after_now_rounded_up() {
        let lead = Duration::from_secs(360);
        let at = Utc.timestamp_millis_opt(earliest(now(), lead)).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-12-05T10:07:00+00:00");
        let r = parse(&json!({"scope": "merchant:m-1", "amount": {"min_severity": "critical"}}), "ops", now(), lead)
            .unwrap();
        assert_eq!(r.effective_from, at.timestamp_millis());
        let fields = |v: Value| -> Vec<String> {
            match parse(&v, "ops", now(), lead) {
                Err(p) => p.errors.into_iter().map(|e| e.field).collect(),
                Ok(r) => panic!("accepted {r:?}"),
            }
        };
        assert_eq!(
            fields(json!({"scope": "merchant:m-1", "effective_from": "2026-12-05T10:03:00Z"})),
            ["effective_from"]
        );
        assert_eq!(
            fields(json!({"scope": "shop", "amount": {"z_high": 4, "z_critical": 3}, "x": 1})),
            ["x", "scope", "amount.z_critical"]
        );
        assert_eq!(fields(json!({"scope": "global", "amount": {"z_hgh": 4}})), ["amount"]);
        assert_eq!(fields(json!({"scope": "global", "effective_from": "2026-12-05T11:00:30Z"})), ["effective_from"]);
    }
}
