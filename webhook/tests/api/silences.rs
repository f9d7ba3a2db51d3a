//! Silences against the real database: created, listed by state, expired (and kept), a window
//! that starts in the future, anomalies marked and filtered as silenced in `GET /alerts`, and the
//! audit trail of who did what.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{fields, problem, spawn_app_with, TestApp, READ_TOKEN};

const OPS: &str = "ops-silence-token-00001";

async fn app() -> TestApp {
    spawn_app_with(&[format!("--triage-users=ops:{OPS}")]).await
}

async fn create(app: &TestApp, body: Value) -> reqwest::Response {
    app.client.post(format!("{}/silences", app.address)).bearer_auth(OPS).json(&body).send().await.unwrap()
}

/// An anomaly of merchant `merchant` first seen `minutes_ago`.
async fn insert(pool: &PgPool, id: &str, merchant: &str, severity: &str, minutes_ago: i64) {
    sqlx::query(
        "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, merchant_id, observed, observed_count,
             observed_total, baseline_mean, baseline_stddev, baseline_n, scored_on, score, threshold, severity,
             state, message, first_seen, last_updated)
         VALUES ($1, 0, 'denied_rate', 'merchant', $2, $2, 0.5, 50, 100, 0.1, 0.01, 60, 'rate', 9.5, 4, $3,
             'firing', 'm', now() - make_interval(mins => $4), now())",
    )
    .bind(id)
    .bind(merchant)
    .bind(severity)
    .bind(minutes_ago as i32)
    .execute(pool)
    .await
    .unwrap();
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        v["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn silences_mark_what_they_match_planned_ones_wait_and_expired_ones_stay_listed() {
    let app = app().await;
    let now = Utc::now();
    // Active: merchant m-1, high and critical, from an hour ago to an hour ahead.
    let r = create(
        &app,
        json!({"merchant_id": "m-1", "severities": ["high", "critical"], "starts_at": (now - Duration::hours(1)).to_rfc3339(),
               "ends_at": (now + Duration::hours(1)).to_rfc3339(), "comment": "m-1 maintenance"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let active: Value = r.json().await.unwrap();
    assert_eq!((active["state"].as_str(), active["created_by"].as_str()), (Some("active"), Some("ops")));
    assert_eq!(location, format!("/silences/{}", active["id"].as_str().unwrap()));
    // Planned: merchant m-2 tomorrow.
    let planned: Value = create(
        &app,
        json!({"merchant_id": "m-2", "starts_at": (now + Duration::days(1)).to_rfc3339(),
               "ends_at": (now + Duration::days(1) + Duration::hours(2)).to_rfc3339(), "comment": "m-2 upgrade"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(planned["state"], "pending");

    insert(&app.db.pool, "m1-critical", "m-1", "critical", 10).await;
    insert(&app.db.pool, "m1-medium", "m-1", "medium", 10).await; // not a silenced severity
    insert(&app.db.pool, "m1-before", "m-1", "critical", 120).await; // first seen before the window
    insert(&app.db.pool, "m2-now", "m-2", "critical", 5).await; // its window has not begun
    let all = app.get_json("/alerts").await;
    let silenced: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["silenced"] == true)
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(silenced, ["m1-critical"]);
    assert_eq!(ids(&app.get_json("/alerts?silenced=true").await), ["m1-critical"]);
    assert_eq!(ids(&app.get_json("/alerts?silenced=false").await), ["m1-before", "m1-medium", "m2-now"]);
    let p = problem(app.get("/alerts?silenced=maybe", Some(READ_TOKEN)).await, 422).await;
    assert_eq!(fields(&p), ["silenced"]);

    // Expire the active one: it stays listed, expired, and its window ends now.
    let id = active["id"].as_str().unwrap();
    let r = app.client.post(format!("{}/silences/{id}/expire", app.address)).bearer_auth(OPS).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let expired: Value = r.json().await.unwrap();
    assert_eq!((expired["state"].as_str(), expired["expired_by"].as_str()), (Some("expired"), Some("ops")));
    let again = app.client.post(format!("{}/silences/{id}/expire", app.address)).bearer_auth(OPS).send().await.unwrap();
    problem(again, 409).await;
    // What began inside the window stays silenced; what begins after the expiry is not.
    insert(&app.db.pool, "m1-after", "m-1", "critical", 0).await;
    assert_eq!(ids(&app.get_json("/alerts?silenced=true").await), ["m1-critical"]);
    assert_eq!(app.get_json("/silences?state=expired").await["items"][0]["id"], id);
    assert_eq!(app.get_json("/silences?state=pending").await["items"][0]["id"], planned["id"]);
    assert_eq!(app.get_json("/silences").await["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.get_json(&format!("/silences/{id}")).await["comment"], "m-1 maintenance");

    // The audit trail: both silences created by ops, the first expired by ops.
    let trail: Vec<(String, String)> =
        sqlx::query_as("SELECT action, actor FROM silence_events ORDER BY seq").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(
        trail,
        [("create".into(), "ops".into()), ("create".into(), "ops".into()), ("expire".into(), "ops".into())]
    );
    assert!(sqlx::query("DELETE FROM silence_events").execute(&app.db.pool).await.is_err(), "append-only");
    app.stop().await;
}

#[tokio::test]
async fn bad_silences_are_refused_naming_each_field_and_readers_cannot_silence() {
    let app = app().await;
    let p = problem(
        create(&app, json!({"comment": "everything", "ends_at": (Utc::now() + Duration::hours(1)).to_rfc3339()})).await,
        422,
    )
    .await;
    assert_eq!(fields(&p), ["rule"], "a silence of everything is refused");
    let p = problem(
        create(&app, json!({"rule": "denied", "severities": ["low"], "ends_at": "2020-01-01T00:00:00Z"})).await,
        422,
    )
    .await;
    assert_eq!(fields(&p), ["rule", "severities", "ends_at", "comment"]);
    let r = app
        .client
        .post(format!("{}/silences", app.address))
        .bearer_auth(READ_TOKEN)
        .json(
            &json!({"rule": "denied_rate", "ends_at": (Utc::now() + Duration::hours(1)).to_rfc3339(), "comment": "x"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    problem(app.get("/silences/not-a-uuid", Some(READ_TOKEN)).await, 422).await;
    problem(app.get(&format!("/silences/{}", uuid::Uuid::new_v4()), Some(READ_TOKEN)).await, 404).await;
    assert_eq!(app.count("silences").await, 0);
    app.stop().await;
}
