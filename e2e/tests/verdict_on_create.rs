//! Verdict on create, through the whole pipeline: a client that asks (`Prefer: wait=N`, or the
//! older clients' `POST /transactions`) gets the detector's own verdict in the answer, equal to
//! what PostgreSQL stores; a verdict that does not come within the wait is answered 202 with a
//! Location, and the poll there answers with it. `GET /transactions/{id}` shows the stored
//! transaction with its verdict and anomalies.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde_json::{json, Value};
use vigil_e2e::Pipeline;

fn body(at: DateTime<Utc>, amount: i64) -> Value {
    json!({
        "occurred_at": at.to_rfc3339(),
        "status": "approved",
        "auth_code": "00",
        "amount_minor": amount,
        "currency": "EUR",
        "category": "food",
        "merchant_id": "m-1",
    })
}

/// The anomaly ids PostgreSQL stores for a transaction, once there are `n`.
async fn stored_ids(p: &Pipeline, id: &str, n: usize) -> Vec<String> {
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM anomalies WHERE transaction_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&p.db.pool)
            .await
            .ok()?;
        (ids.len() >= n).then_some(ids)
    })
    .await
    .unwrap_or_default()
}

fn sorted(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_asks_gets_the_detectors_verdict_equal_to_what_is_stored() {
    let p = Pipeline::start(1).await;
    let url = p.producer.url();
    // A baseline of 160 ordinary amounts (the amount rule judges from 100), not asking.
    let start = Utc::now().duration_trunc(ChronoDuration::minutes(1)).unwrap() - ChronoDuration::minutes(4);
    for i in 0..160 {
        let amount = if i % 2 == 0 { 2_200 } else { 4_000 };
        let r = p
            .http
            .post(format!("{url}/ingest/transaction"))
            .json(&body(start + ChronoDuration::milliseconds(i * 250), amount))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert!(r.headers().get("location").is_none(), "nothing asked, nothing to poll");
    }

    // An ordinary amount, asking: 201 with a clean verdict.
    let r = p
        .http
        .post(format!("{url}/ingest/transaction"))
        .header("Prefer", "wait=10")
        .json(&body(start + ChronoDuration::seconds(45), 3_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["verdict"], json!({"decision": "counted", "anomaly": false, "severity": null, "anomaly_ids": []}));

    // An outlier through the older clients' route (which always asks): 201, anomalous, with the
    // ids and severity PostgreSQL ends up storing.
    let legacy = json!({"amount": 90_000_000, "category": "food", "merchant": "m-1",
                        "transaction_date": (start + ChronoDuration::seconds(50)).to_rfc3339(), "currency": "EUR"});
    let r = p.http.post(format!("{url}/transactions")).json(&legacy).send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    let id = v["transaction_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/transactions/{id}"));
    assert_eq!(v["verdict"]["anomaly"], true, "{v}");
    assert_eq!(v["verdict"]["severity"], "critical", "{v}");
    let ids = sorted(&v["verdict"]["anomaly_ids"]);
    assert!(!ids.is_empty());
    assert_eq!(stored_ids(&p, &id, ids.len()).await, ids, "the verdict names exactly the stored anomalies");
    let severities: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT severity FROM anomalies WHERE transaction_id = $1")
            .bind(&id)
            .fetch_all(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(severities, vec!["critical".to_string()]);

    // The lookup: the stored transaction, the detector's verdict and its anomalies.
    let view: Value = vigil_testkit::eventually(Duration::from_secs(30), || async {
        let r = p.http.get(format!("{url}{location}")).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        (!v["transaction"].is_null()).then_some(v)
    })
    .await
    .expect("the sink stores the transaction");
    assert_eq!(view["transaction"]["amount_minor"], 90_000_000);
    assert_eq!(view["transaction"]["merchant_id"], "m-1");
    assert_eq!(view["verdict"]["source"], "detector");
    assert_eq!(sorted(&view["verdict"]["anomaly_ids"]), ids);
    let named: Vec<String> =
        view["anomalies"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(named, ids);

    // A wait too short for the detector: 202 with a Location; polling it answers the verdict.
    let r = p
        .http
        .post(format!("{url}/ingest/transaction"))
        .header("Prefer", "wait=0.001")
        .json(&body(start + ChronoDuration::seconds(55), 80_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let id = r.json::<Value>().await.unwrap()["transaction_id"].as_str().unwrap().to_owned();
    let polled: Value = vigil_testkit::eventually(Duration::from_secs(30), || async {
        let r = p.http.get(format!("{url}{location}")).send().await.ok()?;
        (r.status() == 200).then_some(())?;
        let v: Value = r.json().await.ok()?;
        (!v["verdict"].is_null()).then_some(v)
    })
    .await
    .expect("the poll answers once the detector has");
    assert_eq!(polled["verdict"]["anomaly"], true, "{polled}");
    let ids = sorted(&polled["verdict"]["anomaly_ids"]);
    assert_eq!(stored_ids(&p, &id, ids.len()).await, ids);

    // Bad input: a malformed wait names Prefer; an id that is not a UUID names id; an unknown id is 404.
    let r = p
        .http
        .post(format!("{url}/ingest/transaction"))
        .header("Prefer", "wait=soon")
        .json(&body(start, 3_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["errors"][0]["field"], "Prefer");
    let r = p.http.get(format!("{url}/transactions/not-a-uuid")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["errors"][0]["field"], "id");
    let r = p.http.get(format!("{url}/transactions/6f1c2a7e-0000-4000-8000-00000000dead")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    p.stop().await;
}
