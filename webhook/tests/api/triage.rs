//! Triage against the real database: each action, its audit record and the state it derives,
//! the acting user from the token, concurrent updates (none lost, a stale one refused with 412),
//! and `GET /alerts` filtered by triage state and assignee.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{fields, problem, spawn_app_with, TestApp, READ_TOKEN, TOKEN};

const ALICE: &str = "alice-triage-token-0001";
const BOB: &str = "bob-triage-token-000001";

async fn app() -> TestApp {
    spawn_app_with(&[format!("--triage-users=alice:{ALICE},bob:{BOB}")]).await
}

async fn insert_anomaly(pool: &PgPool, id: &str) {
    sqlx::query(
        "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, observed, observed_count,
             observed_total, baseline_mean, baseline_stddev, baseline_n, scored_on, score, threshold, severity,
             state, message, first_seen, last_updated)
         VALUES ($1, 0, 'denied_rate', 'global', 'all', 0.5, 50, 100, 0.1, 0.01, 60, 'rate', 9.5, 4, 'critical',
             'firing', 'Denied rate 50% against a baseline of 10%', now(), now())",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

async fn act(app: &TestApp, id: &str, token: &str, body: Value, if_match: Option<&str>) -> reqwest::Response {
    let mut r = app
        .client
        .post(format!("{}/alerts/{id}/triage", app.address))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(v) = if_match {
        r = r.header("if-match", v);
    }
    r.send().await.unwrap()
}

async fn view(app: &TestApp, id: &str) -> (String, Value) {
    let r = app.get(&format!("/alerts/{id}/triage"), Some(READ_TOKEN)).await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    (etag, r.json().await.unwrap())
}

#[tokio::test]
async fn each_action_is_audited_with_its_user_and_the_state_follows_the_trail() {
    let app = app().await;
    insert_anomaly(&app.db.pool, "a-1").await;
    let (etag, v) = view(&app, "a-1").await;
    assert_eq!((etag.as_str(), v["triage"]["state"].as_str()), ("\"0\"", Some("open")));

    let r = act(&app, "a-1", ALICE, json!({"action": "acknowledge", "note": "looking"}), Some("\"0\"")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let r = act(&app, "a-1", ALICE, json!({"action": "assign", "assignee": "bob"}), Some("\"1\"")).await;
    assert_eq!(r.status(), 200);
    // An integration with a write token names the user itself.
    let r = app
        .client
        .post(format!("{}/alerts/a-1/triage", app.address))
        .bearer_auth(TOKEN)
        .header("x-vigil-user", "pager-bot")
        .json(&json!({"action": "close", "disposition": "true_positive", "note": "issuer outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        (t["state"].as_str(), t["disposition"].as_str(), t["version"].as_i64()),
        (Some("closed"), Some("true_positive"), Some(3))
    );
    // Closed: acknowledging again is a 409 naming the state; re-opening is allowed.
    let p = problem(act(&app, "a-1", BOB, json!({"action": "acknowledge"}), None).await, 409).await;
    assert!(p["detail"].as_str().unwrap().contains("closed"), "{p}");
    assert_eq!(act(&app, "a-1", BOB, json!({"action": "reopen", "note": "again"}), None).await.status(), 200);

    let (etag, v) = view(&app, "a-1").await;
    assert_eq!(etag, "\"4\"");
    let audit = v["audit"].as_array().unwrap();
    let trail: Vec<(i64, &str, &str)> = audit
        .iter()
        .map(|e| (e["version"].as_i64().unwrap(), e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        trail,
        vec![(1, "acknowledge", "alice"), (2, "assign", "alice"), (3, "close", "pager-bot"), (4, "reopen", "bob")]
    );
    assert_eq!(audit[2]["before"]["state"], "acknowledged");
    assert_eq!(audit[2]["after"]["state"], "closed");
    assert_eq!(audit[2]["note"], "issuer outage");
    // Each record's `before` is the previous one's `after`: the current state is the trail's end.
    for w in audit.windows(2) {
        assert_eq!(w[0]["after"], w[1]["before"]);
    }
    assert_eq!(audit.last().unwrap()["after"]["state"], v["triage"]["state"]);
    assert_eq!(v["triage"]["assignee"], "bob");
    assert_eq!(v["triage"]["updated_by"], "bob");

    // The trail is append-only, whoever asks the database.
    let refused = sqlx::query("UPDATE anomaly_triage_events SET actor = 'mallory'").execute(&app.db.pool).await;
    assert!(refused.is_err());
    let refused = sqlx::query("DELETE FROM anomaly_triage_events").execute(&app.db.pool).await;
    assert!(refused.is_err());
    app.stop().await;
}

#[tokio::test]
async fn concurrent_updates_lose_nothing_and_a_stale_one_gets_412() {
    let app = app().await;
    insert_anomaly(&app.db.pool, "a-2").await;
    // Twenty assignments at once, without If-Match: all applied, one after another.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, address) = (app.client.clone(), app.address.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{address}/alerts/a-2/triage"))
                .bearer_auth(ALICE)
                .json(&json!({"action": "assign", "assignee": format!("user-{i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (etag, v) = view(&app, "a-2").await;
    assert_eq!(etag, "\"20\"");
    let versions: Vec<i64> = v["audit"].as_array().unwrap().iter().map(|e| e["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());

    // Two people decide on version 20: the first wins, the second gets 412 and nothing changes.
    let first = act(&app, "a-2", ALICE, json!({"action": "close", "disposition": "benign"}), Some("\"20\"")).await;
    assert_eq!(first.status(), 200);
    let p = problem(act(&app, "a-2", BOB, json!({"action": "acknowledge"}), Some("\"20\"")).await, 412).await;
    assert!(p["detail"].as_str().unwrap().contains("\"21\""), "{p}");
    assert_eq!(view(&app, "a-2").await.1["triage"]["state"], "closed");
    app.stop().await;
}

#[tokio::test]
async fn who_may_act_and_bad_actions_are_refused_naming_the_field() {
    let app = app().await;
    insert_anomaly(&app.db.pool, "a-3").await;
    // A read token cannot act; no token, no action.
    assert_eq!(act(&app, "a-3", READ_TOKEN, json!({"action": "acknowledge"}), None).await.status(), 401);
    assert_eq!(act(&app, "a-3", "not-a-token-at-all-000", json!({"action": "acknowledge"}), None).await.status(), 401);
    // A write token without X-Vigil-User: 422 naming it.
    let p = problem(act(&app, "a-3", TOKEN, json!({"action": "acknowledge"}), None).await, 422).await;
    assert_eq!(fields(&p), ["X-Vigil-User"]);
    let p = problem(
        act(&app, "a-3", ALICE, json!({"action": "close", "disposition": "maybe", "extra": 1}), None).await,
        422,
    )
    .await;
    let mut f = fields(&p);
    f.sort();
    assert_eq!(f, ["disposition", "extra"]);
    let p = problem(act(&app, "a-3", ALICE, json!({"action": "acknowledge"}), Some("soon")).await, 422).await;
    assert_eq!(fields(&p), ["If-Match"]);
    assert_eq!(act(&app, "a-404", ALICE, json!({"action": "acknowledge"}), None).await.status(), 404);
    assert_eq!(app.count("anomaly_triage_events").await, 0, "nothing refused is recorded");
    app.stop().await;
}

#[tokio::test]
async fn alerts_filter_by_triage_state_and_assignee() {
    let app = app().await;
    for id in ["f-open", "f-ack", "f-closed"] {
        insert_anomaly(&app.db.pool, id).await;
    }
    assert_eq!(act(&app, "f-ack", ALICE, json!({"action": "acknowledge"}), None).await.status(), 200);
    assert_eq!(act(&app, "f-ack", ALICE, json!({"action": "assign", "assignee": "bob"}), None).await.status(), 200);
    assert_eq!(
        act(&app, "f-closed", BOB, json!({"action": "close", "disposition": "duplicate"}), None).await.status(),
        200
    );
    let ids = |v: Value| -> Vec<String> {
        let mut ids: Vec<String> =
            v["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(app.get_json("/alerts?triage_state=open").await), ["f-open"]);
    assert_eq!(ids(app.get_json("/alerts?triage_state=acknowledged,closed").await), ["f-ack", "f-closed"]);
    assert_eq!(ids(app.get_json("/alerts?assignee=bob").await), ["f-ack"]);
    assert_eq!(ids(app.get_json("/alerts?assignee=bob&triage_state=closed").await), Vec::<String>::new());
    let all = app.get_json("/alerts").await;
    let ack = all["items"].as_array().unwrap().iter().find(|i| i["id"] == "f-ack").unwrap().clone();
    assert_eq!((ack["triage_state"].as_str(), ack["assignee"].as_str()), (Some("acknowledged"), Some("bob")));
    let p = problem(app.get("/alerts?triage_state=snoozed", Some(READ_TOKEN)).await, 422).await;
    assert_eq!(fields(&p), ["triage_state"]);
    app.stop().await;
}

/// An anomaly of `rule` and `severity`, first seen `minutes_ago`.
async fn insert_judged(pool: &PgPool, id: &str, rule: &str, severity: &str, minutes_ago: i32) {
    sqlx::query(
        "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, observed, observed_count,
             observed_total, baseline_mean, baseline_stddev, baseline_n, scored_on, score, threshold, severity,
             state, message, first_seen, last_updated)
         VALUES ($1, 0, $2, 'global', 'all', 0.5, 50, 100, 0.1, 0.01, 60, 'rate', 9.5, 4, $3, 'firing', 'm',
             now() - make_interval(mins => $4), now())",
    )
    .bind(id)
    .bind(rule)
    .bind(severity)
    .bind(minutes_ago)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn precision_and_the_unacknowledged_critical_queue_follow_the_dispositions() {
    let app = app().await;
    let pool = app.db.pool.clone();
    // denied_rate critical: 3 true positives, 1 false positive, 1 duplicate, 1 never looked at.
    for (i, d) in ["true_positive", "true_positive", "true_positive", "false_positive", "duplicate"].iter().enumerate()
    {
        let id = format!("d-{i}");
        insert_judged(&pool, &id, "denied_rate", "critical", 60).await;
        assert_eq!(act(&app, &id, ALICE, json!({"action": "acknowledge"}), None).await.status(), 200);
        assert_eq!(act(&app, &id, ALICE, json!({"action": "close", "disposition": d}), None).await.status(), 200);
    }
    insert_judged(&pool, "d-open-old", "denied_rate", "critical", 30).await;
    insert_judged(&pool, "d-open-new", "denied_rate", "critical", 1).await;
    // volume_drop high: one benign.
    insert_judged(&pool, "v-0", "volume_drop", "high", 5).await;
    assert_eq!(act(&app, "v-0", BOB, json!({"action": "close", "disposition": "benign"}), None).await.status(), 200);

    type Row = (String, String, i64, i64, i64, i64, Option<f64>, Option<f64>, Option<f64>, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT rule, severity, anomalies, closed, true_positives, judged, precision, median_seconds_to_acknowledge,
                median_seconds_to_close, unacknowledged
         FROM v_triage_precision ORDER BY rule, severity",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let d = &rows[0];
    assert_eq!((d.0.as_str(), d.1.as_str(), d.2, d.3, d.4, d.5), ("denied_rate", "critical", 7, 5, 3, 4));
    assert_eq!(d.6, Some(0.75), "3 true positives of 4 judged (the duplicate is not a judgement)");
    // Acknowledged and closed about an hour after first seen.
    for median in [d.7.unwrap(), d.8.unwrap()] {
        assert!((3590.0..3700.0).contains(&median), "{median}");
    }
    assert_eq!(d.9, 2, "two never acknowledged");
    let v = &rows[1];
    assert_eq!((v.0.as_str(), v.3, v.4, v.5, v.6), ("volume_drop", 1, 0, 1, Some(0.0)));
    assert!((290.0..400.0).contains(&v.7.unwrap()), "closing an open anomaly acknowledges it: {:?}", v.7);

    // The queue's gauges, read at start: two unacknowledged critical, one older than 10 minutes.
    let db = app.stop().await;
    let app = crate::helpers::spawn_app_on(db, &["--triage-ack-deadline=10m".to_owned()]).await;
    let metrics = vigil_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let text = app.get("/metrics", None).await.text().await.ok()?;
        (vigil_testkit::metric_sum(&text, "vigil_webhook_unacknowledged_critical_anomalies", &[]) == 2.0)
            .then_some(text)
    })
    .await
    .expect("the queue gauge reads 2");
    assert_eq!(vigil_testkit::metric_sum(&metrics, "vigil_webhook_overdue_critical_anomalies", &[]), 1.0);
    app.stop().await;
}
