use serde_json::{json, Value};

use crate::helpers::{fields, fixture, fixture_json, problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_and_nothing_is_stored() {
    let app = spawn_app_with(&["--max-body-bytes=4096".to_owned()]).await;
    let mut body = fixture_json("grafana-firing-two-alerts.json");
    body["message"] = json!("x".repeat(5000));
    problem(app.post_grafana(body.to_string()).await, 413).await;
    let mut body = fixture_json("alertmanager-firing-v4.json");
    body["padding"] = json!("x".repeat(5000));
    problem(app.post_alertmanager(body.to_string()).await, 413).await;
    app.assert_nothing_stored().await;
    // Just under the limit is fine.
    assert_eq!(app.post_grafana(fixture("grafana-firing-two-alerts.json")).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_refused_with_400_and_nothing_is_stored() {
    let app = spawn_app().await;
    let truncated = fixture("grafana-firing-two-alerts.json");
    let truncated = &truncated[..truncated.len() / 2];
    for body in [truncated, "", "{receiver: vigil}", "not json", "{\"alerts\": [}"] {
        problem(app.post_grafana(body.to_owned()).await, 400).await;
        problem(app.post_alertmanager(body.to_owned()).await, 400).await;
    }
    app.assert_nothing_stored().await;
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_shape_is_refused_with_422_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let base = fixture_json("grafana-firing-two-alerts.json");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(&|v| v["alerts"][1]["status"] = json!("pending")), "alerts[1].status"),
        (with(&|v| v["status"] = json!("ok")), "status"),
        (with(&|v| drop(v.as_object_mut().unwrap().remove("alerts"))), "alerts"),
        (with(&|v| drop(v.as_object_mut().unwrap().remove("receiver"))), "receiver"),
        (with(&|v| v["alerts"] = json!({"status": "firing"})), "alerts"),
        (with(&|v| drop(v["alerts"][0].as_object_mut().unwrap().remove("labels"))), "alerts[0].labels"),
        (with(&|v| drop(v["alerts"][0].as_object_mut().unwrap().remove("startsAt"))), "alerts[0].startsAt"),
        (with(&|v| v["alerts"][0]["startsAt"] = json!("last tuesday")), "alerts[0].startsAt"),
        (with(&|v| v["alerts"][0]["endsAt"] = json!(12)), "alerts[0].endsAt"),
        (with(&|v| v["alerts"][0]["labels"]["team"] = json!(7)), "alerts[0].labels.team"),
        (with(&|v| v["alerts"][0]["values"] = json!([1, 2])), "alerts[0].values"),
        (with(&|v| v["alerts"][0]["fingerprint"] = json!(42)), "alerts[0].fingerprint"),
        (with(&|v| v["version"] = json!("2")), "version"),
        (json!([base.clone()]), "body"),
        (json!("firing"), "body"),
    ];
    for (body, field) in cases {
        let p = problem(app.post_grafana(body.to_string()).await, 422).await;
        assert_eq!(fields(&p), vec![field.to_owned()], "{p}");
    }
    let mut am = fixture_json("alertmanager-firing-v4.json");
    am["version"] = json!("3");
    assert_eq!(fields(&problem(app.post_alertmanager(am.to_string()).await, 422).await), vec!["version"]);
    app.assert_nothing_stored().await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"vigil_webhook_notifications_rejected_total{source="grafana",reason="invalid"} 15"#),
        "{metrics}"
    );
    app.stop().await;
}

/// Found by schemathesis: PostgreSQL cannot store U+0000, so a NUL in the body used to fail the
/// insert with a 500.
#[tokio::test]
async fn a_nul_character_anywhere_in_the_body_is_refused_with_422_not_500_and_nothing_is_stored() {
    let app = spawn_app().await;
    let mut grafana = fixture_json("grafana-firing-two-alerts.json");
    grafana["alerts"][1]["annotations"]["summary"] = json!("before\u{0}after");
    let p = problem(app.post_grafana(grafana.to_string()).await, 422).await;
    assert_eq!(fields(&p), vec!["alerts[1].annotations.summary"], "{p}");
    let mut am = fixture_json("alertmanager-firing-v4.json");
    am["someExtension"] = json!({"note": "\u{0}"});
    let p = problem(app.post_alertmanager(am.to_string()).await, 422).await;
    assert_eq!(fields(&p), vec!["someExtension.note"], "{p}");
    app.assert_nothing_stored().await;
    app.stop().await;
}
