use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::{fixture, problem, spawn_app, spawn_app_with, HMAC_SECRET, READ_TOKEN, TOKEN, TOKEN_2};

const TS_HEADER: &str = "X-Grafana-Alerting-Signature-Timestamp";
const SIG_HEADER: &str = "X-Grafana-Alerting-Signature";

/// Grafana's signature, computed here independently of the service's code.
fn sign(secret: &str, timestamp: Option<&str>, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    if let Some(ts) = timestamp {
        mac.update(format!("{ts}:").as_bytes());
    }
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn post_signed(
    app: &crate::helpers::TestApp,
    body: &str,
    signature: Option<String>,
    timestamp: Option<String>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/grafana/webhook", app.address))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header(SIG_HEADER, s);
    }
    if let Some(t) = timestamp {
        req = req.header(TS_HEADER, t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_request_without_a_token_is_refused_with_401_and_nothing_is_stored() {
    let app = spawn_app().await;
    for (route, name) in [
        ("/grafana/webhook", "grafana-firing-two-alerts.json"),
        ("/alertmanager/webhook", "alertmanager-firing-v4.json"),
    ] {
        let p = problem(app.post(route, fixture(name), None).await, 401).await;
        assert!(p["detail"].as_str().unwrap().contains("Bearer"), "{p}");
    }
    app.assert_nothing_stored().await;
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_401_and_nothing_is_stored() {
    let app = spawn_app().await;
    for token in ["test-write-token-00003", "test-write-token-0000", READ_TOKEN, ""] {
        let resp = app.post("/grafana/webhook", fixture("grafana-firing-two-alerts.json"), Some(token)).await;
        problem(resp, 401).await;
        let resp = app.post("/alertmanager/webhook", fixture("alertmanager-firing-v4.json"), Some(token)).await;
        problem(resp, 401).await;
    }
    app.assert_nothing_stored().await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"vigil_webhook_auth_failures_total{route="grafana",reason="wrong_token"} 3"#),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_configured_token_is_accepted_so_a_token_can_be_rotated() {
    let app = spawn_app().await;
    for token in [TOKEN, TOKEN_2] {
        let resp = app.post("/alertmanager/webhook", fixture("alertmanager-firing-v4.json"), Some(token)).await;
        assert_eq!(resp.status(), 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_read_token_lists_alerts_but_cannot_post_notifications() {
    let app = spawn_app().await;
    problem(app.post("/grafana/webhook", fixture("grafana-firing-two-alerts.json"), Some(READ_TOKEN)).await, 401).await;
    for path in ["/alerts", "/grafana/alerts"] {
        assert_eq!(app.get(path, Some(READ_TOKEN)).await.status(), 200);
        assert_eq!(app.get(path, Some(TOKEN)).await.status(), 200, "a write token reads too");
        problem(app.get(path, None).await, 401).await;
        problem(app.get(path, Some("not-a-token-at-all-0000")).await, 401).await;
    }
    app.assert_nothing_stored().await;
    app.stop().await;
}

fn hmac_app_args() -> Vec<String> {
    vec![format!("--hmac-secrets=an-older-hmac-secret-0001,{HMAC_SECRET}"), "--max-clock-skew=5m".to_owned()]
}

#[tokio::test]
async fn a_valid_grafana_signature_with_or_without_timestamp_is_accepted() {
    let app = spawn_app_with(&hmac_app_args()).await;
    let body = fixture("grafana-firing-two-alerts.json");
    let ts = Utc::now().timestamp().to_string();
    let resp = post_signed(&app, &body, Some(sign(HMAC_SECRET, Some(&ts), &body)), Some(ts)).await;
    assert_eq!(resp.status(), 200);
    let body = fixture("grafana-firing-one-alert.json");
    let resp = post_signed(&app, &body, Some(sign(HMAC_SECRET, None, &body)), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.count("received_alerts").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_hmac_signature_is_refused_with_401_and_nothing_is_stored() {
    let app = spawn_app_with(&hmac_app_args()).await;
    let body = fixture("grafana-firing-two-alerts.json");
    let ts = Utc::now().timestamp().to_string();
    let cases = [
        // Another secret.
        (Some(sign("some-other-secret-000001", Some(&ts), &body)), Some(ts.clone())),
        // Signed over another body.
        (Some(sign(HMAC_SECRET, Some(&ts), "{}")), Some(ts.clone())),
        // Signed with the timestamp, sent without it.
        (Some(sign(HMAC_SECRET, Some(&ts), &body)), None),
        // Not hex.
        (Some("not-a-signature".to_owned()), Some(ts.clone())),
        // Missing.
        (None, Some(ts.clone())),
    ];
    for (signature, timestamp) in cases {
        problem(post_signed(&app, &body, signature, timestamp).await, 401).await;
    }
    app.assert_nothing_stored().await;
    app.stop().await;
}

#[tokio::test]
async fn a_signature_with_a_stale_timestamp_is_refused_with_401_and_nothing_is_stored() {
    let app = spawn_app_with(&hmac_app_args()).await;
    let body = fixture("grafana-firing-two-alerts.json");
    for skew in [-301, 301, -3600] {
        let ts = (Utc::now().timestamp() + skew).to_string();
        let p = problem(post_signed(&app, &body, Some(sign(HMAC_SECRET, Some(&ts), &body)), Some(ts)).await, 401).await;
        assert!(p["detail"].as_str().unwrap().contains("clock skew"), "{p}");
    }
    app.assert_nothing_stored().await;
    app.stop().await;
}
