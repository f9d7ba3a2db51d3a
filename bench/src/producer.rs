//! Producer throughput, three ways, in one run against the same broker:
//! (a) rdkafka alone (same message size, acks=all, idempotent), (b) POST /ingest/transactions
//! with batches of 500, (c) POST /ingest/transaction over 64 concurrent connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use vigil_schemas::Codec;

use crate::report::{publish, rate};
use crate::workload;

pub async fn run(events: usize) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let txs: Vec<_> = workload::transactions(1, events, 5000, now, 10_000).collect();

    // (a) rdkafka alone.
    let topic = vigil_testkit::fresh_topics(&[("bench-raw", 6)]).await.remove(0);
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(60)).create()?;
    let codec = Codec::single_object();
    let payloads: Vec<Vec<u8>> = txs.iter().map(|t| codec.encode(t).unwrap()).collect();
    let bytes = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len().max(1);
    let start = Instant::now();
    let mut pending = Vec::with_capacity(payloads.len());
    for (t, p) in txs.iter().zip(&payloads) {
        loop {
            match producer.send_result(FutureRecord::to(&topic).key(&t.category).payload(p)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r?.map_err(|(e, _)| e)?;
    }
    let raw = rate(events, start.elapsed().as_secs_f64());

    // (b) and (c) through the producer service, in-process, on its own topic each.
    let batch = {
        let (url, stop) = start_producer().await;
        let http = reqwest::Client::new();
        let bodies: Vec<serde_json::Value> =
            txs.chunks(500).map(|c| serde_json::Value::Array(c.iter().map(workload::json).collect())).collect();
        let bodies = Arc::new(bodies);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (http, url, bodies, next) = (http.clone(), url.clone(), bodies.clone(), next.clone());
            clients.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(b) = bodies.get(i) else { break };
                    let r = http.post(format!("{url}/ingest/transactions")).json(b).send().await.unwrap();
                    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
                }
            }));
        }
        for c in clients {
            c.await?;
        }
        let r = rate(events, start.elapsed().as_secs_f64());
        stop.cancel();
        r
    };
    let single_events = events.min(20_000);
    let single = {
        let (url, stop) = start_producer().await;
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let bodies: Arc<Vec<serde_json::Value>> = Arc::new(txs[..single_events].iter().map(workload::json).collect());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..64 {
            let (http, url, bodies, next) = (http.clone(), url.clone(), bodies.clone(), next.clone());
            clients.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(b) = bodies.get(i) else { break };
                    let r = http.post(format!("{url}/ingest/transaction")).json(b).send().await.unwrap();
                    assert_eq!(r.status(), 202);
                }
            }));
        }
        for c in clients {
            c.await?;
        }
        let r = rate(single_events, start.elapsed().as_secs_f64());
        stop.cancel();
        r
    };
    publish(
        "producer",
        &[
            format!(
                "message size: {bytes} bytes (Avro single-object); acks=all, idempotent; broker {}",
                vigil_testkit::brokers()
            ),
            format!("(a) rdkafka alone:                         {raw:>9.0} events/s ({events} events)"),
            format!("(b) POST /ingest/transactions, 500/batch:  {batch:>9.0} events/s ({events} events, 4 clients)"),
            format!("(c) POST /ingest/transaction, 64 conns:    {single:>9.0} events/s ({single_events} events)"),
            format!("b/a = {:.2} (target >= 0.5)   c/a = {:.2}", batch / raw, single / raw),
        ],
    );
    Ok(())
}

async fn start_producer() -> (String, CancellationToken) {
    let topic = vigil_testkit::fresh_topics(&[("bench-http", 6)]).await.remove(0);
    let db = vigil_testkit::fresh_database().await;
    let args = vec![
        "producer".to_string(),
        "--bind=127.0.0.1:0".into(),
        format!("--database-url={}", db.url),
        format!("--kafka-brokers={}", vigil_testkit::brokers()),
        format!("--topic={topic}"),
        "--max-event-age=30d".into(),
        // The bench measures what the HTTP path can take, not the per-client rate limit.
        "--rate-limit-per-second=0".into(),
    ];
    let config = vigil_producer::Config::from_args(vigil_producer::Args::parse_from(args)).unwrap();
    let app = vigil_producer::Application::build(config).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    (url, stop)
}
