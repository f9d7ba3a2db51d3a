//! The forwarder: anomalies produced to a real broker reach local receivers, signed, retried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::Sha256;
use tokio::net::TcpListener;
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Codec, Severity};
use vigil_webhook::outbound::payload::OutboundAnomaly;

use crate::helpers::{spawn_app_on, spawn_app_with, TestApp};

const SECRET: &str = "test-outbound-secret-0001";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
    answered: u16,
    at: Instant,
}

/// The `Retry-After` a failing receiver sends with its failure.
#[derive(Debug, Clone, Copy)]
enum RetryAfter {
    None,
    Seconds(u64),
    /// An IMF-fixdate this long after the answer.
    DateIn(Duration),
}

/// A local webhook receiver that answers `failure` (503 unless set) to its first `fail_first`
/// requests, then 200.
#[derive(Clone)]
struct Receiver {
    url: String,
    fail_first: usize,
    failure: (StatusCode, RetryAfter),
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start_on(listener: TcpListener, fail_first: usize) -> Self {
        Self::failing_with(listener, fail_first, StatusCode::SERVICE_UNAVAILABLE, RetryAfter::None).await
    }

    async fn failing_with(listener: TcpListener, fail_first: usize, status: StatusCode, after: RetryAfter) -> Self {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let r = Receiver { url, fail_first, failure: (status, after), got: Arc::default() };
        async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
            let mut got = r.got.lock().unwrap();
            let failing = got.len() < r.fail_first;
            let status = if failing { r.failure.0 } else { StatusCode::OK };
            got.push(Received { headers, body: body.to_vec(), answered: status.as_u16(), at: Instant::now() });
            let retry_after = match r.failure.1 {
                RetryAfter::Seconds(s) if failing => Some(s.to_string()),
                RetryAfter::DateIn(d) if failing => {
                    let at = chrono::Utc::now() + d;
                    Some(at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                }
                _ => None,
            };
            match retry_after {
                Some(v) => (status, [(header::RETRY_AFTER, v)]).into_response(),
                None => status.into_response(),
            }
        }
        let app = Router::new().route("/hook", post(hook)).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<Received> {
        self.requests().into_iter().filter(|r| r.answered == 200).collect()
    }
}

fn anomaly(id: &str, severity: Severity, state: AnomalyState) -> Anomaly {
    Anomaly {
        id: id.to_owned(),
        sequence: if state == AnomalyState::Firing { 0 } else { 3 },
        rule: AnomalyRule::DeniedRate,
        dimension: AnomalyDimension::Merchant,
        dimension_value: "m-42".into(),
        window_start: Some(1_795_000_000_000),
        window_end: Some(1_795_000_060_000),
        transaction_id: None,
        category: None,
        merchant_id: Some("m-42".into()),
        observed: 0.62,
        observed_count: 62,
        observed_total: 100,
        baseline_mean: 0.08,
        baseline_stddev: 0.02,
        baseline_n: 120,
        scored_on: "rate".into(),
        score: 27.0,
        p_value: Some(1e-12),
        threshold: 4.0,
        severity,
        state,
        message: "Merchant m-42 denied 62% of 100 transactions against a baseline of 8%.".into(),
        first_seen: 1_795_000_000_000,
        last_updated: 1_795_000_060_000,
        resolved_at: None,
    }
}

async fn produce(topic: &str, anomalies: &[Anomaly]) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(10)).create().unwrap();
    let codec = Codec::single_object();
    for a in anomalies {
        let bytes = codec.encode(a).unwrap();
        producer
            .send(FutureRecord::to(topic).key(&a.id).payload(&bytes), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn forwarder_args(topic: &str, urls: &[String]) -> Vec<String> {
    vec![
        format!("--outbound-urls={}", urls.join(",")),
        format!("--outbound-hmac-secret={SECRET}"),
        format!("--anomalies-topic={topic}"),
        format!("--consumer-group={}", vigil_testkit::unique("webhook")),
        "--outbound-timeout=30s".to_owned(),
        "--outbound-retry-initial=100ms".to_owned(),
        "--outbound-retry-max=400ms".to_owned(),
    ]
}

/// The signature, recomputed independently of the service's code.
fn signature_verifies(r: &Received) -> bool {
    let ts = r.headers["x-vigil-timestamp"].to_str().unwrap();
    let sig = r.headers["x-vigil-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    sig == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn delivery_rows(app: &TestApp) -> Vec<(String, String, String, i32)> {
    sqlx::query_as("SELECT anomaly_id, url, status, attempts FROM outbound_deliveries ORDER BY url")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_critical_anomaly_reaches_a_recovering_receiver_signed_while_a_dead_receiver_delays_nothing() {
    let topic = vigil_testkit::fresh_topics(&[("anomalies", 1)]).await.remove(0);
    let live = Receiver::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), 2).await;
    // A receiver that accepts connections (the kernel's backlog) and never answers: each attempt
    // hangs until the 30 s timeout.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    let live_url = live.url.clone();
    let app = spawn_app_with(&forwarder_args(&topic, &[dead_url.clone(), live_url.clone()])).await;

    let started = Instant::now();
    let critical = anomaly("an-critical", Severity::Critical, AnomalyState::Firing);
    produce(
        &topic,
        &[
            anomaly("an-medium", Severity::Medium, AnomalyState::Firing),
            anomaly("an-resolved", Severity::Critical, AnomalyState::Resolved),
            critical.clone(),
            // Kafka redelivers: the same anomaly again.
            critical.clone(),
        ],
    )
    .await;

    let delivered = vigil_testkit::eventually(Duration::from_secs(25), || {
        let live = live.clone();
        async move { live.delivered().first().cloned() }
    })
    .await
    .expect("the live receiver did not get the anomaly");
    assert!(started.elapsed() < Duration::from_secs(25), "the dead receiver held up the live one");

    let sent: OutboundAnomaly = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(sent, OutboundAnomaly::from(&critical));
    assert_eq!(sent.state, "firing");
    assert!(signature_verifies(&delivered), "the signature does not verify");
    assert_eq!(delivered.headers["x-vigil-anomaly-id"], "an-critical");
    assert_eq!(delivered.headers["content-type"], "application/json");

    // Give a duplicate delivery the chance to happen, then check there was none.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = live.requests();
    assert_eq!(requests.iter().map(|r| r.answered).collect::<Vec<_>>(), [503, 503, 200]);
    assert!(requests.iter().all(signature_verifies));
    assert!(requests.iter().all(|r| r.headers["x-vigil-anomaly-id"] == "an-critical"));

    let mut rows = delivery_rows(&app).await;
    rows.sort_by_key(|r| r.1 == live_url);
    assert_eq!(rows.len(), 2, "one row per (anomaly, URL), the redelivered message added none: {rows:?}");
    assert_eq!(rows[0], ("an-critical".to_owned(), dead_url, "pending".to_owned(), 0));
    assert_eq!(rows[1], ("an-critical".to_owned(), live_url, "delivered".to_owned(), 3));
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    for line in [
        r#"vigil_webhook_outbound_deliveries_total{outcome="retried"} 2"#,
        r#"vigil_webhook_outbound_deliveries_total{outcome="delivered"} 1"#,
        r#"vigil_webhook_anomalies_consumed_total{outcome="filtered"} 2"#,
        r#"vigil_webhook_anomalies_consumed_total{outcome="queued"} 1"#,
        r#"vigil_webhook_anomalies_consumed_total{outcome="already_pushed"} 1"#,
        // Each outcome recorded is one timed query: two retries and one delivery (the dead
        // receiver's attempt is still hanging).
        r#"vigil_webhook_db_query_duration_seconds_count{query="outbound_mark_retry"} 2"#,
        r#"vigil_webhook_db_query_duration_seconds_count{query="outbound_mark_delivered"} 1"#,
        r#"vigil_webhook_db_query_duration_seconds_count{query="outbound_insert"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    // Shutting down does not wait for the hanging attempt.
    let stopping = Instant::now();
    app.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(10));
    drop(dead);
}

#[tokio::test]
async fn deliveries_pending_when_the_service_stops_are_delivered_after_a_restart() {
    let topic = vigil_testkit::fresh_topics(&[("anomalies", 1)]).await.remove(0);
    // The receiver is down at first: its port refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut args = forwarder_args(&topic, std::slice::from_ref(&url));
    for a in &mut args {
        if a.starts_with("--outbound-timeout=") {
            *a = "--outbound-timeout=2s".to_owned();
        }
    }
    let app = spawn_app_with(&args).await;
    produce(&topic, &[anomaly("an-restart", Severity::Critical, AnomalyState::Firing)]).await;
    let pool = app.db.pool.clone();
    let attempted = vigil_testkit::eventually(Duration::from_secs(25), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT attempts FROM outbound_deliveries WHERE status = 'pending' AND attempts >= 1",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    assert!(attempted.is_some(), "the delivery was never attempted");
    let db = app.stop().await;

    let receiver = Receiver::start_on(TcpListener::bind(("127.0.0.1", port)).await.unwrap(), 0).await;
    let app = spawn_app_on(db, &args).await;
    let delivered = vigil_testkit::eventually(Duration::from_secs(20), || {
        let r = receiver.clone();
        async move { r.delivered().first().cloned() }
    })
    .await
    .expect("the pending delivery was not resumed after the restart");
    assert_eq!(delivered.headers["x-vigil-anomaly-id"], "an-restart");
    let rows = delivery_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "delivered");
    app.stop().await;
}

/// The anomaly `id` at `severity` in `state`, as the detector's `sequence`-th state of it.
fn state_of(id: &str, sequence: i64, severity: Severity, state: AnomalyState) -> Anomaly {
    Anomaly { sequence, last_updated: 1_795_000_000_000 + sequence * 60_000, ..anomaly(id, severity, state) }
}

/// The (severity, state, sequence) of each push the receiver accepted for `id`, in order.
fn pushes_of(r: &Receiver, id: &str) -> Vec<(String, String, i64)> {
    r.delivered()
        .iter()
        .map(|d| serde_json::from_slice::<OutboundAnomaly>(&d.body).unwrap())
        .filter(|a| a.id == id)
        .map(|a| (a.severity, a.state, a.sequence))
        .collect()
}

/// Waits until the receiver got the push of `id` (a sentinel produced after the records under
/// test, on the same single partition: once it arrives, every earlier record was handled).
async fn wait_for(r: &Receiver, id: &str) {
    let got = vigil_testkit::eventually(Duration::from_secs(25), || {
        let r = r.clone();
        let id = id.to_owned();
        async move { r.delivered().iter().any(|d| d.headers["x-vigil-anomaly-id"] == id.as_str()).then_some(()) }
    })
    .await;
    assert!(got.is_some(), "the receiver never got {id}");
}

async fn delivery_severities(app: &TestApp, id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT severity FROM outbound_deliveries WHERE anomaly_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_anomaly_that_opens_at_medium_and_escalates_to_critical_is_pushed_once_even_after_redelivery_and_a_restart()
{
    let topic = vigil_testkit::fresh_topics(&[("anomalies", 1)]).await.remove(0);
    let receiver = Receiver::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), 0).await;
    let args = forwarder_args(&topic, std::slice::from_ref(&receiver.url));
    let app = spawn_app_with(&args).await;

    let escalating = [
        state_of("an-escalates", 0, Severity::Medium, AnomalyState::Firing),
        state_of("an-escalates", 1, Severity::High, AnomalyState::Updated),
        state_of("an-escalates", 2, Severity::Critical, AnomalyState::Updated),
        // Still critical: nothing new reached.
        state_of("an-escalates", 3, Severity::Critical, AnomalyState::Updated),
        state_of("an-escalates", 4, Severity::Critical, AnomalyState::Resolved),
    ];
    produce(&topic, &escalating).await;
    produce(&topic, &[anomaly("sentinel-1", Severity::Critical, AnomalyState::Firing)]).await;
    wait_for(&receiver, "sentinel-1").await;
    assert_eq!(pushes_of(&receiver, "an-escalates"), [("critical".to_owned(), "updated".to_owned(), 2)]);
    let pushed: OutboundAnomaly = serde_json::from_slice(
        &receiver.delivered().iter().find(|d| d.headers["x-vigil-anomaly-id"] == "an-escalates").unwrap().body,
    )
    .unwrap();
    assert_eq!(pushed, OutboundAnomaly::from(&escalating[2]));

    // Kafka redelivers every record of the anomaly.
    produce(&topic, &escalating).await;
    produce(&topic, &[anomaly("sentinel-2", Severity::Critical, AnomalyState::Firing)]).await;
    wait_for(&receiver, "sentinel-2").await;
    let db = app.stop().await;

    // A restart under a new consumer group reads the whole topic again, from the first record.
    let mut again = args.clone();
    for a in &mut again {
        if a.starts_with("--consumer-group=") {
            *a = format!("--consumer-group={}", vigil_testkit::unique("webhook"));
        }
    }
    let app = spawn_app_on(db, &again).await;
    produce(&topic, &[anomaly("sentinel-3", Severity::Critical, AnomalyState::Firing)]).await;
    wait_for(&receiver, "sentinel-3").await;

    assert_eq!(pushes_of(&receiver, "an-escalates").len(), 1, "pushed more than once: {:?}", receiver.requests());
    assert_eq!(delivery_severities(&app, "an-escalates").await, ["critical"]);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    // After the restart the new group read the topic again: the anomaly's 5 states twice and the
    // two earlier sentinels. Its critical states (2 of 5, twice) and the sentinels were already
    // pushed; the medium, high and resolved ones (3 of 5, twice) are filtered; only the last
    // sentinel was queued.
    for line in [
        r#"vigil_webhook_anomalies_consumed_total{outcome="already_pushed"} 6"#,
        r#"vigil_webhook_anomalies_consumed_total{outcome="filtered"} 6"#,
        r#"vigil_webhook_anomalies_consumed_total{outcome="queued"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn with_the_minimum_at_high_an_anomaly_is_pushed_at_high_then_at_critical_and_not_when_it_steps_down() {
    let topic = vigil_testkit::fresh_topics(&[("anomalies", 1)]).await.remove(0);
    let receiver = Receiver::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), 0).await;
    let mut args = forwarder_args(&topic, std::slice::from_ref(&receiver.url));
    args.push("--outbound-min-severity=high".to_owned());
    let app = spawn_app_with(&args).await;

    let states = [
        state_of("an-high", 0, Severity::High, AnomalyState::Firing),
        state_of("an-high", 1, Severity::High, AnomalyState::Updated),
        state_of("an-high", 2, Severity::Critical, AnomalyState::Updated),
        // Down to high, then back up to critical: neither severity is reached for the first time.
        state_of("an-high", 3, Severity::High, AnomalyState::Updated),
        state_of("an-high", 4, Severity::Critical, AnomalyState::Updated),
        // Opens at critical: one push, at critical only.
        state_of("an-critical", 0, Severity::Critical, AnomalyState::Firing),
        state_of("an-critical", 1, Severity::High, AnomalyState::Updated),
        // Never reaches high.
        state_of("an-medium", 0, Severity::Medium, AnomalyState::Firing),
    ];
    produce(&topic, &states).await;
    produce(&topic, &states[..2]).await;
    produce(&topic, &[anomaly("sentinel", Severity::Critical, AnomalyState::Firing)]).await;
    wait_for(&receiver, "sentinel").await;

    let high = [("high".to_owned(), "firing".to_owned(), 0), ("critical".to_owned(), "updated".to_owned(), 2)];
    assert_eq!(pushes_of(&receiver, "an-high"), high);
    assert_eq!(pushes_of(&receiver, "an-critical"), [("critical".to_owned(), "firing".to_owned(), 0)]);
    assert_eq!(pushes_of(&receiver, "an-medium"), []);
    assert_eq!(delivery_severities(&app, "an-high").await, ["high", "critical"]);
    assert_eq!(delivery_severities(&app, "an-critical").await, ["critical"]);
    app.stop().await;
}

