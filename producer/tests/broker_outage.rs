//! Durability when the broker goes away and comes back, and on SIGTERM.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{event, TestApp};
use vigil_schemas::{Codec, Transaction};
use vigil_testkit::{read_topic_on, OwnBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_down_ready_and_ingest_answer_503_and_ingest_recovers_without_a_restart() {
    let mut broker = OwnBroker::start();
    broker.kafka().ensure_topics(&[("transactions", 3)]).await.unwrap();
    let app = TestApp::spawn_with(Some(&broker.brokers()), Some("transactions"), &["--produce-timeout=2s"]).await;
    let mut acked = BTreeSet::new();
    let r = app.post_json("/ingest/transaction", &event()).await;
    assert_eq!(r.status(), 202);
    acked.insert(r.json::<serde_json::Value>().await.unwrap()["transaction_id"].as_str().unwrap().to_owned());

    broker.kill();
    let ready = vigil_testkit::eventually(Duration::from_secs(20), || async {
        let r = app.http.get(format!("{}/ready", app.url)).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/ready stayed 200 with the broker down");

    for _ in 0..3 {
        let start = Instant::now();
        let r = app.post_json("/ingest/transaction", &event()).await;
        let took = start.elapsed();
        assert_eq!(r.status(), 503, "an event was accepted with the broker down");
        assert!(r.headers().contains_key("retry-after"));
        assert!(took < Duration::from_secs(5), "503 took {took:?}, more than the 2 s produce timeout allows");
    }

    broker.restart();
    let back = vigil_testkit::eventually(Duration::from_secs(60), || async {
        let r = app.post_json("/ingest/transaction", &event()).await;
        if r.status() == 202 {
            Some(r.json::<serde_json::Value>().await.ok()?["transaction_id"].as_str()?.to_owned())
        } else {
            None
        }
    })
    .await
    .expect("ingest never recovered after the broker came back");
    acked.insert(back);
    let codec = Codec::single_object();
    let on_topic: BTreeSet<String> = read_topic_on(&broker.kafka(), "transactions", usize::MAX, Duration::from_secs(5))
        .into_iter()
        .map(|r| codec.decode::<Transaction>(&r.payload).unwrap().transaction_id)
        .collect();
    assert!(
        acked.is_subset(&on_topic),
        "acknowledged events missing: {:?}",
        acked.difference(&on_topic).collect::<Vec<_>>()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_burst_loses_no_acknowledged_event() {
    let topic = vigil_testkit::fresh_topics(&[("transactions", 3)]).await.remove(0);
    let port = vigil_testkit::free_port();
    let db = vigil_testkit::fresh_database().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_producer"))
        .env("PRODUCER_BIND", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &db.url)
        .env("KAFKA_BROKERS", vigil_testkit::brokers())
        .env("TRANSACTIONS_TOPIC", &topic)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        http.get(format!("{url}/ready")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await
    .expect("producer not ready");

    // 16 clients post as fast as they can; SIGTERM lands in the middle of it.
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (http, url) = (http.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0;
            for _ in 0..400 {
                match http.post(format!("{url}/ingest/transaction")).json(&event()).send().await {
                    Ok(r) if r.status() == 202 => acked.push(
                        r.json::<serde_json::Value>().await.unwrap()["transaction_id"].as_str().unwrap().to_owned(),
                    ),
                    _ => refused += 1,
                }
            }
            (acked, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    for c in clients {
        let (a, r) = c.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "producer exited with {status}");
    assert!(
        !acked.is_empty() && refused > 0,
        "the signal did not land mid-burst: {} acked, {refused} refused",
        acked.len()
    );
    let codec = Codec::single_object();
    let on_topic: BTreeSet<String> = vigil_testkit::read_topic(&topic, acked.len(), Duration::from_secs(30))
        .into_iter()
        .map(|r| codec.decode::<Transaction>(&r.payload).unwrap().transaction_id)
        .collect();
    let missing: Vec<_> = acked.difference(&on_topic).collect();
    assert!(missing.is_empty(), "{} acknowledged events missing after SIGTERM", missing.len());
    println!(
        "SIGTERM mid-burst: {} acknowledged, all on the topic; {refused} refused after shutdown began",
        acked.len()
    );
}
