//! Retention reaches every finished anomaly: a resolved one by its resolution time, and an
//! amount anomaly (complete when emitted: it never resolves) by its transaction's time. Open
//! rate anomalies stay whatever their age. Anomalies written by the real sink from the broker,
//! retention run on the real database.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, AnomalyState, Decoded, Severity};

const DAY: i64 = 86_400_000;

/// An amount anomaly for transaction `tx` at `at` (ms), as the detector emits it: firing, once.
fn amount(rule: AnomalyRule, tx: &str, at: i64) -> Anomaly {
    let mut a = anomaly(0, 0, AnomalyState::Firing);
    a.id = format!("{}:merchant:m-1:{tx}", rule.as_str());
    a.rule = rule;
    a.dimension = AnomalyDimension::Merchant;
    a.dimension_value = "m-1".into();
    a.window_start = None;
    a.window_end = None;
    a.transaction_id = Some(tx.into());
    a.category = Some("food".into());
    a.merchant_id = Some("m-1".into());
    a.scored_on = "ln(1+amount)".into();
    a.p_value = None;
    a.severity = Severity::Medium;
    a.first_seen = at;
    a.last_updated = at;
    a
}

/// A rate anomaly that opened at `at` and, when `resolved_after` is given, resolved that long after.
fn rate(id: &str, at: i64, resolved_after: Option<i64>) -> Vec<Anomaly> {
    let mut firing = anomaly(0, 0, AnomalyState::Firing);
    firing.id = id.into();
    firing.first_seen = at;
    firing.last_updated = at + 60_000;
    let mut out = vec![firing.clone()];
    if let Some(after) = resolved_after {
        let mut r = firing;
        r.sequence = 1;
        r.state = AnomalyState::Resolved;
        r.last_updated = at + after;
        r.resolved_at = Some(at + after);
        out.push(r);
    }
    out
}

async fn ids(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM anomalies ORDER BY id").fetch_all(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_removes_old_amount_anomalies_and_old_resolved_ones_and_keeps_open_and_recent_ones() {
    let topics = Topics::fresh().await;
    let db = vigil_testkit::fresh_database().await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut anomalies = vec![
        amount(AnomalyRule::AmountZscore, "old-z", now - 40 * DAY),
        amount(AnomalyRule::AmountLowVariance, "old-lv", now - 31 * DAY),
        amount(AnomalyRule::AmountZscore, "recent-z", now - 29 * DAY),
        amount(AnomalyRule::AmountZscore, "new-z", now - 60_000),
    ];
    // Opened 40 days ago and still open: kept, as are the ones resolved within the retention.
    anomalies.extend(rate("denied_rate:global:all:open", now - 40 * DAY, None));
    anomalies.extend(rate("denied_rate:global:all:old-resolved", now - 40 * DAY, Some(5 * DAY)));
    anomalies.extend(rate("denied_rate:global:all:recently-resolved", now - 40 * DAY, Some(15 * DAY)));
    let stored = anomalies.iter().map(|a| a.id.clone()).collect::<std::collections::BTreeSet<_>>().len() as i64;
    send(&topics, &anomalies.into_iter().map(Decoded::Anomaly).collect::<Vec<_>>()).await;
    let sink = Sink::start(&topics, &db.url, &vigil_testkit::unique("sink"), &[]).await;
    vigil_testkit::eventually(Duration::from_secs(30), || async {
        let n = count(&db.pool, "SELECT count(*) FROM anomalies").await;
        let resolved = count(&db.pool, "SELECT count(*) FROM anomalies WHERE state = 'resolved'").await;
        (n == stored && resolved == 2).then_some(())
    })
    .await
    .expect("every anomaly stored");
    sink.stop().await;
    // As stored: the amount anomalies firing (they never resolve), one rate anomaly open.
    assert_eq!(count(&db.pool, "SELECT count(*) FROM anomalies WHERE state = 'firing'").await, 5);

    let metrics = vigil_sink::metrics::SinkMetrics::new(&vigil_common::metrics::Metrics::new("sink"));
    let report = vigil_sink::retention::run_once(&db.pool, None, Some(Duration::from_secs(30 * 86_400)), &metrics)
        .await
        .unwrap();
    assert_eq!(report, vec![("anomalies", 3)]);
    assert_eq!(
        ids(&db.pool).await,
        vec![
            "amount_zscore:merchant:m-1:new-z",
            "amount_zscore:merchant:m-1:recent-z",
            "denied_rate:global:all:open",
            "denied_rate:global:all:recently-resolved",
        ]
    );
    // A second run finds nothing more.
    let report = vigil_sink::retention::run_once(&db.pool, None, Some(Duration::from_secs(30 * 86_400)), &metrics)
        .await
        .unwrap();
    assert_eq!(report, vec![("anomalies", 0)]);
}
