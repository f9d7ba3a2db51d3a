//! `/health` reports each dependency and answers 503 when one is down; `/live` always answers.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::TestApp;
use vigil_testkit::OwnBroker;

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(format!("{}{path}", app.url)).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_200_with_each_dependency_ok_then_503_naming_the_broker_once_it_is_stopped_and_live_stays_200() {
    let mut broker = OwnBroker::start();
    broker.kafka().ensure_topics(&[("transactions", 1)]).await.unwrap();
    let app = TestApp::spawn_with(Some(&broker.brokers()), Some("transactions"), &[]).await;

    let r = get(&app, "/health").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "ok", "dependencies": {"broker": {"status": "ok"}, "database": {"status": "ok"}}})
    );
    assert_eq!(get(&app, "/live").await.status(), 200);

    broker.kill();
    let start = std::time::Instant::now();
    let r = get(&app, "/health").await;
    let took = start.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("retry-after"));
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], 503);
    assert_eq!(p["dependencies"]["broker"]["status"], "down", "{p}");
    assert_eq!(p["dependencies"]["database"], json!({"status": "ok"}), "{p}");
    assert!(p["detail"].as_str().unwrap().starts_with("broker: "), "{p}");
    assert!(took < Duration::from_secs(4), "/health took {took:?} with the broker down");
    let live = get(&app, "/live").await;
    assert_eq!((live.status().as_u16(), live.json::<Value>().await.unwrap()), (200, json!({"status": "ok"})));

    // Back up: healthy again without a restart.
    broker.restart();
    let healthy = vigil_testkit::eventually(Duration::from_secs(30), || async {
        (get(&app, "/health").await.status() == 200).then_some(())
    })
    .await;
    assert!(healthy.is_some(), "/health stayed 503 after the broker came back");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_is_503_naming_the_broker_when_nothing_listens_on_its_port() {
    let closed = format!("127.0.0.1:{}", vigil_testkit::free_port());
    let app = TestApp::spawn_with(Some(&closed), Some("transactions"), &[]).await;
    let start = std::time::Instant::now();
    let r = get(&app, "/health").await;
    assert!(start.elapsed() < Duration::from_secs(4), "/health took {:?}", start.elapsed());
    assert_eq!(r.status(), 503);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["dependencies"]["broker"]["status"], "down", "{p}");
    assert!(p["dependencies"]["broker"]["error"].as_str().unwrap().contains("broker unreachable"), "{p}");
    assert_eq!(get(&app, "/live").await.status(), 200);
    app.stop.cancel();
}

#[tokio::test]
async fn health_reports_the_schema_registry_when_one_is_configured_and_503_when_it_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get as route_get, post};

    // A registry that takes every schema (id 1) and answers GET /subjects until told to fail.
    let failing = Arc::new(AtomicBool::new(false));
    let router = axum::Router::new()
        .route("/subjects/{subject}/versions", post(|| async { axum::Json(json!({"id": 1})) }))
        .route("/config/{subject}", axum::routing::put(|| async { axum::Json(json!({"compatibility": "BACKWARD"})) }))
        .route(
            "/subjects",
            route_get(|State(f): State<Arc<AtomicBool>>| async move {
                if f.load(Ordering::SeqCst) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }),
        )
        .with_state(failing.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let app = TestApp::spawn_with(None, None, &[&format!("--schema-registry-url={registry}")]).await;
    let r = get(&app, "/health").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["dependencies"]["schema_registry"], json!({"status": "ok"}), "{body}");

    failing.store(true, Ordering::SeqCst);
    let r = get(&app, "/health").await;
    assert_eq!(r.status(), 503);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["dependencies"]["schema_registry"]["status"], "down", "{p}");
    assert_eq!(p["dependencies"]["broker"]["status"], "ok", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("schema_registry: schema registry answered 503"), "{p}");
    app.shutdown().await;
}
