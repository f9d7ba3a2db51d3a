//! The OpenAPI document, generated from the handlers' annotations (`utoipa`), served at
//! `/openapi.json`. The operational routes come from `vigil_common`, so they are described here
//! by stubs that are never routed.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// RFC 9457 problem details: every error of every route.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// URI naming the kind of problem, e.g. https://vigil.dev/problems/invalid-notification.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
    /// The fields at fault (422).
    pub errors: Option<Vec<FieldErrorDoc>>,
}

/// One field at fault.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorDoc {
    /// Path of the field or name of the parameter, e.g. `alerts[0].status` or `limit`.
    pub field: String,
    pub message: String,
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDoc {
    pub status: String,
}

/// The process answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = StatusDoc)))]
#[allow(dead_code)]
fn health() {}

/// The database is reachable and every migration is applied.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = StatusDoc),
        (status = 503, description = "Not ready; `detail` says why", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
#[allow(dead_code)]
fn ready() {}

/// Prometheus metrics (`vigil_webhook_*`), OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics exposition", body = String, content_type = "application/openmetrics-text")))]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
#[allow(dead_code)]
fn openapi_json() {}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "WEBHOOK_TOKENS / WEBHOOK_TOKEN on every route; WEBHOOK_READ_TOKENS on the GET routes only.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "grafana_hmac",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Grafana-Alerting-Signature",
                "Grafana's HMAC-SHA256 signature with one of WEBHOOK_HMAC_SECRETS (see the route's header parameters).",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vigil webhook",
        description = "Receives Grafana and Alertmanager notifications, lists received alerts and detector anomalies. \
                       Critical anomalies are also POSTed to external webhooks as `OutboundAnomaly`, signed with \
                       `X-Vigil-Signature: sha256=<hex HMAC-SHA256 of \"<X-Vigil-Timestamp>.<body>\">`."
    ),
    paths(health, ready, metrics, openapi_json),
    components(schemas(ProblemDoc, FieldErrorDoc, crate::outbound::payload::OutboundAnomaly)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "inbound", description = "Notifications from Grafana and Alertmanager"),
        (name = "alerts", description = "Lists, newest first, with keyset pagination"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;
