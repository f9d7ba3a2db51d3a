//! Wiring: configuration in, a listening [`Application`] out.

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{BoxError, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use vigil_common::http::{ops_router, serve, Dependency, ReadyCheck};
use vigil_common::metrics::{track_http, HttpMetrics, Metrics};
use vigil_common::problem::{self, Problem};
use vigil_schemas::{Codec, SchemaRegistry};

use crate::idempotency::IdempotencyStore;
use crate::metrics::ProducerMetrics;
use crate::publisher::Publisher;
use crate::routes::{self, AppState};
use crate::Config;

pub struct Application {
    listener: TcpListener,
    codec: Arc<Codec>,
    router: Router,
    publisher: Publisher,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let metrics = Metrics::new("producer");
        let pm = ProducerMetrics::new(&metrics);
        let codec = match &config.schema_registry_url {
            Some(url) => {
                use vigil_schemas::{TopicBindings, Transaction, TransactionVerdict};
                // Subjects follow the topics (vigil_schemas::subjects): what it writes and reads.
                let bindings = TopicBindings::new()
                    .bind::<Transaction>(&config.topic)
                    .bind::<TransactionVerdict>(&config.verdicts_topic);
                Codec::with_registry_for(SchemaRegistry::new(url), &bindings)
                    .await
                    .with_context(|| format!("Failed to register the schemas with {url}"))?
            }
            None => Codec::single_object(),
        };
        let codec = Arc::new(codec);
        let publisher = Publisher::new(
            &config.kafka,
            &config.topic,
            codec.clone(),
            config.produce_timeout,
            config.max_in_flight,
            pm.clone(),
        )
        .context("Failed to create the Kafka producer")?;
        let pool = vigil_common::db::pool_lazy(config.database_url.expose(), config.database_max_connections)
            .context("Failed to read DATABASE_URL")?;
        vigil_common::db::migrate(&pool).await.context("Failed to apply the database migrations")?;
        // A claim outlives its request at most by the request timeout (see idempotency).
        let idempotency = IdempotencyStore::new(pool, config.idempotency_window, config.request_timeout, pm.clone());
        let listener =
            TcpListener::bind(config.bind).await.with_context(|| format!("Failed to bind {}", config.bind))?;
        let config = Arc::new(config);
        let state = AppState::new(config.clone(), publisher.clone(), idempotency, pm);
        let router = router(state.clone(), &metrics);
        Ok(Application { listener, codec, router, publisher, state })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown`, then drains: in-flight requests finish, queued events are flushed.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), topic = %self.state.config.topic, "Producer listening.");
        if let Some(limiter) = self.state.limiter.clone() {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = tick.tick() => limiter.retain_recent(),
                        _ = stop.cancelled() => break,
                    }
                }
            });
        }
        let expiry = self.state.idempotency.spawn_expiry(Duration::from_secs(60), shutdown.clone());
        let verdicts = tokio::spawn(self.state.verdicts.clone().run(
            self.state.config.kafka.clone(),
            self.state.config.verdicts_topic.clone(),
            self.codec.clone(),
            shutdown.clone(),
        ));
        serve(self.listener, self.router, shutdown).await?;
        let _ = expiry.await;
        if let Ok(Err(e)) = verdicts.await {
            tracing::warn!(error = %format!("{e:#}"), "The verdicts consumer stopped with an error.");
        }
        let publisher = self.publisher;
        let timeout = self.state.config.produce_timeout;
        vigil_common::shutdown::holding(
            "producer",
            format!(
                "{} events queued for the broker, not acknowledged (their requests got no 2xx)",
                publisher.queued()
            ),
        );
        tokio::task::spawn_blocking(move || publisher.flush(timeout)).await??;
        vigil_common::shutdown::released("producer");
        tracing::info!("Producer stopped; every acknowledged event is on the broker.");
        Ok(())
    }
}

pub fn router(state: AppState, metrics: &Metrics) -> Router {
    let http = HttpMetrics::new(metrics);
    let publisher = state.publisher.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let p = publisher.clone();
        Box::pin(async move { p.ready().await })
    });
    // /health: the broker (through the publishing client itself), the database of the
    // idempotency keys, and the schema registry when one is configured.
    let mut dependencies =
        vec![Dependency::new("broker", ready.clone()), Dependency::database(state.idempotency.pool())];
    if let Some(url) = &state.config.schema_registry_url {
        dependencies.push(Dependency::schema_registry(url));
    }
    let timeout = state.config.request_timeout;
    let ingest = Router::new()
        .route("/ingest/transaction", post(routes::ingest_one))
        .route("/ingest/transactions", post(routes::ingest_batch))
        .route("/transactions", post(routes::ingest_legacy))
        .route("/transactions/{id}", axum::routing::get(crate::lookup::get_transaction))
        .route("/transactions/{id}/reversal", post(crate::reversal::reverse))
        .with_state(state);
    let doc = crate::openapi::document();
    Router::new()
        .merge(ingest)
        .merge(ops_router(metrics.clone(), ready, dependencies))
        .route("/openapi.json", axum::routing::get(move || async move { axum::Json(doc) }))
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
