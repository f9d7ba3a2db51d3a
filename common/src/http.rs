//! The operational routes every service exposes (`/live`, `/health`, `/ready`, `/metrics`) and
//! serving with graceful shutdown.
//!
//! * `/live`: the process answers HTTP. Checks nothing, so it is cheap and never fails because
//!   a dependency is down: the route for an orchestrator's liveness probe (restarting a service
//!   because its database is down helps nobody).
//! * `/health`: each dependency the service uses (broker, database, schema registry) checked
//!   now, concurrently, each within [`CHECK_TIMEOUT`]: 200 `{"status": "ok", "dependencies":
//!   {"broker": {"status": "ok"}, ...}}` when every one answers, else 503 problem+json whose
//!   `detail` names the ones down and whose `dependencies` member gives each one's state
//!   (`{"status": "down", "error": "..."}` for those down).
//! * `/ready`: the service can do its work now (its own conditions, e.g. partitions assigned
//!   or migrations applied); 503 problem+json saying why not.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaConfig;
use crate::metrics::Metrics;
use crate::problem::Problem;

/// Answers whether the service can do its work now; the error says why not.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How long one dependency check of `/health` may take before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A check that is always ready (for services with nothing to wait on).
pub fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// One dependency `/health` reports: a name (`broker`, `database`, `schema_registry`) and a
/// check whose error says what is wrong.
#[derive(Clone)]
pub struct Dependency {
    pub name: &'static str,
    pub check: ReadyCheck,
}

impl Dependency {
    pub fn new(name: &'static str, check: ReadyCheck) -> Self {
        Dependency { name, check }
    }

    /// The broker answers a metadata request for `topic` (and knows the topic). One client,
    /// created once and reused by every check.
    pub fn broker(kafka: &KafkaConfig, topic: &str) -> Self {
        // Its context keeps librdkafka's last error, so "unreachable" names the cause (TLS, SASL).
        let client = kafka.diagnosing_client().map(Arc::new).map_err(|e| format!("cannot create a Kafka client: {e}"));
        let topic: Arc<str> = topic.into();
        Dependency::new(
            "broker",
            Arc::new(move || {
                let (client, topic) = (client.clone(), topic.clone());
                Box::pin(async move {
                    let client = client?;
                    tokio::task::spawn_blocking(move || {
                        let md = rdkafka::consumer::Consumer::fetch_metadata(&*client, Some(&topic), CHECK_TIMEOUT)
                            .map_err(|e| format!("broker unreachable: {}", crate::kafka::explain(&e, &client)))?;
                        match md.topics().iter().find(|t| t.name() == &*topic) {
                            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                            _ => Err(format!("topic {topic} unknown to the broker")),
                        }
                    })
                    .await
                    .map_err(|e| e.to_string())?
                })
            }),
        )
    }

    /// The database answers `SELECT 1` and every migration this build knows is applied.
    pub fn database(pool: &sqlx::PgPool) -> Self {
        let pool = pool.clone();
        Dependency::new(
            "database",
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move { crate::db::check(&pool).await })
            }),
        )
    }

    /// The Confluent-compatible schema registry at `url` answers `GET /subjects` with 200.
    pub fn schema_registry(url: &str) -> Self {
        let url: Arc<str> = format!("{}/subjects", url.trim_end_matches('/')).into();
        let http = reqwest::Client::builder().timeout(CHECK_TIMEOUT).build().map_err(|e| e.to_string());
        Dependency::new(
            "schema_registry",
            Arc::new(move || {
                let (url, http) = (url.clone(), http.clone());
                Box::pin(async move {
                    let http = http.map_err(|e| format!("cannot create an HTTP client: {e}"))?;
                    let r = http.get(&*url).send().await.map_err(|e| format!("schema registry unreachable: {e}"))?;
                    if r.status().is_success() {
                        Ok(())
                    } else {
                        Err(format!("schema registry answered {}", r.status()))
                    }
                })
            }),
        )
    }
}

/// Runs every check concurrently; the body `/health` answers with, and whether all are up.
pub async fn health_report(dependencies: &[Dependency]) -> (bool, Map<String, Value>) {
    let checks = dependencies.iter().map(|d| async move {
        let r = match tokio::time::timeout(CHECK_TIMEOUT + Duration::from_millis(500), (d.check)()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        (d.name, r)
    });
    let mut all_up = true;
    let mut report = Map::new();
    for (name, r) in futures::future::join_all(checks).await {
        let state = match r {
            Ok(()) => json!({ "status": "ok" }),
            Err(e) => {
                all_up = false;
                json!({ "status": "down", "error": e })
            }
        };
        report.insert(name.to_owned(), state);
    }
    (all_up, report)
}

async fn health(dependencies: Arc<[Dependency]>) -> Response {
    let (all_up, report) = health_report(&dependencies).await;
    if all_up {
        return Json(json!({ "status": "ok", "dependencies": report })).into_response();
    }
    let down: Vec<String> = report
        .iter()
        .filter(|(_, s)| s["status"] != "ok")
        .map(|(name, s)| format!("{name}: {}", s["error"].as_str().unwrap_or("down")))
        .collect();
    let problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", "A dependency is down")
        .detail(down.join("; "))
        .retry_after(5);
    let body = serde_json::to_value(&problem);
    let mut resp = problem.into_response();
    // The same problem body with the report added as an extension member.
    if let Ok(Value::Object(mut body)) = body {
        body.insert("dependencies".into(), Value::Object(report));
        *resp.body_mut() = axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default());
    }
    resp
}

/// `/live`, `/health` (checking `dependencies`), `/ready` (`ready`), `/metrics`.
pub fn ops_router(metrics: Metrics, ready: ReadyCheck, dependencies: Vec<Dependency>) -> Router {
    let dependencies: Arc<[Dependency]> = dependencies.into();
    Router::new()
        .route("/live", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/health", get(move || health(dependencies.clone())))
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &'static str, r: Result<(), &'static str>) -> Dependency {
        Dependency::new(name, Arc::new(move || Box::pin(async move { r.map_err(str::to_owned) })))
    }

    #[tokio::test]
    async fn health_names_each_dependency_and_only_the_down_ones_carry_an_error() {
        let (up, report) = health_report(&[dep("broker", Ok(())), dep("database", Err("refused"))]).await;
        assert!(!up);
        assert_eq!(
            Value::Object(report),
            json!({"broker": {"status": "ok"}, "database": {"status": "down", "error": "refused"}})
        );
        let (up, report) = health_report(&[dep("broker", Ok(()))]).await;
        assert!(up);
        assert_eq!(Value::Object(report), json!({"broker": {"status": "ok"}}));
    }

    #[tokio::test]
    async fn a_check_that_hangs_counts_as_down_within_the_timeout() {
        let hang = Dependency::new("broker", Arc::new(|| Box::pin(futures::future::pending())));
        let start = std::time::Instant::now();
        let (up, report) = health_report(&[hang]).await;
        assert!(!up && start.elapsed() < CHECK_TIMEOUT + Duration::from_secs(1));
        assert_eq!(report["broker"]["status"], "down");
    }
}
