//! `/health` names the broker and answers 503 once it is gone; `/live` stays 200.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vigil_testkit::{OwnBroker, PipelineTopics};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_is_200_with_the_broker_ok_then_503_naming_it_once_it_is_stopped_and_live_stays_200() {
    let mut broker = OwnBroker::start();
    let topics = PipelineTopics::named(&vigil_testkit::unique("h"));
    broker.kafka().ensure_topics(&topics.specs(1)).await.unwrap();
    let mut argv = vec!["detector".to_string(), "--bind=127.0.0.1:0".into()];
    argv.extend(support::args(&topics, &vigil_testkit::unique("health"), "3s"));
    argv.retain(|a| !a.starts_with("--kafka-brokers="));
    argv.push(format!("--kafka-brokers={}", broker.brokers()));
    let config = vigil_detector::Config::from_args(&vigil_detector::Args::parse_from(argv)).unwrap();
    let app = vigil_detector::Application::build(config).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    let healthy = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let r = http.get(format!("{url}/health")).send().await.ok()?;
        (r.status() == 200).then_some(r.json::<Value>().await.ok()?)
    })
    .await
    .expect("/health never answered 200");
    assert_eq!(healthy, json!({"status": "ok", "dependencies": {"broker": {"status": "ok"}}}));

    broker.kill();
    let r = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["dependencies"]["broker"]["status"], "down", "{p}");
    assert!(p["detail"].as_str().unwrap().starts_with("broker: "), "{p}");
    assert_eq!(http.get(format!("{url}/live")).send().await.unwrap().status(), 200);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
}
