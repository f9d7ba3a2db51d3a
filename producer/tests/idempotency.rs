//! Idempotency-Key: one key, one event, one answer; against the real broker and PostgreSQL.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{event, TestApp};

/// Everything on `topic` once it has been quiet for 3 s.
fn on_topic(topic: &str) -> usize {
    vigil_testkit::read_topic_all(topic, Duration::from_secs(3)).len()
}

async fn post(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http.post(format!("{}{path}", app.url)).header("Idempotency-Key", key).json(body).send().await.unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.http.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap()
}

async fn assert_conflict(r: reqwest::Response) {
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["errors"][0]["field"], "Idempotency-Key", "{p}");
    assert!(p["type"].as_str().unwrap().ends_with("idempotency-key-reused"), "{p}");
}

#[tokio::test]
async fn the_same_key_and_body_gets_the_first_answer_again_and_publishes_once() {
    let app = TestApp::spawn().await;
    let body = event();
    let first = post(&app, "/ingest/transaction", "order-1", &body).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    // The same body with its keys in another order and other whitespace is the same request.
    let reordered: Value = serde_json::from_str(&format!(
        "{{ \"merchant_id\" : \"m-042\", \"category\": \"food\", \"currency\": \"EUR\", \"amount_minor\": 1250, \
         \"auth_code\": \"05\", \"status\": \"denied\", \"occurred_at\": {} }}",
        body["occurred_at"]
    ))
    .unwrap();
    for b in [&body, &reordered] {
        let again = post(&app, "/ingest/transaction", "order-1", b).await;
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(on_topic(&app.topic), 1, "a replay publishes nothing");
    let m = metrics(&app).await;
    assert_eq!(
        vigil_testkit::metric_sum(&m, "vigil_producer_idempotency_requests_total", &[("outcome", "claimed")]),
        1.0
    );
    assert_eq!(
        vigil_testkit::metric_sum(&m, "vigil_producer_idempotency_requests_total", &[("outcome", "replayed")]),
        2.0
    );
    assert!(
        vigil_testkit::metric_sum(
            &m,
            "vigil_producer_db_query_duration_seconds_count",
            &[("query", "idempotency_claim")]
        ) >= 3.0,
        "{m}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_with_422_naming_the_header_and_publishes_nothing() {
    let app = TestApp::spawn().await;
    let body = event();
    assert_eq!(post(&app, "/ingest/transaction", "order-2", &body).await.status(), 202);
    let mut changed = body.clone();
    changed["amount_minor"] = json!(999_999);
    assert_conflict(post(&app, "/ingest/transaction", "order-2", &changed).await).await;
    // The older clients' route shares the key space: both derive the id from the key alone.
    let legacy = json!({"amount": 10000, "category": "food", "merchant": "S", "transaction_date": body["occurred_at"]});
    assert_conflict(post(&app, "/transactions", "order-2", &legacy).await).await;
    // The first body still gets its answer.
    assert_eq!(post(&app, "/ingest/transaction", "order-2", &body).await.status(), 202);
    assert_eq!(on_topic(&app.topic), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_is_remembered_across_a_restart_of_the_producer() {
    let app = TestApp::spawn().await;
    let (db, topic) = (app.database_url.clone(), app.topic.clone());
    let body = event();
    let first: Value = post(&app, "/ingest/transaction", "order-3", &body).await.json().await.unwrap();
    app.shutdown().await;

    let app = TestApp::spawn_on(None, Some(&topic), &db, &[]).await;
    let again = post(&app, "/ingest/transaction", "order-3", &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let mut changed = body.clone();
    changed["category"] = json!("travel");
    assert_conflict(post(&app, "/ingest/transaction", "order-3", &changed).await).await;
    assert_eq!(on_topic(&topic), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_requests_on_two_instances_publish_exactly_once_and_all_get_the_same_answer() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(None, Some(&a.topic), &a.database_url, &[]).await;
    for round in 0..5 {
        let key = format!("order-race-{round}");
        let body = event();
        let requests = (0..20).map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            post(app, "/ingest/transaction", &key, &body)
        });
        let answers = futures::future::join_all(requests).await;
        let mut ids = std::collections::BTreeSet::new();
        for r in answers {
            assert_eq!(r.status(), 202);
            ids.insert(r.json::<Value>().await.unwrap()["transaction_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
    }
    assert_eq!(on_topic(&a.topic), 5, "one event per key");
    let claimed: f64 = [metrics(&a).await, metrics(&b).await]
        .iter()
        .map(|m| vigil_testkit::metric_sum(m, "vigil_producer_idempotency_requests_total", &[("outcome", "claimed")]))
        .sum();
    assert_eq!(claimed, 5.0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_batch_key_replays_the_batch_answer_and_refuses_another_batch() {
    let app = TestApp::spawn().await;
    let batch = json!([event(), event(), {"amount_minor": -1}]);
    let first = post(&app, "/ingest/transactions", "batch-1", &batch).await;
    assert_eq!(first.status(), 207);
    let first: Value = first.json().await.unwrap();
    assert_eq!((first["accepted"].as_u64(), first["rejected"].as_u64()), (Some(2), Some(1)));
    let again = post(&app, "/ingest/transactions", "batch-1", &batch).await;
    assert_eq!((again.status().as_u16(), again.headers()["idempotent-replayed"].to_str().unwrap()), (207, "true"));
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_conflict(post(&app, "/ingest/transactions", "batch-1", &json!([event()])).await).await;
    assert_eq!(on_topic(&app.topic), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_older_than_the_window_is_forgotten_and_deleted() {
    let app = TestApp::spawn().await;
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    assert_eq!(post(&app, "/ingest/transaction", "order-old", &event()).await.status(), 202);
    assert_eq!(post(&app, "/ingest/transaction", "order-new", &event()).await.status(), 202);
    // order-old was first used 25 hours ago (the window is 24 h by default).
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'order-old'")
        .execute(&pool)
        .await
        .unwrap();
    // Checked on read: the key is free again, whatever the body.
    let mut other = event();
    other["amount_minor"] = json!(777);
    let r = post(&app, "/ingest/transaction", "order-old", &other).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(on_topic(&app.topic), 3);

    // And deleted by the expiry job.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'order-old'")
        .execute(&pool)
        .await
        .unwrap();
    let store = vigil_producer::idempotency::IdempotencyStore::new(
        pool.clone(),
        Duration::from_secs(86_400),
        Duration::from_secs(30),
        vigil_producer::metrics::ProducerMetrics::new(&vigil_common::metrics::Metrics::new("producer")),
    );
    assert_eq!(store.expire().await.unwrap(), 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys").fetch_all(&pool).await.unwrap();
    assert_eq!(keys, vec!["order-new".to_string()]);
    app.shutdown().await;
}

#[tokio::test]
async fn requests_without_a_key_never_touch_the_database_and_keep_working_without_it() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        assert_eq!(app.post_json("/ingest/transaction", &event()).await.status(), 202);
    }
    assert_eq!(app.post_json("/ingest/transactions", &json!([event(), event()])).await.status(), 202);
    let m = metrics(&app).await;
    for q in ["idempotency_claim", "idempotency_read", "idempotency_complete", "idempotency_release"] {
        let n = vigil_testkit::metric_sum(&m, "vigil_producer_db_query_duration_seconds_count", &[("query", q)]);
        assert_eq!(n, 0.0, "{q}");
    }
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 0);
    pool.close().await;

    // The database goes away: requests without a key are still accepted; with one, 503.
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgPool::connect(&vigil_testkit::admin_url()).await.unwrap().acquire().await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut *admin).await.unwrap();
    assert_eq!(app.post_json("/ingest/transaction", &event()).await.status(), 202);
    let r = post(&app, "/ingest/transaction", "order-db-down", &event()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(on_topic(&app.topic), 8);
    app.shutdown().await;
}

#[tokio::test]
async fn a_claim_left_by_a_dead_instance_is_taken_over_by_the_same_body_after_the_lease_but_not_by_another() {
    // REQUEST_TIMEOUT (30 s) is the lease: a claim older than it has no live request behind it.
    let app = TestApp::spawn_with(None, None, &["--produce-timeout=1s"]).await;
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let body = event();
    let digest = vigil_producer::idempotency::Digest::of_json("ingest", &body);
    // An instance claimed the key and died before answering.
    sqlx::query("INSERT INTO idempotency_keys (scope, key, body_digest, claimed_at) VALUES ('transaction', 'order-dead', $1, now())")
        .bind(&digest.0[..])
        .execute(&pool)
        .await
        .unwrap();
    // Within the lease the claim is in flight: the request waits (PRODUCE_TIMEOUT + 1 s), then 409.
    let r = post(&app, "/ingest/transaction", "order-dead", &body).await;
    assert_eq!(r.status(), 409);
    assert!(r.headers().contains_key("retry-after"));
    sqlx::query("UPDATE idempotency_keys SET claimed_at = now() - interval '31 seconds' WHERE key = 'order-dead'")
        .execute(&pool)
        .await
        .unwrap();
    let mut other = body.clone();
    other["amount_minor"] = json!(1);
    assert_conflict(post(&app, "/ingest/transaction", "order-dead", &other).await).await;
    let r = post(&app, "/ingest/transaction", "order-dead", &body).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(on_topic(&app.topic), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_that_is_not_final_is_not_kept_so_the_retry_publishes() {
    // Nothing listens on the broker's port: every publish times out with 503.
    let closed = format!("127.0.0.1:{}", vigil_testkit::free_port());
    let app = TestApp::spawn_with(Some(&closed), Some("transactions"), &["--produce-timeout=1s"]).await;
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let r = post(&app, "/ingest/transaction", "order-retry", &event()).await;
    assert_eq!(r.status(), 503);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 0, "a 503 must release its claim");
    // A retry with another body is not a conflict either: nothing was accepted under the key.
    let r = post(&app, "/ingest/transaction", "order-retry", &event()).await;
    assert_eq!(r.status(), 503);
    app.stop.cancel();
}

#[tokio::test]
async fn a_replay_carries_the_first_answers_headers_such_as_location() {
    let app = TestApp::spawn().await;
    let body = event();
    // No detector runs here: the verdict does not come within the wait, so the answer is 202
    // with a Location to poll.
    let send = || {
        app.http
            .post(format!("{}/ingest/transaction", app.url))
            .header("Idempotency-Key", "order-loc")
            .header("Prefer", "wait=0.2")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/transactions/"), "{location}");
    let again = send().await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    assert_eq!(again.headers()["retry-after"], "1");
    assert_eq!(on_topic(&app.topic), 1);
    app.shutdown().await;
}
