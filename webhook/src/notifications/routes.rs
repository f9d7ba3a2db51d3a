//! `POST /grafana/webhook` and `POST /alertmanager/webhook`.
//!
//! Checks run cheapest first, and nothing is stored unless all pass: bearer token (401), body
//! size (413), Grafana signature (401), JSON syntax (400), shape (422), then one transaction.
//! The Content-Type is not checked: senders' templates and proxies vary, and the body must parse
//! as JSON whatever it claims to be.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use vigil_common::body::{parse_json, read_limited};
use vigil_common::problem::{FieldError, Problem};

use super::{parse, store, Source};
use crate::auth::Access;
use crate::error::ApiError;
use crate::openapi::ProblemDoc;
use crate::state::AppState;

/// The answer to an accepted notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Id of the stored raw notification (one per accepted request, re-sends included).
    pub notification_id: i64,
    /// Alerts in the body.
    pub alerts: usize,
    /// Alert state changes stored by this request.
    pub stored: u64,
    /// Alert state changes already stored by an earlier request (a re-send), ignored.
    pub duplicates: u64,
    /// Firing alerts whose resolution this request recorded.
    pub resolved: u64,
}

fn unprocessable(errors: Vec<FieldError>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-notification", "The notification has the wrong shape")
        .with_errors(errors)
}

/// Receives a Grafana unified-alerting webhook notification.
///
/// Authenticate with `Authorization: Bearer <token>` (the contact point's
/// `authorization_scheme`/`authorization_credentials`) when tokens are configured, and with the
/// HMAC signature when secrets are configured (both when both are). Each alert state change is
/// stored once, however often the notification is re-sent.
#[utoipa::path(
    post,
    path = "/grafana/webhook",
    tag = "inbound",
    request_body(content = super::wire::GrafanaNotification, content_type = "application/json"),
    params(
        ("X-Grafana-Alerting-Signature" = Option<String>, Header,
            description = "Hex HMAC-SHA256 of `timestamp:body` (or of the body alone without a timestamp); required when WEBHOOK_HMAC_SECRETS is set. The header name is WEBHOOK_HMAC_HEADER."),
        ("X-Grafana-Alerting-Signature-Timestamp" = Option<String>, Header,
            description = "Unix seconds the signature covers; refused beyond WEBHOOK_MAX_CLOCK_SKEW. The header name is WEBHOOK_HMAC_TIMESTAMP_HEADER."),
    ),
    responses(
        (status = 200, description = "Stored (or already stored: see `duplicates`)", body = Accepted),
        (status = 400, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token, wrong signature or stale timestamp", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds WEBHOOK_MAX_BODY_BYTES", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or has the wrong type; `errors` names it", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Our failure; nothing was stored, retry", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("grafana_hmac" = []))
)]
pub async fn grafana(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    receive(&state, Source::Grafana, &headers, body).await
}

/// Receives a Prometheus Alertmanager webhook notification (`version` "4").
///
/// Authenticate with `Authorization: Bearer <token>` (`http_config.authorization.credentials`).
/// An alert without `fingerprint` (Alertmanager before 0.19) gets the one Alertmanager would
/// compute from its labels.
#[utoipa::path(
    post,
    path = "/alertmanager/webhook",
    tag = "inbound",
    request_body(content = super::wire::AlertmanagerNotification, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or already stored: see `duplicates`)", body = Accepted),
        (status = 400, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds WEBHOOK_MAX_BODY_BYTES", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or has the wrong type; `errors` names it", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Our failure; nothing was stored, retry", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn alertmanager(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    receive(&state, Source::Alertmanager, &headers, body).await
}

async fn receive(
    state: &AppState,
    source: Source,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let auth = &state.config.auth;
    let name = source.as_str();
    let bearer = match source {
        Source::Grafana => auth.check_grafana_bearer(headers),
        Source::Alertmanager => auth.check_bearer(headers, Access::Write),
    };
    bearer.map_err(|why| state.unauthorized(name, why))?;

    let reject = |reason: &'static str| {
        state.metrics.rejected(name, reason);
    };
    let bytes = read_limited(body, state.config.max_body_bytes).await.inspect_err(|_| reject("too_large"))?;
    if source == Source::Grafana {
        let now = chrono::Utc::now().timestamp();
        auth.check_signature(headers, &bytes, now).map_err(|why| state.unauthorized(name, why))?;
    }
    let value = parse_json(&bytes).inspect_err(|_| reject("malformed"))?;
    if !value.is_object() {
        reject("invalid");
        return Err(unprocessable(vec![FieldError {
            field: "body".into(),
            message: "must be a JSON object with receiver, status and alerts".into(),
        }])
        .into());
    }
    let notification = parse(source, &value).map_err(|errors| {
        reject("invalid");
        unprocessable(errors)
    })?;

    let started = Instant::now();
    let stored = store::store(&state.pool, &state.metrics.db, &notification, &value).await?;
    state.metrics.store_duration.observe(started.elapsed().as_secs_f64());
    let m = &state.metrics;
    m.accepted(name, notification.status.as_str());
    m.stored(name, "firing", stored.firing);
    m.stored(name, "resolved", stored.resolved);
    m.duplicates(name, stored.duplicates);
    m.resolved(name, stored.closed);
    tracing::info!(
        source = name,
        notification_id = stored.notification_id,
        alerts = notification.alerts.len(),
        stored = stored.firing + stored.resolved,
        duplicates = stored.duplicates,
        resolved = stored.closed,
        "Stored a notification."
    );
    Ok(Json(Accepted {
        notification_id: stored.notification_id,
        alerts: notification.alerts.len(),
        stored: stored.firing + stored.resolved,
        duplicates: stored.duplicates,
        resolved: stored.closed,
    }))
}
