//! A service told to stop after its broker died exits within `SHUTDOWN_TIMEOUT`, non-zero,
//! instead of hanging on a flush or a commit that can never complete (the detector and the sink
//! used to run on for minutes after `make run`'s Ctrl-C had killed the broker).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_ops_tests::repo;
use vigil_testkit::{free_port, fresh_database, unique, OwnBroker, PipelineTopics};

const LIMIT: Duration = Duration::from_secs(3);
/// Past the limit: the process exiting and the kernel reaping it.
const MARGIN: Duration = Duration::from_secs(4);

fn bin(name: &str) -> std::path::PathBuf {
    let p = repo::path(&format!("target/debug/{name}"));
    assert!(p.exists(), "{} does not exist: build the services first (make test does)", p.display());
    p
}

/// The sink's dead letters so far.
async fn dead_letters(url: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("{url}/metrics")).await else { return 0.0 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some("vigil_sink_dead_letters_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_ready(port: u16, child: &mut std::process::Child, log: &Path) {
    let url = format!("http://127.0.0.1:{port}/ready");
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the service exited ({status}) before it was ready:\n{}", std::fs::read_to_string(log).unwrap());
        }
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "not ready within 90 s:\n{}",
            std::fs::read_to_string(log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `name` on `broker`, waits until it is ready (and, with `input`, until it consumed a
/// message put there, so it has offsets to commit), kills the broker (`kill -9`), sends the
/// service SIGTERM and checks that it exits within the limit, non-zero.
async fn stop_after_the_broker_died(
    name: &str,
    port: u16,
    env: &[(String, String)],
    broker: &mut OwnBroker,
    input: Option<&str>,
) {
    let log = std::env::temp_dir().join(format!("{}.log", unique(name)));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(bin(name))
        .envs(env.iter().cloned())
        .env("SHUTDOWN_TIMEOUT", format!("{}s", LIMIT.as_secs()))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    wait_ready(port, &mut child, &log).await;
    if let Some(topic) = input {
        // Bytes that decode as nothing: dead-lettered, and its offset is then due a commit.
        let p: rdkafka::producer::FutureProducer =
            broker.kafka().producer_config(Duration::from_secs(10)).create().unwrap();
        p.send(rdkafka::producer::FutureRecord::<str, [u8]>::to(topic).payload(b"not avro"), Duration::from_secs(10))
            .await
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while dead_letters(&url).await < 1.0 {
            assert!(t0.elapsed() < Duration::from_secs(60), "the message was not consumed within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let it settle into its loop (assigned, first commits), as a running `make run` is.
    tokio::time::sleep(Duration::from_secs(3)).await;

    broker.kill();
    let t0 = Instant::now();
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > LIMIT + MARGIN + Duration::from_secs(30) {
            let _ = child.kill();
            panic!(
                "the {name} still ran {:?} after SIGTERM with its broker gone (limit {LIMIT:?}):\n{}",
                t0.elapsed(),
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = t0.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(took <= LIMIT + MARGIN, "the {name} took {took:?} to exit (limit {LIMIT:?}):\n{text}");
    assert!(!status.success(), "the {name} exited 0 although it could not flush to a dead broker:\n{text}");
    if took >= LIMIT {
        // Stopped by the bound: it must say so, and what it was still flushing.
        assert!(
            text.contains("Shutdown did not finish within SHUTDOWN_TIMEOUT"),
            "the {name} hit the limit without saying so:\n{text}"
        );
    }
    eprintln!("{name}: exited with {status} {took:?} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_detector_stops_within_its_bound_when_the_broker_is_gone() {
    let mut broker = OwnBroker::start();
    let topics = PipelineTopics::named(&unique("t"));
    broker.kafka().ensure_topics(&topics.specs(2)).await.unwrap();
    let port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("DETECTOR_BIND".into(), format!("127.0.0.1:{port}")),
        ("CONSUMER_GROUP".into(), unique("detector")),
        ("CONSUMER_INSTANCE_ID".into(), "detector-0".into()),
    ];
    // The topic flags as the variables they stand for (--minutes-topic=x: MINUTES_TOPIC=x).
    for flag in topics.detector_flags() {
        let (k, v) = flag.trim_start_matches("--").split_once('=').unwrap();
        env.push((k.to_ascii_uppercase().replace('-', "_"), v.to_owned()));
    }
    env.retain(|(k, _)| k != "KAFKA_BROKERS");
    env.push(("KAFKA_BROKERS".into(), broker.brokers()));
    stop_after_the_broker_died("detector", port, &env, &mut broker, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_stops_within_its_bound_when_the_broker_is_gone() {
    let mut broker = OwnBroker::start();
    let topics = PipelineTopics::named(&unique("t"));
    broker.kafka().ensure_topics(&topics.specs(2)).await.unwrap();
    let db = fresh_database().await;
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("SINK_BIND", format!("127.0.0.1:{port}")),
        ("DATABASE_URL", db.url.clone()),
        ("KAFKA_BROKERS", broker.brokers()),
        ("MINUTES_TOPIC", topics.minutes.clone()),
        ("ANOMALIES_TOPIC", topics.anomalies.clone()),
        ("DEAD_LETTER_TOPIC", topics.dead_letter.clone()),
        ("CONSUMER_GROUP", unique("sink")),
        ("CONSUMER_INSTANCE_ID", "sink-0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    stop_after_the_broker_died("sink", port, &env, &mut broker, Some(&topics.minutes)).await;
}

#[test]
fn every_service_documents_its_shutdown_limit_and_refuses_a_bad_one() {
    for name in ["producer", "sink", "webhook", "detector"] {
        let help = Command::new(bin(name)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("SHUTDOWN_TIMEOUT"), "{name} --help does not mention SHUTDOWN_TIMEOUT:\n{help}");
        let out = Command::new(bin(name))
            .arg("--check-config")
            .env("SHUTDOWN_TIMEOUT", "0")
            .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
            .env("WEBHOOK_TOKENS", "a-token-of-sufficient-length-0123456789")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} accepted SHUTDOWN_TIMEOUT=0: {err}");
        assert!(err.contains("SHUTDOWN_TIMEOUT"), "{name} did not name SHUTDOWN_TIMEOUT: {err}");
    }
}
