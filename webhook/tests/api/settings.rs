//! `POST /settings`: validated, recorded in the audit trail and published on the settings topic
//! (acknowledged by the real broker) for the detectors; `GET /settings` lists what was published.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{fields, problem, spawn_app_with, TestApp, READ_TOKEN};

const OPS: &str = "ops-settings-token-0001";

async fn app(topic: &str) -> TestApp {
    spawn_app_with(&[format!("--triage-users=ops:{OPS}"), format!("--settings-topic={topic}")]).await
}

async fn post(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client.post(format!("{}/settings", app.address)).bearer_auth(token).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn a_settings_change_is_published_for_the_detectors_and_audited() {
    let topic = vigil_testkit::fresh_topics(&[("detector-settings", 1)]).await.remove(0);
    let app = app(&topic).await;
    let r = post(
        &app,
        OPS,
        json!({"scope": "merchant:m-7", "amount": {"min_severity": "critical", "z_critical": 6}, "comment": "noisy merchant"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let published: Value = r.json().await.unwrap();
    assert_eq!(published["actor"], "ops");
    // At the earliest SETTINGS_LEAD (6 minutes) after now, on a whole minute.
    let from = chrono::DateTime::parse_from_rfc3339(published["effective_from"].as_str().unwrap()).unwrap();
    let lead = from.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    assert!((300_000..=420_000).contains(&lead), "{lead}");
    assert_eq!(from.timestamp_millis() % 60_000, 0);

    // On the topic, keyed by scope and minute, as the detectors read it.
    let records = vigil_testkit::read_topic(&topic, 1, Duration::from_secs(10));
    assert_eq!(records.len(), 1);
    let record: vigil_schemas::settings::RuleSettings = serde_json::from_slice(&records[0].payload).unwrap();
    assert_eq!(records[0].key.as_deref(), Some(record.key().as_bytes()));
    assert_eq!((record.scope.as_str(), record.actor.as_str()), ("merchant:m-7", "ops"));
    assert_eq!(record.amount.min_severity, Some(vigil_schemas::Severity::Critical));
    assert_eq!(record.effective_from, from.timestamp_millis());

    let list = app.get_json("/settings?scope=merchant:m-7").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["record"]["comment"], "noisy merchant");
    assert!(sqlx::query("DELETE FROM settings_events").execute(&app.db.pool).await.is_err(), "append-only");

    // Refusals name the field and publish nothing.
    let too_soon = (chrono::Utc::now() + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:00Z").to_string();
    let p = problem(post(&app, OPS, json!({"scope": "global", "effective_from": too_soon})).await, 422).await;
    assert_eq!(fields(&p), ["effective_from"]);
    let p =
        problem(post(&app, OPS, json!({"scope": "shop:x", "amount": {"z_high": 4, "z_critical": 3}})).await, 422).await;
    assert_eq!(fields(&p), ["scope", "amount.z_critical"]);
    assert_eq!(post(&app, READ_TOKEN, json!({"scope": "global"})).await.status(), 401);
    assert_eq!(vigil_testkit::read_topic(&topic, 2, Duration::from_secs(3)).len(), 1, "nothing more published");
    app.stop().await;
}
