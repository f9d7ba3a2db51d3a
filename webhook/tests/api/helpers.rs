use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_testkit::TestDb;
use vigil_webhook::{Application, Args, Config};

pub const TOKEN: &str = "test-write-token-00001";
/// Given as WEBHOOK_TOKEN beside WEBHOOK_TOKENS (rotation).
pub const TOKEN_2: &str = "test-write-token-00002";
pub const READ_TOKEN: &str = "test-read-token-000001";
pub const HMAC_SECRET: &str = "test-hmac-secret-000001";

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// The configuration every test starts from, plus the `extra` flags (each flag at most once).
pub fn config(db_url: &str, extra: &[String]) -> Config {
    let mut args = vec![
        "webhook".to_owned(),
        "--bind=127.0.0.1:0".to_owned(),
        format!("--database-url={db_url}"),
        format!("--database-max-connections=5"),
        format!("--tokens={TOKEN}"),
        format!("--token={TOKEN_2}"),
        format!("--read-tokens={READ_TOKEN}"),
        format!("--kafka-brokers={}", vigil_testkit::brokers()),
    ];
    args.extend(extra.iter().cloned());
    Config::from_args(Args::parse_from(args)).unwrap_or_else(|e| panic!("test config: {e}"))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[String]) -> TestApp {
    spawn_app_on(vigil_testkit::fresh_database().await, extra).await
}

/// Starts the application on an existing database (a restart).
pub async fn spawn_app_on(db: TestDb, extra: &[String]) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        vigil_common::telemetry::init("webhook-test");
    }
    let app = Application::build(config(&db.url, extra)).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    TestApp { address, db, client: reqwest::Client::new(), shutdown, handle }
}

impl TestApp {
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>, token: Option<&str>) -> reqwest::Response {
        let mut req =
            self.client.post(format!("{}{path}", self.address)).header("content-type", "application/json").body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn post_grafana(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post("/grafana/webhook", body, Some(TOKEN)).await
    }

    pub async fn post_alertmanager(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post("/alertmanager/webhook", body, Some(TOKEN)).await
    }

    pub async fn get(&self, path_and_query: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path_and_query}", self.address));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn get_json(&self, path_and_query: &str) -> Value {
        let resp = self.get(path_and_query, Some(READ_TOKEN)).await;
        assert_eq!(resp.status(), 200, "GET {path_and_query}");
        resp.json().await.unwrap()
    }

    pub async fn count(&self, sql_from_where: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {sql_from_where}")).fetch_one(&self.db.pool).await.unwrap()
    }

    /// Asserts that no notification and no alert was stored.
    pub async fn assert_nothing_stored(&self) {
        assert_eq!(self.count("alert_notifications").await, 0, "a notification was stored");
        assert_eq!(self.count("received_alerts").await, 0, "an alert was stored");
    }

    /// Stops the application gracefully and returns its database.
    pub async fn stop(self) -> TestDb {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("the application did not stop within 15 s")
            .unwrap();
        result.unwrap();
        self.db
    }
}

/// A problem+json body, checked to be one.
pub async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    resp.json().await.unwrap()
}

/// The fields a problem's `errors` name.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}
