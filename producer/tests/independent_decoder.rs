//! Clients we did not write: a Python consumer (confluent-kafka + fastavro) decodes what the
//! producer wrote, using only the `.avsc` files, in both framings.
//!
//! The Confluent framing needs a schema registry. Redpanda's cannot run on the development
//! machines (no container engine) and no Confluent-compatible registry is installable here, so
//! this test serves the two registry calls the producer and the consumer make (register a
//! subject version, fetch a schema by id) from a minimal stand-in. The framing and the
//! decoding are real; the registry is the stand-in.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use support::{event, TestApp};

fn python() -> String {
    std::env::var("VIGIL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "VIGIL_TEST_PYTHON is not set: run the tests with `make test`, which installs fastavro and confluent-kafka"
        )
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn decode_with_python(topic: &str, expected: usize, registry: Option<&str>) -> Vec<Value> {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(root().join("producer/tests/python/decode_topic.py"))
        .args(["--brokers", &vigil_testkit::brokers(), "--topic", topic, "--expected", &expected.to_string()])
        .arg("--schemas")
        .arg(root().join("schemas"));
    if let Some(r) = registry {
        cmd.args(["--registry", r]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "python decoder failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn post_some(app: &TestApp, n: usize) -> BTreeMap<String, Value> {
    let mut sent = BTreeMap::new();
    for i in 0..n {
        let mut e = event();
        e["amount_minor"] = json!(1000 + i);
        e["category"] = json!(["food", "travel", "fuel"][i % 3]);
        let r = app.post_json("/ingest/transaction", &e).await;
        assert_eq!(r.status(), 202);
        let id = r.json::<Value>().await.unwrap()["transaction_id"].as_str().unwrap().to_owned();
        sent.insert(id, e);
    }
    sent
}

fn check(decoded: &[Value], sent: &BTreeMap<String, Value>, framing: &str) {
    assert_eq!(decoded.len(), sent.len());
    let ids: BTreeSet<&str> = decoded.iter().map(|d| d["record"]["transaction_id"].as_str().unwrap()).collect();
    assert_eq!(ids, sent.keys().map(String::as_str).collect());
    for d in decoded {
        assert_eq!(d["framing"], framing);
        let r = &d["record"];
        let e = &sent[r["transaction_id"].as_str().unwrap()];
        assert_eq!(r["amount_minor"], e["amount_minor"]);
        assert_eq!(r["status"], e["status"]);
        assert_eq!(r["currency"], e["currency"]);
        assert_eq!(d["key"], e["category"], "the key is the category");
        // fastavro turns timestamp-millis into an aware datetime: same instant as sent.
        let got = chrono::DateTime::parse_from_rfc3339(r["occurred_at"].as_str().unwrap()).unwrap();
        let want = chrono::DateTime::parse_from_rfc3339(e["occurred_at"].as_str().unwrap()).unwrap();
        assert_eq!(got.timestamp_millis(), want.timestamp_millis());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastavro_decodes_single_object_frames_with_its_own_fingerprint_of_the_avsc() {
    let app = TestApp::spawn().await;
    let sent = post_some(&app, 12).await;
    let topic = app.topic.clone();
    let decoded = tokio::task::spawn_blocking(move || decode_with_python(&topic, 12, None)).await.unwrap();
    check(&decoded, &sent, "single-object");
    app.shutdown().await;
}

#[derive(Default)]
struct Registry {
    schemas: Vec<(String, String)>,
}

async fn register(
    State(r): State<Arc<Mutex<Registry>>>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let schema = body["schema"].as_str().unwrap().to_owned();
    let mut reg = r.lock().unwrap();
    let id = match reg.schemas.iter().position(|(s, _)| *s == schema) {
        Some(i) => i + 1,
        None => {
            reg.schemas.push((schema, subject));
            reg.schemas.len()
        }
    };
    Json(json!({ "id": id }))
}

async fn by_id(State(r): State<Arc<Mutex<Registry>>>, Path(id): Path<usize>) -> Json<Value> {
    Json(json!({ "schema": r.lock().unwrap().schemas[id - 1].0 }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastavro_decodes_confluent_frames_with_schemas_fetched_by_id() {
    let reg = Arc::new(Mutex::new(Registry::default()));
    let router = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(by_id))
        .route("/config/{subject}", axum::routing::put(|Json(b): Json<Value>| async move { Json(b) }))
        .with_state(reg.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let app = TestApp::spawn_with(None, None, &[&format!("--schema-registry-url={registry_url}")]).await;
    let subjects: BTreeSet<String> = reg.lock().unwrap().schemas.iter().map(|(_, s)| s.clone()).collect();
    // TopicNameStrategy: `<topic>-value`.
    assert!(subjects.contains(&format!("{}-value", app.topic)), "the producer registered {subjects:?}");
    let sent = post_some(&app, 12).await;
    let topic = app.topic.clone();
    let decoded =
        tokio::task::spawn_blocking(move || decode_with_python(&topic, 12, Some(&registry_url))).await.unwrap();
    check(&decoded, &sent, "confluent");
    app.shutdown().await;
}
