//! `GET /alerts` (detector anomalies) and `GET /grafana/alerts` (received Grafana and
//! Alertmanager alerts): newest first, keyset pagination with an opaque cursor.
//!
//! Query parameters are checked strictly: an unknown, repeated or bad parameter is a 422 naming
//! it, so a typo (`?severty=`) never silently returns everything.

pub mod cursor;
pub mod filter;
pub mod store;

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use vigil_common::problem::{FieldError, Problem};

use self::cursor::{Cursor, List};
use self::store::{AnomalyItem, ReceivedAlertItem, ReceivedFilter};
use crate::error::ApiError;
use crate::notifications::{AlertStatus, Source};
use crate::openapi::ProblemDoc;
use crate::state::AppState;

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page; a larger `limit` is capped to it.
pub const MAX_LIMIT: i64 = 500;

/// Query of `GET /alerts`. Filters combine (all must hold) and keep the cursor's order: pass the
/// same filters with each `cursor`. A list's values are comma-separated and match any of them.
/// The times are those of `created_at`, when the sink first stored the anomaly (the list's order).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AnomalyListParams {
    /// Rows per page, at least 1; default 50, values above 500 are capped to 500.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
    /// Only anomalies of this transaction (amount rules), exactly as sent.
    #[param(min_length = 1, max_length = 255)]
    transaction_id: Option<String>,
    /// Only these rules, comma-separated: denied_rate, failed_rate, reversed_rate, auth_code_rate,
    /// amount_zscore, amount_low_variance, volume_drop, volume_surge.
    rule: Option<String>,
    /// Only these severities, comma-separated: medium, high, critical.
    severity: Option<String>,
    /// Only this severity and those above it: medium, high or critical.
    min_severity: Option<String>,
    /// Only anomalies whose latest state is one of these, comma-separated: firing, updated, resolved.
    state: Option<String>,
    /// Only anomalies of this merchant (merchant rates and volumes, amount rules), exactly as sent.
    #[param(min_length = 1, max_length = 128)]
    merchant_id: Option<String>,
    /// Only anomalies stored at or after this RFC 3339 time (the same as `from`; kept for older clients).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Only anomalies stored at or after this RFC 3339 time (inclusive).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Only anomalies stored before this RFC 3339 time (exclusive); not before `from`.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Only anomalies whose triage is one of these, comma-separated: open (never triaged),
    /// acknowledged, closed.
    triage_state: Option<String>,
    /// Only anomalies assigned to this user, exactly as assigned.
    #[param(min_length = 1, max_length = 64)]
    assignee: Option<String>,
    /// true: only anomalies a silence matches; false: only those none matches.
    #[param(pattern = "^(true|false)$")]
    silenced: Option<String>,
}

/// Query of `GET /grafana/alerts`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ReceivedListParams {
    /// Rows per page, at least 1; default 50, values above 500 are capped to 500.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
    /// Only `firing` or only `resolved` state changes.
    status: Option<String>,
    /// Only alerts from `grafana` or from `alertmanager`.
    source: Option<String>,
}

/// A page of anomalies.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomalyPage {
    pub items: Vec<AnomalyItem>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A page of received alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceivedAlertPage {
    pub items: Vec<ReceivedAlertItem>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

fn invalid(errors: Vec<FieldError>) -> Problem {
    crate::validation::unprocessable("invalid-query", "Invalid query parameters", errors)
}

pub(crate) use crate::validation::field as err;

/// The parameters by name, refusing unknown and repeated ones.
fn collect(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&'static str],
    errors: &mut Vec<FieldError>,
) -> HashMap<&'static str, String> {
    let pairs = match query {
        Ok(Query(pairs)) => pairs,
        Err(e) => {
            errors.push(err("query", e.body_text()));
            return HashMap::new();
        }
    };
    let mut out = HashMap::new();
    for (k, v) in pairs {
        match allowed.iter().find(|a| **a == k) {
            Some(name) => {
                if out.insert(*name, v).is_some() {
                    errors.push(err(name, "is given more than once"));
                }
            }
            None => errors.push(err(&k, format!("is not a parameter of this route (use {})", allowed.join(", ")))),
        }
    }
    out
}