#[tokio::test]
async fn an_anomaly_a_silence_matches_is_not_pushed_and_one_it_does_not_match_is() {
    let topic = vigil_testkit::fresh_topics(&[("anomalies", 1)]).await.remove(0);
    let receiver = Receiver::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), 0).await;
    let mut args = forwarder_args(&topic, std::slice::from_ref(&receiver.url));
    args.push("--triage-users=ops:ops-triage-token-00001".to_owned());
    let app = spawn_app_with(&args).await;
    // A maintenance window of merchant m-quiet covering the anomalies' first_seen (2026-11-18).
    let r = app
        .client
        .post(format!("{}/silences", app.address))
        .bearer_auth("ops-triage-token-00001")
        .json(&serde_json::json!({
            "merchant_id": "m-quiet",
            "starts_at": "2026-11-18T00:00:00Z",
            "ends_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            "comment": "planned maintenance of m-quiet"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let quiet = Anomaly {
        merchant_id: Some("m-quiet".into()),
        dimension_value: "m-quiet".into(),
        ..anomaly("an-quiet", Severity::Critical, AnomalyState::Firing)
    };
    produce(&topic, &[quiet, anomaly("an-loud", Severity::Critical, AnomalyState::Firing)]).await;
    wait_for(&receiver, "an-loud").await;
    assert!(pushes_of(&receiver, "an-quiet").is_empty(), "a silenced anomaly was pushed");
    assert!(delivery_severities(&app, "an-quiet").await.is_empty());
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(r#"vigil_webhook_anomalies_consumed_total{outcome="silenced"} 1"#), "{metrics}");
    app.stop().await;
}

/// The receiver's answers and the time from each request to the next.
fn answers_and_gaps(r: &Receiver) -> (Vec<u16>, Vec<Duration>) {
    let got = r.requests();
    (got.iter().map(|g| g.answered).collect(), got.windows(2).map(|w| w[1].at - w[0].at).collect())
}

#[tokio::test]
async fn a_receivers_retry_after_on_429_and_503_delays_the_next_attempt_up_to_the_maximum_backoff() {
    let topic = vigil_testkit::fresh_topics(&[("anomalies", 1)]).await.remove(0);
    let bind = || TcpListener::bind("127.0.0.1:0");
    // The backoff alone would retry after 50 to 100 ms.
    let seconds =
        Receiver::failing_with(bind().await.unwrap(), 1, StatusCode::TOO_MANY_REQUESTS, RetryAfter::Seconds(2)).await;
    // An HTTP-date 4 s ahead, at whole seconds: a wait of more than 3 s.
    let date = Receiver::failing_with(
        bind().await.unwrap(),
        1,
        StatusCode::SERVICE_UNAVAILABLE,
        RetryAfter::DateIn(Duration::from_secs(4)),
    )
    .await;
    // An hour: capped at OUTBOUND_RETRY_MAX (5 s).
    let hour =
        Receiver::failing_with(bind().await.unwrap(), 1, StatusCode::TOO_MANY_REQUESTS, RetryAfter::Seconds(3600))
            .await;
    // On a 500 Retry-After is not honoured: the backoff applies.
    let other =
        Receiver::failing_with(bind().await.unwrap(), 1, StatusCode::INTERNAL_SERVER_ERROR, RetryAfter::Seconds(3600))
            .await;
    let receivers = [&seconds, &date, &hour, &other];
    let mut args = forwarder_args(&topic, &receivers.map(|r| r.url.clone()));
    for a in &mut args {
        if a.starts_with("--outbound-retry-max=") {
            *a = "--outbound-retry-max=5s".to_owned();
        }
    }
    let app = spawn_app_with(&args).await;
    produce(&topic, &[anomaly("an-retry-after", Severity::Critical, AnomalyState::Firing)]).await;
    for r in receivers {
        let got = vigil_testkit::eventually(Duration::from_secs(30), || {
            let r = r.clone();
            async move { r.delivered().first().cloned() }
        })
        .await;
        assert!(got.is_some(), "{} never got the anomaly: {:?}", r.url, answers_and_gaps(r));
    }

    let (answers, gaps) = answers_and_gaps(&seconds);
    assert_eq!(answers, [429, 200]);
    assert!(gaps[0] >= Duration::from_secs(2), "Retry-After: 2 but retried after {:?}", gaps[0]);
    assert!(gaps[0] < Duration::from_secs(10), "Retry-After: 2 but retried only after {:?}", gaps[0]);
    let (answers, gaps) = answers_and_gaps(&date);
    assert_eq!(answers, [503, 200]);
    assert!(gaps[0] >= Duration::from_secs(3), "Retry-After a date 3 to 4 s ahead but retried after {:?}", gaps[0]);
    let (answers, gaps) = answers_and_gaps(&hour);
    assert_eq!(answers, [429, 200]);
    assert!(
        gaps[0] >= Duration::from_secs(5) && gaps[0] < Duration::from_secs(15),
        "Retry-After: 3600 with a 5 s maximum backoff but retried after {:?}",
        gaps[0]
    );
    let (answers, gaps) = answers_and_gaps(&other);
    assert_eq!(answers, [500, 200]);
    assert!(gaps[0] < Duration::from_secs(2), "a 500's Retry-After was honoured: retried after {:?}", gaps[0]);
    app.stop().await;
}
