//! schemathesis against the webhook's own `/openapi.json`, through a real socket, on a fresh
//! database: generated and mutated requests (positive and negative), with the write token, must
//! get documented answers (no 5xx; status, content type, headers and body as documented; invalid
//! data refused; the same requests without the token refused), and the rows stored must be
//! exactly those of the notifications answered 2xx.
//!
//! Size and seed: see `vigil_testkit::schemathesis` (`make test` runs the short form,
//! `scripts/fuzz.sh` the long one).

use vigil_testkit::schemathesis::{Run, CHECKS};

use crate::helpers::{spawn_app, TOKEN};

#[tokio::test]
async fn generated_requests_get_documented_answers_and_only_acknowledged_notifications_are_stored() {
    let app = spawn_app().await;
    let report = Run {
        checks: format!("{CHECKS},ignored_auth"),
        ..Run::new("webhook", &app.address).header("Authorization", &format!("Bearer {TOKEN}"))
    }
    .execute()
    .await;
    println!("{}", report.figures());
    report.assert_passed(200);

    let (mut acknowledged, mut stored) = (Vec::new(), 0i64);
    for path in ["/grafana/webhook", "/alertmanager/webhook"] {
        for e in report.successes("POST", path) {
            let body = e.json();
            acknowledged.push(body["notification_id"].as_i64().unwrap());
            stored += body["stored"].as_i64().unwrap();
        }
    }
    acknowledged.sort_unstable();
    let rows: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM alert_notifications ORDER BY id").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(rows, acknowledged, "the stored notifications are not those the 2xx answers acknowledged");
    assert_eq!(app.count("received_alerts").await, stored, "alert rows stored vs `stored` in the 2xx answers");
    let orphans: i64 = sqlx::query_scalar("SELECT count(*) FROM received_alerts WHERE NOT (notification_id = ANY($1))")
        .bind(&acknowledged)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(orphans, 0, "alert rows of a notification that was not acknowledged");
    assert!(!acknowledged.is_empty(), "no generated notification was accepted:\n{}", report.stdout);
    println!("{} notifications acknowledged and stored, {stored} alert rows", acknowledged.len());
    app.stop().await;
}
