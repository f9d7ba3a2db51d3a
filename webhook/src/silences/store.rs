//! The `silences` table and its append-only `silence_events` (migration
//! `20261205000005_silences.sql`, which also defines what "matches" means: `matching_silences`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::NewSilence;
use crate::metrics::{DbMetrics, DbQuery};

/// A silence as stored, with its state now.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct Silence {
    pub id: Uuid,
    pub rule: Option<String>,
    pub dimension: Option<String>,
    pub dimension_value: Option<String>,
    pub merchant_id: Option<String>,
    pub category: Option<String>,
    pub severities: Option<Vec<String>>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expired_at: Option<DateTime<Utc>>,
    pub expired_by: Option<String>,
    /// pending (starts later), active or expired (its window is over, or it was expired).
    pub state: String,
}

const COLUMNS: &str = "id, rule, dimension, dimension_value, merchant_id, category, severities, starts_at, ends_at, \
     comment, created_by, created_at, expired_at, expired_by, \
     CASE WHEN expired_at IS NOT NULL OR now() >= ends_at THEN 'expired' WHEN now() < starts_at THEN 'pending' \
          ELSE 'active' END AS state";

pub async fn create(pool: &PgPool, db: &DbMetrics, s: &NewSilence, actor: &str) -> Result<Silence, sqlx::Error> {
    let mut tx = db.time(DbQuery::SilenceWrite, pool.begin()).await?;
    let id = Uuid::new_v4();
    let silence: Silence = db
        .time(
            DbQuery::SilenceWrite,
            sqlx::query_as(&format!(
                "INSERT INTO silences (id, rule, dimension, dimension_value, merchant_id, category, severities,
                                       starts_at, ends_at, comment, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()), $9, $10, $11)
                 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(&s.rule)
            .bind(&s.dimension)
            .bind(&s.dimension_value)
            .bind(&s.merchant_id)
            .bind(&s.category)
            .bind(&s.severities)
            .bind(s.starts_at)
            .bind(s.ends_at)
            .bind(&s.comment)
            .bind(actor)
            .fetch_one(&mut *tx),
        )
        .await?;
    event(&mut tx, db, &silence, "create", actor).await?;
    db.time(DbQuery::SilenceWrite, tx.commit()).await?;
    Ok(silence)
}

async fn event(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    db: &DbMetrics,
    s: &Silence,
    action: &str,
    actor: &str,
) -> Result<(), sqlx::Error> {
    let json = serde_json::to_value(s).unwrap_or_default();
    db.time(
        DbQuery::SilenceWrite,
        sqlx::query("INSERT INTO silence_events (silence_id, action, actor, silence) VALUES ($1, $2, $3, $4)")
            .bind(s.id)
            .bind(action)
            .bind(actor)
            .bind(json)
            .execute(&mut **tx),
    )
    .await?;
    Ok(())
}

/// Ends the window of a pending or active silence now; `None` when there is no such silence,
/// `Some(Err(s))` when it was already expired.
pub async fn expire(
    pool: &PgPool,
    db: &DbMetrics,
    id: Uuid,
    actor: &str,
) -> Result<Option<Result<Silence, Silence>>, sqlx::Error> {
    let mut tx = db.time(DbQuery::SilenceWrite, pool.begin()).await?;
    let current: Option<Silence> = db
        .time(
            DbQuery::SilenceRead,
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM silences WHERE id = $1 FOR UPDATE"))
                .bind(id)
                .fetch_optional(&mut *tx),
        )
        .await?;
    let Some(current) = current else { return Ok(None) };
    if current.state == "expired" {
        return Ok(Some(Err(current)));
    }
    let expired: Silence = db
        .time(
            DbQuery::SilenceWrite,
            sqlx::query_as(&format!(
                "UPDATE silences SET ends_at = GREATEST(starts_at, LEAST(ends_at, now())), expired_at = now(),
                                     expired_by = $2
                 WHERE id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(actor)
            .fetch_one(&mut *tx),
        )
        .await?;
    event(&mut tx, db, &expired, "expire", actor).await?;
    db.time(DbQuery::SilenceWrite, tx.commit()).await?;
    Ok(Some(Ok(expired)))
}

pub async fn get(pool: &PgPool, db: &DbMetrics, id: Uuid) -> Result<Option<Silence>, sqlx::Error> {
    db.time(
        DbQuery::SilenceRead,
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM silences WHERE id = $1")).bind(id).fetch_optional(pool),
    )
    .await
}

/// Silences in any of `states` (all when `None`), newest first, at most `limit`.
pub async fn list(
    pool: &PgPool,
    db: &DbMetrics,
    states: Option<&[String]>,
    limit: i64,
) -> Result<Vec<Silence>, sqlx::Error> {
    db.time(
        DbQuery::SilenceRead,
        sqlx::query_as(&format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM silences) s
             WHERE $1::text[] IS NULL OR state = ANY($1)
             ORDER BY created_at DESC, id LIMIT $2"
        ))
        .bind(states)
        .bind(limit)
        .fetch_all(pool),
    )
    .await
}

/// Whether a silence matches an anomaly with these values (the forwarder asks before pushing).
#[allow(clippy::too_many_arguments)]
pub async fn is_silenced(
    pool: &PgPool,
    db: &DbMetrics,
    rule: &str,
    dimension: &str,
    dimension_value: &str,
    merchant_id: Option<&str>,
    category: Option<&str>,
    severity: &str,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    db.time(
        DbQuery::SilenceMatch,
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM matching_silences($1, $2, $3, $4, $5, $6, $7))")
            .bind(rule)
            .bind(dimension)
            .bind(dimension_value)
            .bind(merchant_id)
            .bind(category)
            .bind(severity)
            .bind(at)
            .fetch_one(pool),
    )
    .await
}
