//! Wiring: configuration in, a listening [`Application`] out.

use std::sync::Arc;

use anyhow::Context;
use axum::error_handling::HandleErrorLayer;
use axum::http::{header, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{BoxError, Router};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vigil_common::http::{ops_router, serve, Dependency, ReadyCheck};
use vigil_common::metrics::{track_http, HttpMetrics, Metrics};
use vigil_common::problem::{self, Problem};

use crate::metrics::{DbQuery, WebhookMetrics};
use crate::outbound::Outbound;
use crate::state::AppState;
use crate::{listing, notifications, settings, silences, triage, Config};

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    outbound: Option<Outbound>,
}

impl Application {
    /// Connects to the database and applies the migrations, binds the listener, and prepares
    /// the forwarder when URLs are configured. Nothing runs until [`Application::run`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = vigil_common::db::pool_lazy(config.database_url.expose(), config.database_max_connections)
            .context("Failed to read DATABASE_URL")?;
        vigil_common::db::migrate(&pool).await.context("Failed to apply the database migrations")?;
        let metrics = Metrics::new("webhook");
        let wm = WebhookMetrics::new(&metrics);
        let outbound = match &config.outbound {
            Some(out) => Some(
                Outbound::build(&config, out, pool.clone(), wm.clone())
                    .context("Failed to set up the outbound forwarder")?,
            ),
            None => None,
        };
        let listener =
            TcpListener::bind(config.bind).await.with_context(|| format!("Failed to bind {}", config.bind))?;
        let producer = config
            .kafka
            .producer_config(std::time::Duration::from_secs(10))
            .create()
            .context("Failed to create the settings producer")?;
        let state = AppState { config: Arc::new(config), pool, metrics: wm, producer };
        let router = router(state.clone(), &metrics);
        Ok(Application { listener, router, state, outbound })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Serves (and forwards) until `shutdown`, then lets in-flight requests finish. If the
    /// forwarder fails, everything stops and the error is returned.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop = shutdown.child_token();
        let port = self.port();
        let config = self.state.config.clone();
        if config.auth.write_tokens.is_empty() {
            tracing::warn!("No WEBHOOK_TOKENS: POST /alertmanager/webhook refuses every request.");
        }
        let mut tasks: JoinSet<crate::Result<()>> = JoinSet::new();
        match self.outbound {
            Some(out) => out.spawn(&mut tasks, &stop),
            None => tracing::info!("No OUTBOUND_WEBHOOK_URLS: the anomaly forwarder is not started."),
        }
        {
            let (pool, db, gauges) =
                (self.state.pool.clone(), self.state.metrics.db.clone(), self.state.metrics.triage_queue.clone());
            let (deadline, window, stop) = (config.triage_ack_deadline, config.triage_queue_window, stop.clone());
            tasks.spawn(crate::triage::queue::run(pool, db, gauges, deadline, window, stop));
        }
        tracing::info!(port, "Webhook service listening.");
        let mut server = tokio::spawn(serve(self.listener, self.router, stop.clone()));
        let mut failure: Option<anyhow::Error> = None;
        let server_result = loop {
            tokio::select! {
                r = &mut server => break r,
                Some(joined) = tasks.join_next() => {
                    let err = match joined {
                        Ok(Ok(())) if stop.is_cancelled() => continue,
                        Ok(Ok(())) => anyhow::anyhow!("a forwarder task stopped unexpectedly"),
                        Ok(Err(e)) => anyhow::Error::new(e),
                        Err(e) => anyhow::Error::new(e).context("a forwarder task panicked"),
                    };
                    tracing::error!(error = %format!("{err:#}"), "Forwarder failed; shutting down.");
                    failure.get_or_insert(err);
                    stop.cancel();
                }
            }
        };
        stop.cancel();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(anyhow::Error::new(e));
                }
                Err(e) => {
                    failure.get_or_insert(anyhow::Error::new(e).context("a forwarder task panicked"));
                }
            }
        }
        server_result.context("The HTTP server task failed")?.context("The HTTP server failed")?;
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("Webhook service stopped.");
                Ok(())
            }
        }
    }
}

/// Every API route with its OpenAPI operation: the document cannot miss a route.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::document())
        .routes(routes!(notifications::routes::grafana))
        .routes(routes!(notifications::routes::alertmanager))
        .routes(routes!(listing::list_anomalies))
        .routes(routes!(listing::list_received))
        .routes(routes!(triage::get_triage, triage::post_triage))
        .routes(routes!(silences::create, silences::list))
        .routes(routes!(silences::get_one))
        .routes(routes!(silences::expire))
        .routes(routes!(settings::publish, settings::list))
}

/// The OpenAPI document alone (tools and tests).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

pub fn router(state: AppState, metrics: &Metrics) -> Router {
    let http = HttpMetrics::new(metrics);
    let pool = state.pool.clone();
    let db = state.metrics.db.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let pool = pool.clone();
        let db = db.clone();
        Box::pin(async move {
            match db.time(DbQuery::ReadyMigrations, vigil_common::db::migrations_applied(&pool)).await {
                Ok(true) => Ok(()),
                Ok(false) => Err("migrations are not all applied".to_owned()),
                Err(e) => Err(format!("database unreachable: {e}")),
            }
        })
    });
    // /health: the database; the broker and the schema registry only when the outbound
    // forwarder consumes anomalies.
    let mut dependencies = vec![Dependency::database(&state.pool)];
    if state.config.outbound.is_some() {
        dependencies.push(Dependency::broker(&state.config.kafka, &state.config.anomalies_topic));
        if let Some(url) = &state.config.schema_registry_url {
            dependencies.push(Dependency::schema_registry(url));
        }
    }
    let timeout = state.config.request_timeout;
    let (api, doc) = api_router().with_state(state).split_for_parts();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_default());
    Router::new()
        .merge(api)
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned()) }
            }),
        )
        .merge(ops_router(metrics.clone(), ready, dependencies))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(|_| Problem::internal().into_response()))
                .layer(TraceLayer::new_for_http())
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    Problem::new(StatusCode::REQUEST_TIMEOUT, "timeout", "Request timed out")
                }))
                .timeout(timeout),
        )
        .route_layer(from_fn_with_state(http, track_http))
}
