use serde_json::Value;

use crate::helpers::{fixture, problem, spawn_app};

#[tokio::test]
async fn health_ready_and_metrics_answer_and_metrics_follow_the_naming_convention() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health", None).await.status(), 200);
    let ready: Value = app.get("/ready", None).await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    app.post_grafana(fixture("grafana-firing-two-alerts.json")).await;
    app.post_alertmanager(fixture("alertmanager-firing-v4.json")).await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    for line in [
        r#"vigil_webhook_notifications_total{source="grafana",status="firing"} 1"#,
        r#"vigil_webhook_notifications_total{source="alertmanager",status="firing"} 1"#,
        r#"vigil_webhook_alerts_stored_total{source="grafana",status="firing"} 2"#,
        "vigil_webhook_store_duration_seconds_count 2",
        r#"vigil_webhook_http_requests_total{method="POST",route="/grafana/webhook",status="200"} 1"#,
        "# TYPE vigil_webhook_http_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    for name in metrics.lines().filter(|l| l.starts_with("# TYPE")).map(|l| l.split(' ').nth(2).unwrap()) {
        assert!(name.starts_with("vigil_webhook_"), "{name} does not follow vigil_<subsystem>_<name>_<unit>");
    }
    app.stop().await;
}

#[tokio::test]
async fn ready_reports_503_when_the_database_is_gone() {
    let app = spawn_app().await;
    let admin = vigil_testkit::admin_url();
    let name = app.db.name.clone();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    app.db.pool.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
    let p = problem(app.get("/ready", None).await, 503).await;
    assert!(p["detail"].as_str().unwrap().contains("database"), "{p}");
    assert_eq!(app.get("/health", None).await.status(), 200);
    let p = problem(app.post_grafana(fixture("grafana-firing-two-alerts.json")).await, 500).await;
    assert!(!p["detail"].as_str().unwrap().contains(&name), "internal details must not leak: {p}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_problem_json() {
    let app = spawn_app().await;
    problem(app.get("/nowhere", None).await, 404).await;
    problem(app.get("/grafana/webhook", None).await, 405).await;
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_body_and_error() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let routes = [
        ("/grafana/webhook", "post"),
        ("/alertmanager/webhook", "post"),
        ("/alerts", "get"),
        ("/grafana/alerts", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in routes {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        for (status, resp) in op["responses"].as_object().unwrap() {
            let content = resp["content"].as_object().unwrap_or_else(|| panic!("{method} {path} {status}: no body"));
            if !status.starts_with('2') {
                assert!(content.contains_key("application/problem+json"), "{method} {path} {status}: {resp}");
            }
        }
    }
    assert_eq!(paths.len(), routes.len(), "a route is documented that is not tested here");
    for (path, statuses) in [
        ("/grafana/webhook", &["200", "400", "401", "413", "422", "500"][..]),
        ("/alertmanager/webhook", &["200", "400", "401", "413", "422", "500"][..]),
        ("/alerts", &["200", "401", "422", "500"][..]),
        ("/grafana/alerts", &["200", "401", "422", "500"][..]),
    ] {
        let method = if path.ends_with("webhook") { "post" } else { "get" };
        let responses = paths[path][method]["responses"].as_object().unwrap();
        for s in statuses {
            assert!(responses.contains_key(*s), "{path} does not document {s}");
        }
        assert!(paths[path][method]["security"].is_array(), "{path} documents no security");
    }
    let params: Vec<&str> =
        paths["/alerts"]["get"]["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["limit", "cursor", "severity", "since"]);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "GrafanaNotification",
        "GrafanaAlert",
        "AlertmanagerNotification",
        "AlertmanagerAlert",
        "Accepted",
        "AnomalyPage",
        "AnomalyItem",
        "ReceivedAlertPage",
        "ReceivedAlertItem",
        "Problem",
        "FieldError",
        "OutboundAnomaly",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("bearer") && schemes.contains_key("grafana_hmac"));
    app.stop().await;
}
