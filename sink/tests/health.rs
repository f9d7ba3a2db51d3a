//! `/health` names the database and the broker, and answers 503 naming the database once it is
//! gone; `/live` stays 200.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Sink, Topics};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_is_200_with_each_dependency_ok_then_503_naming_the_database_once_it_is_dropped() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink-health"), &[]).await;
    let url = format!("http://127.0.0.1:{}", sink.port);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    let healthy = vigil_testkit::eventually(Duration::from_secs(30), || async {
        let r = http.get(format!("{url}/health")).send().await.ok()?;
        (r.status() == 200).then_some(r.json::<Value>().await.ok()?)
    })
    .await
    .expect("/health never answered 200");
    assert_eq!(
        healthy,
        json!({"status": "ok", "dependencies": {"database": {"status": "ok"}, "broker": {"status": "ok"}}})
    );

    db.pool.close().await;
    let mut admin = sqlx::PgPool::connect(&vigil_testkit::admin_url()).await.unwrap().acquire().await.unwrap();
    sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", db.name)).execute(&mut *admin).await.unwrap();
    let r = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["dependencies"]["database"]["status"], "down", "{p}");
    assert_eq!(p["dependencies"]["broker"], json!({"status": "ok"}), "{p}");
    assert!(p["detail"].as_str().unwrap().starts_with("database: "), "{p}");
    assert_eq!(http.get(format!("{url}/live")).send().await.unwrap().status(), 200);
    sink.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), sink.task).await;
}
