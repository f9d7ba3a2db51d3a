//! The webhook service's one error type, and how each failure reaches an HTTP client.

use axum::response::{IntoResponse, Response};
use vigil_common::problem::Problem;

/// Failures of the webhook library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("could not encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a handler answers when it fails: the client's mistake (a problem it can fix, not logged
/// as ours), or our own failure (logged once, here, with its cause; the client sees a generic
/// 500).
#[derive(Debug)]
pub enum ApiError {
    Client(Problem),
    Internal(Error),
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError::Client(p)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(Error::Database(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client(p) => p.into_response(),
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "Request failed on our side.");
                Problem::internal().into_response()
            }
        }
    }
}
