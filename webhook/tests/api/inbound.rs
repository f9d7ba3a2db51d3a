use serde_json::{json, Value};

use crate::helpers::{fixture, fixture_json, spawn_app};

/// (route, fixture) in the order a sender would send them: each firing before its resolution.
const FIXTURES: [(&str, &str); 7] = [
    ("/grafana/webhook", "grafana-firing-two-alerts.json"),
    ("/grafana/webhook", "grafana-firing-one-alert.json"),
    ("/grafana/webhook", "grafana-firing-one-alert-default-template.json"),
    ("/grafana/webhook", "grafana-resolved-one-alert.json"),
    ("/alertmanager/webhook", "alertmanager-firing-v4.json"),
    ("/alertmanager/webhook", "alertmanager-resolved-v4.json"),
    ("/alertmanager/webhook", "alertmanager-firing-v4-no-fingerprint.json"),
];

#[tokio::test]
async fn every_fixture_is_stored_with_exactly_as_many_alerts_as_it_holds() {
    let app = spawn_app().await;
    for (route, name) in FIXTURES {
        let expected = fixture_json(name)["alerts"].as_array().unwrap().len() as i64;
        let resp = app.post(route, fixture(name), Some(crate::helpers::TOKEN)).await;
        assert_eq!(resp.status(), 200, "{name}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["alerts"], expected, "{name}: {body}");
        assert_eq!(body["stored"], expected, "{name}: {body}");
        assert_eq!(body["duplicates"], 0, "{name}: {body}");
        let id = body["notification_id"].as_i64().unwrap();
        assert_eq!(app.count(&format!("received_alerts WHERE notification_id = {id}")).await, expected, "{name}");
        let raw: Value = sqlx::query_scalar("SELECT payload FROM alert_notifications WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert_eq!(raw, fixture_json(name), "{name}: the raw payload is kept whole");
    }
    assert_eq!(app.count("alert_notifications").await, FIXTURES.len() as i64);
    assert_eq!(app.count("received_alerts").await, 2 + 1 + 1 + 1 + 2 + 1 + 1);

    // Labels, annotations and values are JSONB; the zero startsAt of the template is unknown.
    let (labels, values, value_string): (Value, Option<Value>, Option<String>) = sqlx::query_as(
        r#"SELECT labels, "values", value_string FROM received_alerts WHERE fingerprint = '5be0d1c2a3f49876' AND status = 'firing'"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(labels, json!({"alertname": "VigilReversedRate", "grafana_folder": "vigil"}));
    assert_eq!(values, Some(json!({"A": 0.031})));
    assert_eq!(value_string.as_deref(), Some("[ var='A' labels={} value=0.031 ]"));
    let (starts_at, values): (Option<chrono::DateTime<chrono::Utc>>, Option<Value>) =
        sqlx::query_as(r#"SELECT starts_at, "values" FROM received_alerts WHERE fingerprint = 'c4d7e19a0b3f2586'"#)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(starts_at, None);
    assert_eq!(values, None, "values: null is stored as SQL NULL");
    app.stop().await;
}

#[tokio::test]
async fn an_alert_without_fingerprint_gets_the_one_alertmanager_would_compute() {
    let app = spawn_app().await;
    let resp = app.post_alertmanager(fixture("alertmanager-firing-v4-no-fingerprint.json")).await;
    assert_eq!(resp.status(), 200);
    let fp: String =
        sqlx::query_scalar("SELECT fingerprint FROM received_alerts").fetch_one(&app.db.pool).await.unwrap();
    // FNV-1a 64 over the sorted labels, each name and value followed by 0xFF, computed
    // independently for alertname, dc, instance, job.
    assert_eq!(fp, "c5a4899d08db9a42");
    app.stop().await;
}

#[tokio::test]
async fn the_same_notification_sent_three_times_stores_its_alerts_once() {
    let app = spawn_app().await;
    for attempt in 0..3 {
        let body: Value = app.post_grafana(fixture("grafana-firing-two-alerts.json")).await.json().await.unwrap();
        assert_eq!(body["stored"], if attempt == 0 { 2 } else { 0 }, "{body}");
        assert_eq!(body["duplicates"], if attempt == 0 { 0 } else { 2 }, "{body}");
        let body: Value = app.post_alertmanager(fixture("alertmanager-firing-v4.json")).await.json().await.unwrap();
        assert_eq!(body["stored"], if attempt == 0 { 2 } else { 0 }, "{body}");
    }
    assert_eq!(app.count("received_alerts WHERE source = 'grafana'").await, 2);
    assert_eq!(app.count("received_alerts WHERE source = 'alertmanager'").await, 2);
    // The decision: every accepted request keeps its raw payload (the audit log of what was
    // received), re-sends included; only the alerts are deduplicated.
    assert_eq!(app.count("alert_notifications").await, 6);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(r#"vigil_webhook_alerts_duplicate_total{source="grafana"} 4"#), "{metrics}");
    app.stop().await;
}

/// Found by schemathesis (long form, seed 744951558): an alert listed twice in one body was
/// stored once but answered (and counted in the metrics) as stored twice.
#[tokio::test]
async fn an_alert_listed_twice_in_one_body_is_stored_once_and_answered_as_one_duplicate() {
    let app = spawn_app().await;
    let mut body = fixture_json("grafana-firing-two-alerts.json");
    let first = body["alerts"][0].clone();
    body["alerts"].as_array_mut().unwrap().push(first);
    let answer: Value = app.post_grafana(body.to_string()).await.json().await.unwrap();
    assert_eq!(
        (answer["alerts"].as_u64(), answer["stored"].as_u64(), answer["duplicates"].as_u64()),
        (Some(3), Some(2), Some(1)),
        "{answer}"
    );
    assert_eq!(app.count("received_alerts").await, 2);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(r#"vigil_webhook_alerts_duplicate_total{source="grafana"} 1"#), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_notification_sent_concurrently_many_times_is_stored_once() {
    let app = spawn_app().await;
    let sends = (0..8).map(|_| app.post_grafana(fixture("grafana-firing-two-alerts.json")));
    for resp in futures::future::join_all(sends).await {
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(app.count("received_alerts").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn firing_then_resolved_leaves_one_firing_row_with_resolved_at_and_one_resolved_row() {
    let app = spawn_app().await;
    assert_eq!(app.post_grafana(fixture("grafana-firing-one-alert.json")).await.status(), 200);
    let body: Value = app.post_grafana(fixture("grafana-resolved-one-alert.json")).await.json().await.unwrap();
    assert_eq!(body["resolved"], 1, "{body}");
    let rows: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT status, resolved_at FROM received_alerts WHERE fingerprint = '5be0d1c2a3f49876' ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "firing");
    assert_eq!(rows[0].1.map(|t| t.to_rfc3339()), Some("2026-11-22T10:07:30+00:00".to_owned()));
    assert_eq!(rows[1].0, "resolved");
    // Re-sending the resolution changes nothing.
    let body: Value = app.post_grafana(fixture("grafana-resolved-one-alert.json")).await.json().await.unwrap();
    assert_eq!((body["stored"].as_i64(), body["resolved"].as_i64()), (Some(0), Some(0)), "{body}");
    assert_eq!(app.count("received_alerts").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_resolution_that_arrives_before_its_firing_notification_still_closes_it() {
    let app = spawn_app().await;
    assert_eq!(app.post_alertmanager(fixture("alertmanager-resolved-v4.json")).await.status(), 200);
    let body: Value = app.post_alertmanager(fixture("alertmanager-firing-v4.json")).await.json().await.unwrap();
    assert_eq!(body["stored"], 2, "{body}");
    assert_eq!(body["resolved"], 1, "{body}");
    let resolved_at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT resolved_at FROM received_alerts WHERE fingerprint = '9e3f1a2b4c5d6e70' AND status = 'firing'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(resolved_at.map(|t| t.to_rfc3339()), Some("2026-11-22T08:04:11+00:00".to_owned()));
    // The other alert of the group is still open.
    assert_eq!(app.count("received_alerts WHERE status = 'firing' AND resolved_at IS NULL").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_kept_and_optional_fields_may_be_missing_or_null() {
    let app = spawn_app().await;
    let mut body = fixture_json("grafana-firing-one-alert.json");
    body["vigilExtension"] = json!({"team": "payments", "priority": 2});
    body["title"] = Value::Null;
    let top = body.as_object_mut().unwrap();
    for optional in ["orgId", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "version", "message"] {
        top.remove(optional);
    }
    let alert = body["alerts"][0].as_object_mut().unwrap();
    for optional in ["silenceURL", "dashboardURL", "panelURL", "valueString", "endsAt", "annotations"] {
        alert.remove(optional);
    }
    alert.insert("values".into(), Value::Null);
    alert.insert("newGrafanaField".into(), json!([1, 2, 3]));
    let resp = app.post_grafana(body.to_string()).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let raw: Value =
        sqlx::query_scalar("SELECT payload FROM alert_notifications").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(raw["vigilExtension"], json!({"team": "payments", "priority": 2}));
    assert_eq!(raw["alerts"][0]["newGrafanaField"], json!([1, 2, 3]));
    let annotations: Value =
        sqlx::query_scalar("SELECT annotations FROM received_alerts").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(annotations, json!({}));
    app.stop().await;
}
