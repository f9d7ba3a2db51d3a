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
}

impl AppState {
    /// Counts the refusal and answers 401 (never saying which token or secret was close).
    pub fn unauthorized(&self, route: &'static str, why: AuthFailure) -> Problem {
        self.metrics.auth_failure(route, why.reason());
        tracing::debug!(route, reason = why.reason(), "Refused a request without valid credentials.");
        Problem::unauthorized(why.detail())
    }

    /// The read routes' check: a write or a read token.
    pub fn authorize_read(&self, headers: &axum::http::HeaderMap) -> Result<(), Problem> {
        self.config.auth.check_bearer(headers, Access::Read).map_err(|why| self.unauthorized("read", why))
    }
}