fn limit(params: &HashMap<&'static str, String>, errors: &mut Vec<FieldError>) -> i64 {
    match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(n) if n >= 1 => n.min(MAX_LIMIT),
            _ => {
                errors.push(err(
                    "limit",
                    format!("must be a whole number of at least 1 (at most {MAX_LIMIT} are returned)"),
                ));
                DEFAULT_LIMIT
            }
        },
    }
}

fn cursor(list: List, params: &HashMap<&'static str, String>, errors: &mut Vec<FieldError>) -> Option<Cursor> {
    let raw = params.get("cursor").filter(|c| !c.is_empty())?;
    Cursor::decode(list, raw).map_err(|m| errors.push(err("cursor", m))).ok()
}

fn next_cursor<T>(items: &mut Vec<T>, limit: i64, list: List, at: impl Fn(&T) -> Cursor) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| at(last).encode(list))
    } else {
        None
    }
}

/// Lists detector anomalies, newest first.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "alerts",
    params(AnomalyListParams),
    responses(
        (status = 200, description = "One page, newest first", body = AnomalyPage),
        (status = 401, description = "Missing or wrong token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad parameter (an unknown rule, severity or state, a malformed time, `from` after `to`...); `errors` names each", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Our failure", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_anomalies(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<AnomalyPage>, ApiError> {
    state.authorize_read(&headers)?;
    let mut errors = Vec::new();
    let params = collect(query, &filter::PARAMETERS, &mut errors);
    let limit = limit(&params, &mut errors);
    let cursor = cursor(List::Anomalies, &params, &mut errors);
    let filter = filter::anomaly_filter(&params, &mut errors);
    if !errors.is_empty() {
        return Err(invalid(errors).into());
    }
    let mut items = store::anomalies(&state.pool, &state.metrics.db, &filter, cursor, limit).await?;
    let next_cursor = next_cursor(&mut items, limit, List::Anomalies, AnomalyItem::cursor);
    Ok(Json(AnomalyPage { items, next_cursor }))
}

/// Lists received Grafana and Alertmanager alert state changes, newest first.
#[utoipa::path(
    get,
    path = "/grafana/alerts",
    tag = "alerts",
    params(ReceivedListParams),
    responses(
        (status = 200, description = "One page, newest first", body = ReceivedAlertPage),
        (status = 401, description = "Missing or wrong token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad parameter; `errors` names it", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Our failure", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_received(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ReceivedAlertPage>, ApiError> {
    state.authorize_read(&headers)?;
    let mut errors = Vec::new();
    let params = collect(query, &["limit", "cursor", "status", "source"], &mut errors);
    let limit = limit(&params, &mut errors);
    let cursor = cursor(List::ReceivedAlerts, &params, &mut errors);
    let status = params.get("status").and_then(|raw| match AlertStatus::parse(raw.trim()) {
        Some(s) => Some(s.as_str().to_owned()),
        None => {
            errors.push(err("status", format!("{raw:?} is not firing or resolved")));
            None
        }
    });
    let source = params.get("source").and_then(|raw| match Source::parse(raw.trim()) {
        Some(s) => Some(s.as_str().to_owned()),
        None => {
            errors.push(err("source", format!("{raw:?} is not grafana or alertmanager")));
            None
        }
    });
    if !errors.is_empty() {
        return Err(invalid(errors).into());
    }
    let filter = ReceivedFilter { status, source };
    let mut items = store::received_alerts(&state.pool, &state.metrics.db, &filter, cursor, limit).await?;
    let next_cursor = next_cursor(&mut items, limit, List::ReceivedAlerts, ReceivedAlertItem::cursor);
    Ok(Json(ReceivedAlertPage { items, next_cursor }))
}
