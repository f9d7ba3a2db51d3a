//! The triage queue as gauges, for the Prometheus alert on critical anomalies nobody has
//! acknowledged (`VigilCriticalAnomalyUnacknowledged`):
//!
//! * `vigil_webhook_unacknowledged_critical_anomalies`: critical anomalies first seen within
//!   `TRIAGE_QUEUE_WINDOW` (7 days) whose triage is still open (`v_unacknowledged_critical`);
//! * `vigil_webhook_overdue_critical_anomalies`: those of them older than `TRIAGE_ACK_DEADLINE`
//!   (15 minutes) — the alert fires while it is above 0.
//!
//! Read from PostgreSQL every 30 s by wall clock (every webhook instance reports the same
//! numbers); a failed read leaves the last values and is logged.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DbMetrics, DbQuery};

/// The two gauges.
#[derive(Clone, Debug, Default)]
pub struct QueueGauges {
    pub unacknowledged: Gauge,
    pub overdue: Gauge,
}

/// Reads the queue once: (unacknowledged, overdue).
pub async fn read(
    pool: &PgPool,
    db: &DbMetrics,
    deadline: Duration,
    window: Duration,
) -> Result<(i64, i64), sqlx::Error> {
    db.time(
        DbQuery::TriageQueue,
        sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE age_seconds > $1)
             FROM v_unacknowledged_critical WHERE first_seen > now() - make_interval(secs => $2)",
        )
        .bind(deadline.as_secs_f64())
        .bind(window.as_secs_f64())
        .fetch_one(pool),
    )
    .await
}

/// Refreshes the gauges every 30 s until `stop`.
pub async fn run(
    pool: PgPool,
    db: DbMetrics,
    gauges: QueueGauges,
    deadline: Duration,
    window: Duration,
    stop: CancellationToken,
) -> crate::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => match read(&pool, &db, deadline, window).await {
                Ok((unacknowledged, overdue)) => {
                    gauges.unacknowledged.set(unacknowledged);
                    gauges.overdue.set(overdue);
                }
                Err(e) => tracing::warn!(error = %e, "Could not read the triage queue; the gauges keep their last values."),
            }
        }
    }
}
