//! The operational routes every service exposes (`/health`, `/ready`, `/metrics`) and serving
//! with graceful shutdown.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::problem::Problem;

/// Answers whether the service can do its work now; the error says why not.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A check that is always ready (for services with nothing to wait on).
pub fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// `/health` (the process answers), `/ready` (dependencies reachable), `/metrics`.
pub fn ops_router(metrics: Metrics, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
                        Err(why) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
                            .detail(why)
                            .retry_after(1)
                            .into_response(),
                    }
                }
            }),
        )
        .route("/metrics", get(move || async move { metrics_response(&metrics) }))
}

fn metrics_response(metrics: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
        .into_response()
}

/// Serves `app` until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
