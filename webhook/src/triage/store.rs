//! The triage tables: the append-only audit trail and the current state it implies, written in
//! one transaction under a row lock (see the migration `20261205000003_triage.sql`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use utoipa::ToSchema;

use super::{Action, Refusal, State, Triage};
use crate::metrics::{DbMetrics, DbQuery};

/// One audit record.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct AuditEvent {
    pub version: i32,
    pub action: String,
    pub actor: String,
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
    pub note: Option<String>,
}

/// Whether an anomaly with this id is stored.
pub async fn anomaly_exists(pool: &PgPool, db: &DbMetrics, id: &str) -> Result<bool, sqlx::Error> {
    db.time(
        DbQuery::TriageRead,
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM anomalies WHERE id = $1)").bind(id).fetch_one(pool),
    )
    .await
}

/// The current triage of `id` (open, version 0, when nothing was done yet).
pub async fn current(pool: &PgPool, db: &DbMetrics, id: &str) -> Result<Triage, sqlx::Error> {
    let row = db.time(DbQuery::TriageRead, select(id).fetch_optional(pool)).await?;
    Ok(row.map(Triage::from).unwrap_or_default())
}

type Row = (i32, String, Option<String>, Option<String>, Option<String>, Option<DateTime<Utc>>, Option<String>);

fn select(id: &str) -> sqlx::query::QueryAs<'_, Postgres, Row, sqlx::postgres::PgArguments> {
    sqlx::query_as(
        "SELECT version, state, assignee, disposition, note, updated_at, updated_by FROM anomaly_triage WHERE anomaly_id = $1",
    )
    .bind(id)
}

impl From<Row> for Triage {
    fn from((version, state, assignee, disposition, note, updated_at, updated_by): Row) -> Self {
        Triage {
            version,
            state: State::parse(&state).unwrap_or(State::Open),
            assignee,
            disposition,
            note,
            updated_at,
            updated_by,
        }
    }
}

/// Applies `action` by `actor`: locks the anomaly's current state, checks `expected` (If-Match)
/// and the transition, appends the audit record and writes the new state, in one transaction.
pub async fn apply(
    pool: &PgPool,
    db: &DbMetrics,
    id: &str,
    actor: &str,
    action: &Action,
    expected: Option<i32>,
) -> Result<Result<Triage, Refusal>, sqlx::Error> {
    let mut tx: Transaction<'_, Postgres> = db.time(DbQuery::TriageWrite, pool.begin()).await?;
    // The first action on an anomaly has no row to lock: take a transaction lock on its id instead.
    db.time(
        DbQuery::TriageWrite,
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('triage:' || $1))").bind(id).execute(&mut *tx),
    )
    .await?;
    let before: Triage =
        db.time(DbQuery::TriageRead, select(id).fetch_optional(&mut *tx)).await?.map(Triage::from).unwrap_or_default();
    if let Some(v) = expected {
        if v != before.version {
            return Ok(Err(Refusal::Stale { current: before.version }));
        }
    }
    let after = match before.apply(action, actor) {
        Ok(a) => a,
        Err(r) => return Ok(Err(r)),
    };
    let now: DateTime<Utc> =
        db.time(DbQuery::TriageWrite, sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx)).await?;
    let after = Triage { updated_at: Some(now), updated_by: Some(actor.to_owned()), ..after };
    db.time(
        DbQuery::TriageWrite,
        sqlx::query(
            "INSERT INTO anomaly_triage_events (anomaly_id, version, action, actor, at, before, after, note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(after.version)
        .bind(action.name())
        .bind(actor)
        .bind(now)
        .bind(before.audit_json())
        .bind(after.audit_json())
        .bind(action.note())
        .execute(&mut *tx),
    )
    .await?;
    db.time(
        DbQuery::TriageWrite,
        sqlx::query(
            "INSERT INTO anomaly_triage (anomaly_id, version, state, assignee, disposition, note, acknowledged_at,
                                         closed_at, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6,
                     CASE WHEN $3 <> 'open' THEN $7::timestamptz END, CASE WHEN $3 = 'closed' THEN $7::timestamptz END,
                     $7, $8)
             ON CONFLICT (anomaly_id) DO UPDATE SET
                 version = EXCLUDED.version, state = EXCLUDED.state, assignee = EXCLUDED.assignee,
                 disposition = EXCLUDED.disposition, note = EXCLUDED.note,
                 acknowledged_at = COALESCE(anomaly_triage.acknowledged_at, EXCLUDED.acknowledged_at),
                 closed_at = EXCLUDED.closed_at, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        )
        .bind(id)
        .bind(after.version)
        .bind(after.state.as_str())
        .bind(&after.assignee)
        .bind(&after.disposition)
        .bind(&after.note)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx),
    )
    .await?;
    db.time(DbQuery::TriageWrite, tx.commit()).await?;
    Ok(Ok(after))
}

/// The audit trail of `id`, oldest first.
pub async fn audit(pool: &PgPool, db: &DbMetrics, id: &str) -> Result<Vec<AuditEvent>, sqlx::Error> {
    db.time(
        DbQuery::TriageRead,
        sqlx::query_as(
            "SELECT version, action, actor, at, before, after, note FROM anomaly_triage_events
             WHERE anomaly_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(pool),
    )
    .await
}
