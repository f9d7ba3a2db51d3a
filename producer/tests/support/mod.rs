//! A producer on a fresh topic of the test broker, on an ephemeral port.
#![allow(dead_code, clippy::unwrap_used)]

use clap::Parser;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_producer::{Application, Args, Config};
use vigil_schemas::{Codec, Transaction};

pub struct TestApp {
    pub url: String,
    pub topic: String,
    /// The producer's database (idempotency keys).
    pub database_url: String,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts a producer against `brokers` (default: the test broker) and a fresh database,
    /// with extra flags.
    pub async fn spawn_with(brokers: Option<&str>, topic: Option<&str>, extra: &[&str]) -> TestApp {
        let db = vigil_testkit::fresh_database().await;
        Self::spawn_on(brokers, topic, &db.url, extra).await
    }

    /// Starts a producer on the given database (a restart, or a second instance).
    pub async fn spawn_on(brokers: Option<&str>, topic: Option<&str>, database_url: &str, extra: &[&str]) -> TestApp {
        let topic = match topic {
            Some(t) => t.to_owned(),
            None => vigil_testkit::fresh_topics(&[("transactions", 3)]).await.remove(0),
        };
        let brokers = brokers.map(str::to_owned).unwrap_or_else(vigil_testkit::brokers);
        let mut args = vec![
            "producer".to_string(),
            "--bind=127.0.0.1:0".into(),
            format!("--kafka-brokers={brokers}"),
            format!("--topic={topic}"),
            format!("--database-url={database_url}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = Config::from_args(Args::parse_from(args)).unwrap();
        let app = Application::build(config).await.unwrap();
        let url = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone()));
        TestApp { url, topic, database_url: database_url.to_owned(), http: reqwest::Client::new(), stop, task }
    }

    pub async fn spawn() -> TestApp {
        Self::spawn_with(None, None, &[]).await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.url)).json(body).send().await.unwrap()
    }

    /// Everything on the topic after `quiet` without new messages, decoded.
    pub fn published(&self, expected: usize) -> Vec<(String, Transaction)> {
        let timeout =
            if expected == 0 { std::time::Duration::from_secs(3) } else { std::time::Duration::from_secs(20) };
        let codec = Codec::single_object();
        vigil_testkit::read_topic(&self.topic, expected.max(usize::from(expected == 0) * usize::MAX), timeout)
            .into_iter()
            .map(|r| (String::from_utf8(r.key.unwrap_or_default()).unwrap(), codec.decode(&r.payload).unwrap()))
            .collect()
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn event() -> serde_json::Value {
    serde_json::json!({
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "status": "denied",
        "auth_code": "05",
        "amount_minor": 1250,
        "currency": "EUR",
        "category": "food",
        "merchant_id": "m-042",
    })
}
