//! The HTTP target against a scripted stand-in for the producer's batch route, through a real
//! socket: per-item verdicts, retries with the same ids, counts that never double-count, and the
//! answers that stop a run.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use vigil_simulator::send::{Batch, HttpTarget, Target};
use vigil_simulator::{Generator, Scenario, SimTransaction};

/// What the stand-in answers to the n-th request (0-based), given the items it received.
type Script = Arc<dyn Fn(usize, &[Value]) -> (StatusCode, Value) + Send + Sync>;

/// One request as the stand-in saw it: its Authorization header and its transaction ids.
type Request = (Option<String>, Vec<String>);

#[derive(Clone)]
struct Stub {
    script: Script,
    /// Every request: its Authorization header and the transaction ids it carried.
    seen: Arc<Mutex<Vec<Request>>>,
}

async fn ingest(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Json(items): Json<Vec<Value>>,
) -> (StatusCode, Json<Value>) {
    let n = {
        let mut seen = stub.seen.lock().unwrap();
        let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
        seen.push((auth, items.iter().map(|i| i["transaction_id"].as_str().unwrap().to_owned()).collect()));
        seen.len() - 1
    };
    let (status, body) = (stub.script)(n, &items);
    (status, Json(body))
}

async fn serve(script: Script) -> (String, Stub) {
    let stub = Stub { script, seen: Arc::default() };
    let app = Router::new().route("/ingest/transactions", post(ingest)).with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, stub)
}

/// A batch answer: `fate(i)` is accepted, rejected or unavailable for item i.
fn answer(items: &[Value], fate: impl Fn(usize) -> &'static str) -> Value {
    let list: Vec<Value> = (0..items.len())
        .map(|i| match fate(i) {
            "rejected" => {
                json!({"index": i, "status": "rejected", "errors": [{"field": "amount_minor", "message": "no"}]})
            }
            s => json!({"index": i, "status": s, "transaction_id": items[i]["transaction_id"]}),
        })
        .collect();
    json!({"accepted": 0, "rejected": 0, "unavailable": 0, "items": list})
}

fn batch(n: usize) -> Batch {
    let start = DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").unwrap().with_timezone(&Utc);
    let items: Vec<SimTransaction> =
        Generator::new(Scenario::builtin("seed-validation").unwrap(), 1, start).take(n).collect();
    Batch { seq: 0, items }
}

fn target(url: &str, key: Option<&str>, retries: u32) -> Target {
    Target::Http(HttpTarget::new(url, key.map(vigil_common::Secret::new), retries, Duration::from_secs(5)).unwrap())
}

#[tokio::test]
async fn unavailable_items_are_retried_alone_with_the_same_ids_and_counted_once() {
    // First answer: items 0..4 accepted, 4..6 rejected, 6..10 unavailable (207); then all accepted.
    let script: Script = Arc::new(|n, items| match n {
        0 => (
            StatusCode::MULTI_STATUS,
            answer(items, |i| ["accepted", "rejected", "unavailable"][usize::from(i >= 4) + usize::from(i >= 6)]),
        ),
        _ => (StatusCode::ACCEPTED, answer(items, |_| "accepted")),
    });
    let (url, stub) = serve(script).await;
    let b = batch(10);
    let ids: Vec<String> = b.items.iter().map(|t| t.transaction_id.to_string()).collect();
    let out = target(&url, Some("k-0123456789abcdef"), 3).start(b).await;
    assert_eq!((out.accepted, out.refused, out.unavailable, out.retried), (8, 2, 0, 4), "{out:?}");
    assert_eq!(out.responses.get("207"), Some(&1));
    assert_eq!(out.responses.get("202"), Some(&1));
    let seen = stub.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].1, ids);
    assert_eq!(seen[1].1, ids[6..].to_vec(), "only the unavailable items are sent again, with their ids");
    assert_eq!(seen[0].0.as_deref(), Some("Bearer k-0123456789abcdef"));
}

#[tokio::test]
async fn items_never_accepted_are_reported_unavailable_after_the_retries() {
    let script: Script = Arc::new(|_, _| (StatusCode::SERVICE_UNAVAILABLE, json!({"title": "overloaded"})));
    let (url, stub) = serve(script).await;
    let out = target(&url, None, 2).start(batch(5)).await;
    assert_eq!((out.accepted, out.refused, out.unavailable, out.retried), (0, 0, 5, 10), "{out:?}");
    assert_eq!(out.responses.get("503"), Some(&3));
    assert!(out.fatal.is_none());
    assert_eq!(stub.seen.lock().unwrap().len(), 3);
    assert!(stub.seen.lock().unwrap()[0].0.is_none(), "no Authorization header without a key");
}

#[tokio::test]
async fn a_refused_api_key_stops_the_run_without_retrying() {
    let script: Script = Arc::new(|_, _| (StatusCode::UNAUTHORIZED, json!({"title": "Unauthorized"})));
    let (url, stub) = serve(script).await;
    let out = target(&url, Some("wrong-key-0123456789"), 5).start(batch(3)).await;
    assert!(out.fatal.as_deref().is_some_and(|m| m.contains("API key")), "{out:?}");
    assert_eq!(stub.seen.lock().unwrap().len(), 1);
    assert_eq!(out.unavailable, 3);
}

#[tokio::test]
async fn a_producer_that_is_down_leaves_every_item_unavailable() {
    // Nothing listens on this port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = target(&url, None, 1).start(batch(4)).await;
    assert_eq!((out.accepted, out.unavailable), (0, 4));
    assert_eq!(out.responses.get("transport_error"), Some(&2));
}
