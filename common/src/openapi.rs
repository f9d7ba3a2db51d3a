//! OpenAPI pieces every service's document shares: the problem+json body and the operational
//! routes (`/live`, `/health`, `/ready`, `/metrics`, `/openapi.json`), described by stubs that are never
//! routed (the routes themselves come from [`crate::http::ops_router`]).

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// RFC 9457 problem details: the body of every error of every route.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// URI naming the kind of problem, e.g. https://vigil.dev/problems/validation.
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
    /// The field, header or parameter, e.g. `amount_minor`, `alerts[0].status` or `limit`.
    pub field: String,
    pub message: String,
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDoc {
    pub status: String,
}

/// One dependency's state in `/health`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DependencyState)]
pub struct DependencyDoc {
    /// ok or down.
    pub status: String,
    /// Why it is down.
    pub error: Option<String>,
}

/// `{"status": "ok", "dependencies": {"broker": {"status": "ok"}, ...}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthDoc {
    pub status: String,
    /// By name: broker, database, schema_registry (those the service uses).
    pub dependencies: std::collections::BTreeMap<String, DependencyDoc>,
}

/// The process answers; nothing else is checked (liveness probes).
#[utoipa::path(get, path = "/live", tag = "operations",
    responses((status = 200, description = "Alive", body = StatusDoc)))]
#[allow(dead_code)]
fn live() {}

/// Each dependency the service uses (broker, database, schema registry), checked now.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = HealthDoc),
        (status = 503, description = "A dependency is down: `detail` names it, the extension member `dependencies` gives each one's state", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
#[allow(dead_code)]
fn health() {}

/// The service's dependencies are reachable; `detail` says what is missing when not.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = StatusDoc),
        (status = 503, description = "Not ready; `detail` says why", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
#[allow(dead_code)]
fn ready() {}

/// Prometheus metrics, OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics exposition", body = String, content_type = "application/openmetrics-text")))]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
#[allow(dead_code)]
fn openapi_json() {}

/// Merge into a service's document: `doc.merge(OpsApi::openapi())`.
#[derive(OpenApi)]
#[openapi(
    paths(live, health, ready, metrics, openapi_json),
    components(schemas(ProblemDoc, FieldErrorDoc, StatusDoc, HealthDoc, DependencyDoc)),
    tags((name = "operations", description = "Liveness, health, readiness, metrics, this document"))
)]
pub struct OpsApi;
