//! The producer's HTTP contract, against the real broker.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{event, TestApp};
use vigil_schemas::TransactionStatus;

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json", "status {status}");
    (status, r.json().await.unwrap())
}

fn fields(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|a| a.iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_valid_event_is_acknowledged_with_202_and_published_as_avro_keyed_by_category() {
    let app = TestApp::spawn().await;
    let r = app.post_json("/ingest/transaction", &event()).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    let id = body["transaction_id"].as_str().unwrap().to_owned();
    let on_topic = app.published(1);
    assert_eq!(on_topic.len(), 1);
    let (key, tx) = &on_topic[0];
    assert_eq!(key, "food");
    assert_eq!(tx.transaction_id, id);
    assert_eq!((tx.status, tx.amount_minor, tx.currency.as_str()), (TransactionStatus::Denied, 1250, "EUR"));
    app.shutdown().await;
}

#[tokio::test]
async fn each_invalid_field_is_refused_with_422_naming_it_and_nothing_is_published() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Value)> = vec![
        ("transaction_id", json!("nope")),
        ("occurred_at", json!("yesterday")),
        ("occurred_at", json!("2999-01-01T00:00:00Z")),
        ("occurred_at", json!("2001-01-01T00:00:00Z")),
        ("status", json!("pending")),
        ("auth_code", json!("")),
        ("auth_code", json!("TOO-LONG-CODE")),
        ("amount_minor", json!(-5)),
        ("amount_minor", json!(1.5)),
        ("amount_minor", json!(100_000_000_001_i64)),
        ("currency", json!("EURO")),
        ("currency", json!("ZZZ")),
        ("category", json!("x".repeat(65))),
        ("merchant_id", json!(" padded ")),
    ];
    for (field, bad) in cases {
        let mut body = event();
        body[field] = bad.clone();
        let (status, p) = problem(app.post_json("/ingest/transaction", &body).await).await;
        assert_eq!(status, 422, "{field} = {bad}");
        assert_eq!(fields(&p), vec![field.to_string()], "{field} = {bad}: {p}");
    }
    for missing in ["occurred_at", "status", "auth_code", "amount_minor", "currency", "category", "merchant_id"] {
        let mut body = event();
        body.as_object_mut().unwrap().remove(missing);
        let (status, p) = problem(app.post_json("/ingest/transaction", &body).await).await;
        assert_eq!((status, fields(&p)), (422, vec![missing.to_string()]));
    }
    let mut unknown = event();
    unknown["amount"] = json!(5);
    let (status, p) = problem(app.post_json("/ingest/transaction", &unknown).await).await;
    assert_eq!((status, fields(&p)), (422, vec!["amount".to_string()]));
    assert!(app.published(0).is_empty(), "a rejected event reached the topic");
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_400_a_wrong_content_type_415_and_an_oversized_body_413() {
    let app = TestApp::spawn_with(None, None, &["--max-body-bytes=2048"]).await;
    let url = format!("{}/ingest/transaction", app.url);
    let r = app.http.post(&url).header("content-type", "application/json").body("{\"status\": ").send().await.unwrap();
    assert_eq!(problem(r).await.0, 400);
    let r = app.http.post(&url).header("content-type", "text/plain").body(event().to_string()).send().await.unwrap();
    assert_eq!(problem(r).await.0, 415);
    let r = app.http.post(&url).body(event().to_string()).send().await.unwrap();
    assert_eq!(problem(r).await.0, 415, "no content type at all");
    let big = json!({"merchant_id": "x".repeat(4096)});
    let r = app.http.post(&url).json(&big).send().await.unwrap();
    assert_eq!(problem(r).await.0, 413);
    assert!(app.published(0).is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_with_problem_json() {
    let app = TestApp::spawn().await;
    let r = app.http.get(format!("{}/nowhere", app.url)).send().await.unwrap();
    assert_eq!(problem(r).await.0, 404);
    let r = app.http.get(format!("{}/ingest/transaction", app.url)).send().await.unwrap();
    assert_eq!(problem(r).await.0, 405);
    app.shutdown().await;
}

#[tokio::test]
async fn a_batch_with_good_and_bad_items_publishes_exactly_the_good_ones_and_lists_each_fate() {
    let app = TestApp::spawn().await;
    let mut bad = event();
    bad["currency"] = json!("nope");
    let mut good2 = event();
    good2["category"] = json!("travel");
    let r = app.post_json("/ingest/transactions", &json!([event(), bad, good2, "not an object"])).await;
    assert_eq!(r.status(), 207);
    let b: Value = r.json().await.unwrap();
    assert_eq!((b["accepted"].as_u64(), b["rejected"].as_u64()), (Some(2), Some(2)));
    let statuses: Vec<&str> = b["items"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["accepted", "rejected", "accepted", "rejected"]);
    assert_eq!(b["items"][1]["errors"][0]["field"], "currency");
    let accepted: std::collections::BTreeSet<String> =
        [0, 2].iter().map(|i| b["items"][*i]["transaction_id"].as_str().unwrap().to_owned()).collect();
    let published: std::collections::BTreeSet<String> =
        app.published(2).into_iter().map(|(_, t)| t.transaction_id).collect();
    assert_eq!(published, accepted);

    // NDJSON: a malformed line is that item's error, not the batch's.
    let nd = format!("{}\n{{oops\n{}\n", event(), event());
    let r = app
        .http
        .post(format!("{}/ingest/transactions", app.url))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["items"][1]["status"], "rejected");
    assert!(b["items"][1]["errors"][0]["message"].as_str().unwrap().starts_with("malformed JSON"));
    assert_eq!(app.published(4).len(), 4);

    // All valid: 202. None valid: 422. Too many: 422 naming items.
    let r = app.post_json("/ingest/transactions", &json!([event()])).await;
    assert_eq!(r.status(), 202);
    let r = app.post_json("/ingest/transactions", &json!([{"status": "x"}])).await;
    assert_eq!(r.status(), 422);
    let r = app.post_json("/ingest/transactions", &json!([])).await;
    let (status, p) = problem(r).await;
    assert_eq!((status, fields(&p)), (422, vec!["items".to_string()]));
    app.shutdown().await;
}

#[tokio::test]
async fn the_same_idempotency_key_yields_the_same_transaction_id() {
    let app = TestApp::spawn().await;
    let body = event();
    let send = |key: &'static str| {
        let http = app.http.clone();
        let url = format!("{}/ingest/transaction", app.url);
        let body = body.clone();
        async move {
            let r = http.post(url).header("Idempotency-Key", key).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["transaction_id"].as_str().unwrap().to_owned()
        }
    };
    let a = send("order-42").await;
    let b = send("order-42").await;
    let c = send("order-43").await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    // A body id that disagrees with the key is refused.
    let mut body = event();
    body["transaction_id"] = json!("6f1c2a54-9e0b-4f7e-9b1a-7c3e5d2f8a10");
    let r = app
        .http
        .post(format!("{}/ingest/transaction", app.url))
        .header("Idempotency-Key", "order-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, p) = problem(r).await;
    assert_eq!((status, fields(&p)), (422, vec!["transaction_id".to_string()]));
    app.shutdown().await;
}

#[tokio::test]
async fn the_older_clients_body_is_accepted_as_an_approved_event() {
    let app = TestApp::spawn().await;
    let body = json!({"amount": 10000, "category": "food", "merchant": "Starbucks", "transaction_date": chrono::Utc::now().to_rfc3339()});
    let r = app.post_json("/transactions", &body).await;
    assert_eq!(r.status(), 202);
    let (_, tx) = app.published(1).remove(0);
    assert_eq!(
        (tx.amount_minor, tx.status, tx.auth_code.as_str(), tx.merchant_id.as_str()),
        (10000, TransactionStatus::Approved, "00", "Starbucks")
    );
    let (status, p) = problem(app.post_json("/transactions", &json!({"amount": -1, "category": "food", "merchant": "S", "transaction_date": chrono::Utc::now().to_rfc3339()})).await).await;
    assert_eq!((status, fields(&p)), (422, vec!["amount".to_string()]));
    app.shutdown().await;
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let app = TestApp::spawn_with(None, None, &["--api-keys=key-aaaaaaaaaaaaaaaa,key-bbbbbbbbbbbbbbbb"]).await;
    let url = format!("{}/ingest/transaction", app.url);
    let r = app.http.post(&url).json(&event()).send().await.unwrap();
    assert_eq!(problem(r).await.0, 401);
    let r = app.http.post(&url).bearer_auth("key-wrongwrongwrong").json(&event()).send().await.unwrap();
    assert_eq!(problem(r).await.0, 401);
    for key in ["key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb"] {
        let r = app.http.post(&url).bearer_auth(key).json(&event()).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    assert_eq!(app.published(2).len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn with_the_older_designs_5_per_second_and_burst_10_a_burst_gets_429_while_another_client_is_unaffected() {
    let app = TestApp::spawn_with(
        None,
        None,
        &[
            "--api-keys=client-one-aaaaaaaaaa,client-two-bbbbbbbbbb",
            "--rate-limit-per-second=5",
            "--rate-limit-burst=10",
        ],
    )
    .await;
    let url = format!("{}/ingest/transaction", app.url);
    let post = |key: &'static str| app.http.post(&url).bearer_auth(key).json(&event()).send();
    // Thirty at once against a burst of ten refilling at five a second: at most ten plus what
    // refilled while they ran can pass, however slowly the machine runs them.
    let start = std::time::Instant::now();
    let answers = futures::future::join_all((0..30).map(|_| post("client-one-aaaaaaaaaa"))).await;
    let refilled = (start.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let mut limited = 0;
    for r in answers {
        let r = r.unwrap();
        if r.status() == 429 {
            let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry_after >= 1);
            assert_eq!(problem(r).await.0, 429);
            limited += 1;
        } else {
            assert_eq!(r.status(), 202);
        }
    }
    assert!(limited >= 30 - 10 - refilled, "only {limited} of 30 were refused ({refilled} tokens refilled meanwhile)");
    assert_eq!(post("client-two-bbbbbbbbbb").await.unwrap().status(), 202, "the other client has its own budget");
    // A batch costs one token per event: eleven can never fit a burst of ten.
    let r = app
        .http
        .post(format!("{}/ingest/transactions", app.url))
        .bearer_auth("client-two-bbbbbbbbbb")
        .json(&Value::Array((0..11).map(|_| event()).collect()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let metrics = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        vigil_testkit::metric_sum(&metrics, "vigil_producer_events_total", &[("reason", "rate_limited")]),
        (limited + 11) as f64
    );
    app.shutdown().await;
}

#[tokio::test]
async fn by_default_a_client_sending_five_thousand_events_in_a_second_is_not_throttled() {
    let app = TestApp::spawn().await;
    let url = format!("{}/ingest/transactions", app.url);
    let batch = Value::Array((0..1000).map(|_| event()).collect());
    let start = std::time::Instant::now();
    let answers = futures::future::join_all((0..5).map(|_| app.http.post(&url).json(&batch).send())).await;
    let elapsed = start.elapsed();
    for r in answers {
        assert_eq!(r.unwrap().status(), 202);
    }
    // Single requests from the same client right after, as fast as they come.
    let single = format!("{}/ingest/transaction", app.url);
    let answers = futures::future::join_all((0..200).map(|_| app.http.post(&single).json(&event()).send())).await;
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 202));
    println!("5 000 events in batches answered in {elapsed:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_body_and_error() {
    let app = TestApp::spawn().await;
    let doc: Value = app.http.get(format!("{}/openapi.json", app.url)).send().await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/ingest/transaction",
        "/ingest/transactions",
        "/transactions",
        "/live",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    let one = &doc["paths"]["/ingest/transaction"]["post"];
    for code in ["202", "400", "401", "413", "415", "422", "429", "503"] {
        assert!(one["responses"].get(code).is_some(), "/ingest/transaction lacks {code}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in ["Transaction", "LegacyTransaction", "Problem", "FieldError", "BatchResult", "ItemResult", "Accepted"] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    assert_eq!(doc["components"]["schemas"]["Transaction"]["additionalProperties"], json!(false));
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route_and_events_by_outcome() {
    let app = TestApp::spawn().await;
    app.post_json("/ingest/transaction", &event()).await;
    app.post_json("/ingest/transaction", &json!({})).await;
    app.http.get(format!("{}/no/such/{}", app.url, 12345)).send().await.unwrap();
    let text = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains(
            r#"vigil_producer_http_requests_total{method="POST",route="/ingest/transaction",status="202"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"vigil_producer_events_total{outcome="accepted",reason="ok"} 1"#));
    assert!(text.contains(r#"vigil_producer_events_total{outcome="rejected",reason="validation"} 1"#));
    assert!(!text.contains("12345"), "raw paths must not become labels");
    assert!(text.contains("vigil_producer_produce_duration_seconds_bucket"));
    app.shutdown().await;
}

#[tokio::test]
async fn live_health_and_ready_answer_when_the_broker_is_up() {
    let app = TestApp::spawn().await;
    for p in ["/live", "/health", "/ready"] {
        let r = app.http.get(format!("{}{p}", app.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn beyond_the_in_flight_bound_ingest_answers_503_instead_of_queueing() {
    let app = TestApp::spawn_with(None, None, &["--max-in-flight=1"]).await;
    let r = app.post_json("/ingest/transactions", &json!([event(), event()])).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert_eq!((b["accepted"].as_u64(), b["unavailable"].as_u64()), (Some(0), Some(2)));
    assert!(b["items"].as_array().unwrap().iter().all(|i| i["status"] == "unavailable"));
    // One event fits the bound.
    assert_eq!(app.post_json("/ingest/transaction", &event()).await.status(), 202);
    assert_eq!(app.published(0).len(), 1, "nothing of the refused batch was published");
    app.shutdown().await;
}
