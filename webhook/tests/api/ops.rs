use serde_json::Value;

use crate::helpers::{fixture, problem, spawn_app};

#[tokio::test]
async fn health_ready_and_metrics_answer_and_metrics_follow_the_naming_convention() {
    let app = spawn_app().await;
    let health: Value = app.get("/health", None).await.json().await.unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok", "dependencies": {"database": {"status": "ok"}}}));
    assert_eq!(app.get("/live", None).await.status(), 200);
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
async fn ready_and_health_report_503_when_the_database_is_gone_and_live_stays_200() {
    let app = spawn_app().await;
    let admin = vigil_testkit::admin_url();
    let name = app.db.name.clone();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    app.db.pool.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
    let p = problem(app.get("/ready", None).await, 503).await;
    assert!(p["detail"].as_str().unwrap().contains("database"), "{p}");
    let p = problem(app.get("/health", None).await, 503).await;
    assert_eq!(p["dependencies"]["database"]["status"], "down", "{p}");
    assert!(p["detail"].as_str().unwrap().starts_with("database: "), "{p}");
    assert_eq!(app.get("/live", None).await.status(), 200);
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
        ("/alerts/{id}/triage", "get"),
        ("/alerts/{id}/triage", "post"),
        ("/settings", "get"),
        ("/settings", "post"),
        ("/silences", "get"),
        ("/silences", "post"),
        ("/silences/{id}", "get"),
        ("/silences/{id}/expire", "post"),
        ("/live", "get"),
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
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len(), "a route is documented that is not tested here");
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
    // The list's parameters: listing::the_openapi_document_lists_every_filter_of_the_anomaly_list.
    let triage = &paths["/alerts/{id}/triage"]["post"]["responses"];
    for s in ["200", "401", "404", "409", "412", "422"] {
        assert!(triage.get(s).is_some(), "POST /alerts/{{id}}/triage does not document {s}");
    }
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

/// `vigil_webhook_db_query_duration_seconds{query}`'s count for `query`, from a scrape.
fn query_count(metrics: &str, query: &str) -> u64 {
    let prefix = format!("vigil_webhook_db_query_duration_seconds_count{{query=\"{query}\"}} ");
    let line = metrics.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"));
    line[prefix.len()..].parse().unwrap()
}

#[tokio::test]
async fn each_database_query_is_timed_under_its_own_name_and_only_fixed_names_appear() {
    let app = spawn_app().await;
    let scrape = || async { app.get("/metrics", None).await.text().await.unwrap() };
    let before = scrape().await;
    // Every query name is there from the start, at 0.
    for q in vigil_webhook::metrics::DbQuery::ALL {
        assert_eq!(query_count(&before, q.as_str()), 0, "{}", q.as_str());
    }

    // A list request with a filter a client chose: the label is the query's name, never its
    // SQL or the client's values.
    app.get_json("/alerts?severity=critical&limit=3").await;
    app.get_json("/alerts").await;
    app.get_json("/grafana/alerts?source=grafana").await;
    app.post_grafana(fixture("grafana-firing-two-alerts.json")).await;
    let after = scrape().await;
    assert_eq!(query_count(&after, "alerts_list"), 2);
    assert_eq!(query_count(&after, "grafana_alerts_list"), 1);
    for q in ["notification_begin", "notification_insert", "received_alerts_insert", "notification_commit"] {
        assert_eq!(query_count(&after, q), 1, "{q}");
    }
    assert!(after.contains("# TYPE vigil_webhook_db_query_duration_seconds histogram"), "{after}");
    assert!(
        after.contains(r#"vigil_webhook_db_query_duration_seconds_bucket{le="+Inf",query="alerts_list"} 2"#),
        "{after}"
    );
    let names: Vec<&str> = vigil_webhook::metrics::DbQuery::ALL.iter().map(|q| q.as_str()).collect();
    for line in after.lines().filter(|l| l.starts_with("vigil_webhook_db_query_duration_seconds")) {
        let label = line.split("query=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        assert!(names.contains(&label), "unexpected query label {label:?} in {line}");
    }
    app.stop().await;
}
