//! The SQL rule's Rust re-implementation flags exactly the minutes the real `v_tx_anomaly`
//! view flags, on a generated day stored in PostgreSQL as the sink stores it.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use vigil_evaluation::catalogue::{base, DAY0_MS};
use vigil_evaluation::{run, sql_rule};
use vigil_simulator::Scenario;

#[tokio::test]
async fn the_rust_sql_rule_flags_the_same_minutes_as_the_view_on_a_generated_day() {
    let db = vigil_testkit::fresh_database().await;
    // The busy day with spikes of every watched status, strong and weak, at night and at the
    // peak, so the view has minutes to flag and minutes just below its threshold.
    let mut src = base().unwrap().source;
    for (status, start, minutes, rate) in [
        ("denied", "60m", 5, 0.30),
        ("failed", "300m", 10, 0.06),
        ("reversed", "420m", 20, 0.03),
        ("denied", "720m", 60, 0.10),
        ("failed", "800m", 3, 0.20),
        ("denied", "1000m", 10, 0.09),
    ] {
        src += &format!(
            "\n[[incidents]]\nkind = \"rate_spike\"\nstatus = \"{status}\"\nstart = \"{start}\"\nduration = \"{minutes}m\"\ntarget_rate = {rate}\n"
        );
    }
    let scenario = Scenario::from_toml(&src).unwrap();
    let aggregates = run::aggregates(scenario, 7, DAY0_MS);
    assert_eq!(aggregates.len(), 1440);

    // As the sink writes them: every final minute, all four statuses, zeros included.
    let (mut minutes, mut statuses, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for a in &aggregates {
        let t = DateTime::<Utc>::from_timestamp_millis(a.minute_start).unwrap();
        for (status, n) in
            [("approved", a.approved), ("denied", a.denied), ("failed", a.failed), ("reversed", a.reversed)]
        {
            minutes.push(t);
            statuses.push(status.to_owned());
            counts.push(n);
        }
    }
    sqlx::query(
        "INSERT INTO transactions (minute, status, count)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::bigint[])",
    )
    .bind(&minutes)
    .bind(&statuses)
    .bind(&counts)
    .execute(&db.pool)
    .await
    .unwrap();

    let rows: Vec<(DateTime<Utc>, bool, bool, bool)> = sqlx::query_as(
        "SELECT minute, denied_above_normal, failed_above_normal, reversed_above_normal
         FROM v_tx_anomaly ORDER BY minute",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let view: Vec<(i64, [bool; 3])> = rows.into_iter().map(|(m, d, f, r)| (m.timestamp_millis(), [d, f, r])).collect();
    let rust = sql_rule::flags(&aggregates);
    assert_eq!(view.len(), rust.len());
    let differ: Vec<String> = view
        .iter()
        .zip(&rust)
        .filter(|(v, r)| v != r)
        .map(|(v, r)| format!("{}: view {:?}, rust {:?} at {}", v.0, v.1, r.1, r.0))
        .collect();
    assert!(differ.is_empty(), "{} minutes differ: {differ:#?}", differ.len());
    let flagged: [usize; 3] = std::array::from_fn(|k| rust.iter().filter(|(_, f)| f[k]).count());
    assert!(flagged.iter().all(|n| *n > 0), "every status has flagged minutes to compare: {flagged:?}");
    let unflagged_in_incidents = rust.iter().filter(|(_, f)| !f[0]).count();
    assert!(unflagged_in_incidents > 1000, "most minutes are not flagged");
}
