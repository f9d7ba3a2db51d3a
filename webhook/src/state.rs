//! What every handler shares.

use std::sync::Arc;

use sqlx::PgPool;
use vigil_common::problem::Problem;

use crate::auth::{Access, AuthFailure};
use crate::metrics::WebhookMetrics;
use crate::Config;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub metrics: WebhookMetrics,
    /// Publishes rule settings (POST /settings) on SETTINGS_TOPIC.
    pub producer: rdkafka::producer::FutureProducer,
}

impl AppState {
    /// Counts the refusal and answers 401 (never saying which token or secret was close).
    pub fn unauthorized(&self, route: &'static str, why: AuthFailure) -> Problem {
        self.metrics.auth_failure(route, why.reason());
        tracing::debug!(route, reason = why.reason(), "Refused a request without valid credentials.");
        Problem::unauthorized(why.detail())
    }

    /// The triage routes' check: the acting user's name (a TRIAGE_USERS token's user, or the
    /// `X-Vigil-User` header sent with a write token).
    pub fn authorize_triage(&self, headers: &axum::http::HeaderMap) -> Result<String, Problem> {
        match self.config.auth.check_triage(headers).map_err(|why| self.unauthorized("triage", why))? {
            crate::auth::TriageCaller::User(u) => Ok(u),
            crate::auth::TriageCaller::WriteToken => {
                let named = headers.get("x-vigil-user").and_then(|v| v.to_str().ok()).map(str::trim);
                match named {
                    Some(u)
                        if !u.is_empty()
                            && u.chars().count() <= 64
                            && u.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')) =>
                    {
                        Ok(u.to_owned())
                    }
                    _ => Err(Problem::new(
                        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                        "actor-required",
                        "Who acts is not named",
                    )
                    .field("X-Vigil-User", "required with a write token: 1 to 64 letters, digits or . _ - @")),
                }
            }
        }
    }

    /// The read routes' check: a write or a read token.
    pub fn authorize_read(&self, headers: &axum::http::HeaderMap) -> Result<(), Problem> {
        self.config.auth.check_bearer(headers, Access::Read).map_err(|why| self.unauthorized("read", why))
    }
}
