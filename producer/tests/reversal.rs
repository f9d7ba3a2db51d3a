//! `POST /transactions/{id}/reversal` against the real broker and PostgreSQL: every refusal, the
//! idempotent replay across a restart and from another instance, concurrent reversals that never
//! give back more than the original, and the lookup showing both ends of the link.
//!
//! The originals are written into `transaction_records` as the sink writes them (the day's
//! partition, then the row), so these tests need no sink.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::TestApp;
use vigil_schemas::{Codec, TransactionStatus};

async fn store_original(db: &str, id: &str, amount: i64, status: &str) -> DateTime<Utc> {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let at = Utc::now() - chrono::Duration::minutes(5);
    let day = at.date_naive();
    let next = day.succ_opt().unwrap();
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS transaction_records_p{} PARTITION OF transaction_records
         FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
        day.format("%Y%m%d")
    ))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO transaction_records (transaction_id, occurred_at, received_at, status, auth_code, amount_minor,
                                          currency, category, merchant_id)
         VALUES ($1, $2, $2, $3, '00', $4, 'EUR', 'food', 'm-7')",
    )
    .bind(id)
    .bind(at)
    .bind(status)
    .bind(amount)
    .execute(&pool)
    .await
    .unwrap();
    at
}

async fn reverse(app: &TestApp, id: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut r = app.http.post(format!("{}/transactions/{id}/reversal", app.url)).json(body);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    r.send().await.unwrap()
}

async fn refused(r: reqwest::Response, status: u16, field: &str) {
    let got = r.status();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(got, status, "{p}");
    if !field.is_empty() {
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reversal_is_published_linked_and_refused_where_it_must_be() {
    let app = TestApp::spawn().await;
    let original = "6f1c2a7e-0000-4000-8000-000000000001";
    store_original(&app.database_url, original, 10_000, "approved").await;
    let already_reversed = "6f1c2a7e-0000-4000-8000-000000000002";
    store_original(&app.database_url, already_reversed, 500, "reversed").await;

    // Refusals, none of which publishes anything.
    refused(reverse(&app, original, None, &json!({})).await, 422, "Idempotency-Key").await;
    refused(reverse(&app, "not-a-uuid", Some("k"), &json!({})).await, 422, "id").await;
    refused(reverse(&app, "6f1c2a7e-0000-4000-8000-0000000000ff", Some("k"), &json!({})).await, 404, "").await;
    refused(reverse(&app, already_reversed, Some("k"), &json!({})).await, 422, "id").await;
    refused(reverse(&app, original, Some("k-big"), &json!({"amount_minor": 10_001})).await, 422, "amount_minor").await;
    refused(reverse(&app, original, Some("k-zero"), &json!({"amount_minor": 0})).await, 422, "amount_minor").await;
    refused(reverse(&app, original, Some("k-field"), &json!({"amount": 5})).await, 422, "amount").await;

    // A partial reversal: 201, the reversed transaction on the topic, linked.
    let r =
        reverse(&app, original, Some("refund-1"), &json!({"amount_minor": 4_000, "reason": "customer refund"})).await;
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["amount_minor"], 4_000);
    assert_eq!(first["remaining_minor"], 6_000);
    let reversal_id = first["transaction_id"].as_str().unwrap().to_owned();
    let published = app.published(1);
    let tx = &published[0].1;
    assert_eq!(
        (tx.transaction_id.as_str(), tx.status, tx.amount_minor, tx.merchant_id.as_str(), tx.category.as_str()),
        (reversal_id.as_str(), TransactionStatus::Reversed, 4_000, "m-7", "food")
    );
    // The same key and body: the same answer, nothing published again; another body: refused.
    let again =
        reverse(&app, original, Some("refund-1"), &json!({"amount_minor": 4_000, "reason": "customer refund"})).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    refused(reverse(&app, original, Some("refund-1"), &json!({"amount_minor": 3_000})).await, 422, "Idempotency-Key")
        .await;
    // A reversal of the reversal is refused.
    refused(reverse(&app, &reversal_id, Some("k-rr"), &json!({})).await, 422, "id").await;

    // The lookup shows both ends of the link.
    let view: Value =
        app.http.get(format!("{}/transactions/{original}", app.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["reversals"][0]["reversal_id"], reversal_id.as_str());
    assert_eq!(view["reversals"][0]["reason"], "customer refund");
    let view: Value =
        app.http.get(format!("{}/transactions/{reversal_id}", app.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["reversal_of"]["original_id"], original);

    // After a restart, and from a second instance on the same database: the same key still
    // gets the same answer; the rest (6 000) can be reversed once, not twice.
    let (topic, db) = (app.topic.clone(), app.database_url.clone());
    app.shutdown().await;
    let a = TestApp::spawn_on(None, Some(&topic), &db, &[]).await;
    let b = TestApp::spawn_on(None, Some(&topic), &db, &[]).await;
    let replay =
        reverse(&b, original, Some("refund-1"), &json!({"amount_minor": 4_000, "reason": "customer refund"})).await;
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
    let empty = json!({});
    let (ra, rb) =
        tokio::join!(reverse(&a, original, Some("rest-a"), &empty), reverse(&b, original, Some("rest-b"), &empty));
    let mut statuses = vec![ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, vec![201, 422], "one of two concurrent full reversals of the rest wins");
    let codec = Codec::single_object();
    let on_topic: Vec<(TransactionStatus, i64)> = vigil_testkit::read_topic_all(&topic, Duration::from_secs(3))
        .iter()
        .map(|r| codec.decode::<vigil_schemas::Transaction>(&r.payload).unwrap())
        .map(|t| (t.status, t.amount_minor))
        .collect();
    assert_eq!(on_topic, vec![(TransactionStatus::Reversed, 4_000), (TransactionStatus::Reversed, 6_000)]);
    refused(reverse(&a, original, Some("more"), &json!({"amount_minor": 1})).await, 422, "amount_minor").await;
    a.shutdown().await;
    b.shutdown().await;
}
