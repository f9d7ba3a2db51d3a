//! schemathesis against the producer's own `/openapi.json`, through a real socket, on a fresh
//! topic of the test broker: generated and mutated requests (positive and negative) must get
//! documented answers (no 5xx; status, content type, headers and body as documented; invalid
//! data refused), and exactly the events of the requests answered 2xx reach the topic.
//!
//! Size and seed: see `vigil_testkit::schemathesis` (`make test` runs the short form,
//! `scripts/fuzz.sh` the long one).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::TestApp;
use vigil_schemas::Codec;
use vigil_testkit::schemathesis::{Report, Run};

/// Generated timestamps span years 1 to 9999; the widest window the configuration takes
/// (1e10 s either side, about 317 years) lets those near now through, so the accepting and
/// publishing path is fuzzed too, not only the refusals. Rate limiting is off (the default,
/// stated here): a 429 would only hide what the generated request reaches.
const SETTINGS: [&str; 5] = [
    "--max-event-age=115000d",
    "--max-future-skew=115000d",
    "--rate-limit-per-second=0",
    // No detector answers here: a verdict wait would only slow every generated request down.
    "--verdict-wait=0s",
    "--verdict-max-wait=0s",
];
const API_KEY: &str = "schemathesis-api-key-000001";

/// A batch answers each item on its own: one with a bad item among good ones is answered 207
/// (the good ones published, the bad one refused in its `items` entry), which is how this route
/// rejects invalid data. A bad item accepted (202) is still a failure.
const CONFIG: &str = r#"
[[operations]]
include-name = "POST /ingest/transactions"
checks.negative_data_rejection.expected-statuses = [207, 400, 401, 406, 413, 415, 422, 429]
"#;

fn run(name: &str, app: &TestApp) -> Run {
    Run { config: CONFIG.to_owned(), ..Run::new(name, &app.url) }
}

/// The transaction ids the 2xx answers acknowledged, one per acknowledged event.
fn acknowledged_ids(report: &Report) -> Vec<String> {
    let mut ids = Vec::new();
    for path in ["/ingest/transaction", "/transactions"] {
        for e in report.successes("POST", path) {
            let body = e.json();
            assert_eq!(body["status"], "accepted", "{path} answered {} with {body}", e.status);
            ids.push(body["transaction_id"].as_str().unwrap().to_owned());
        }
    }
    for e in report.successes("POST", "/ingest/transactions") {
        let body = e.json();
        let items = body["items"].as_array().unwrap();
        let accepted: Vec<&Value> = items.iter().filter(|i| i["status"] == "accepted").collect();
        assert_eq!(body["accepted"].as_u64(), Some(accepted.len() as u64), "{body}");
        ids.extend(accepted.iter().map(|i| i["transaction_id"].as_str().unwrap().to_owned()));
    }
    ids.sort();
    ids
}

/// Every event on the topic, decoded, as sorted transaction ids.
fn ids_on_topic(topic: &str, expected: usize) -> Vec<String> {
    // One more than expected, so the read waits out the timeout and would see any extra event;
    // every acknowledged event was on the broker before its 2xx went out.
    let codec = Codec::single_object();
    let mut ids: Vec<String> = vigil_testkit::read_topic(topic, expected + 1, Duration::from_secs(8))
        .into_iter()
        .map(|r| codec.decode::<vigil_schemas::Transaction>(&r.payload).unwrap().transaction_id)
        .collect();
    ids.sort();
    ids
}

async fn accepted_metric(app: &TestApp) -> u64 {
    let text = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"vigil_producer_events_total{outcome="accepted",reason="ok"} "#))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn check_topic_matches_acknowledgements(app: &TestApp, report: &Report) {
    let acknowledged = acknowledged_ids(report);
    let on_topic = ids_on_topic(&app.topic, acknowledged.len());
    assert_eq!(
        on_topic.len(),
        acknowledged.len(),
        "{} events on the topic, {} acknowledged with 2xx",
        on_topic.len(),
        acknowledged.len()
    );
    assert_eq!(on_topic, acknowledged, "the events on the topic are not those the 2xx answers acknowledged");
    assert_eq!(accepted_metric(app).await, acknowledged.len() as u64, "the accepted counter disagrees");
    println!("{} events acknowledged and on the topic", acknowledged.len());
}

#[tokio::test]
async fn generated_requests_get_documented_answers_and_only_acknowledged_events_reach_the_topic() {
    let app = TestApp::spawn_with(None, None, &SETTINGS).await;
    let report = run("producer", &app).execute().await;
    println!("{}", report.figures());
    report.assert_passed(300);
    check_topic_matches_acknowledgements(&app, &report).await;
    assert!(
        !acknowledged_ids(&report).is_empty(),
        "no generated event was accepted, so publishing was not exercised:\n{}",
        report.stdout
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_api_keys_generated_requests_get_documented_answers_and_none_gets_in_without_the_key() {
    let keys = format!("--api-keys={API_KEY}");
    let mut settings = SETTINGS.to_vec();
    settings.push(&keys);
    let app = TestApp::spawn_with(None, None, &settings).await;
    let report = run("producer-api-keys", &app).header("Authorization", &format!("Bearer {API_KEY}")).execute().await;
    println!("{}", report.figures());
    report.assert_passed(300);
    // The security requirement is optional in the document (keys are a deployment's choice), so
    // ignored_auth does not apply: the same generation without the key must meet 401 on every
    // ingest request, and publish nothing.
    let keyless = Run {
        examples: Some(15),
        ..Run::new("producer-without-key", &app.url).arg("--include-path-regex").arg("^/(ingest/|transactions)")
    }
    .execute()
    .await;
    println!("without the key: {}", keyless.figures());
    keyless.assert_passed(50);
    let posts = keyless.exchanges.iter().filter(|e| e.method == "POST").count();
    assert!(posts >= 50, "only {posts} POST requests without the key");
    // Every request to a documented route and method (ingest and lookup) meets 401; the
    // generator's probes of undocumented methods (POST /transactions/{id}) meet 405 first.
    let answered: Vec<u16> = keyless.exchanges.iter().map(|e| e.status).filter(|s| *s != 405).collect();
    assert!(
        answered.iter().all(|s| *s == 401),
        "without the key, not every ingest or lookup request got 401: {:?}",
        keyless.statuses()
    );
    check_topic_matches_acknowledgements(&app, &report).await;
    app.shutdown().await;
}
