//! The OpenAPI document, generated from the handlers' annotations (`utoipa`), served at
//! `/openapi.json`. The operational routes and the problem+json body come from
//! `vigil_common::openapi`, as for every service.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use vigil_common::openapi::OpsApi;
pub use vigil_common::openapi::{FieldErrorDoc, ProblemDoc};

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
                       Anomalies reaching OUTBOUND_MIN_SEVERITY (opening at it or escalating to it; once per anomaly and severity) \
                       are also POSTed to external webhooks as `OutboundAnomaly`, signed with \
                       `X-Vigil-Signature: sha256=<hex HMAC-SHA256 of \"<X-Vigil-Timestamp>.<body>\">`."
    ),
    components(schemas(ProblemDoc, FieldErrorDoc, crate::outbound::payload::OutboundAnomaly)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "inbound", description = "Notifications from Grafana and Alertmanager"),
        (name = "alerts", description = "Lists, newest first, with keyset pagination"),
        (name = "triage", description = "Acknowledge, assign, close and re-open anomalies, with an audit trail"),
        (name = "settings", description = "The detector's rule settings changed at run time, applied from a minute of event time"),
        (name = "silences", description = "Silences and maintenance windows: matching anomalies are stored, marked silenced and not pushed"),
    )
)]
pub struct ApiDoc;

/// The whole document: the webhook's routes and the operational ones.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(OpsApi::openapi());
    doc
}
