//! `GET /transactions/{id}`: a transaction, its verdict and the anomalies naming it.
//!
//! * The transaction comes from `transaction_records` (the sink stores every transaction from
//!   the topic, usually within a second of its acknowledgement).
//! * The verdict is the detector's own when one was asked for: this instance's recent answers
//!   first (so a poll after a 202 answers as soon as the detector has), then
//!   `transaction_verdicts` (so any instance finds it). Otherwise it is read from the anomalies
//!   naming the transaction, marked `"source": "anomalies"`.
//! * 202 with Retry-After while this instance is waiting for a verdict it was asked for and
//!   nothing is stored yet; 404 when nothing at all is known of the id.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use vigil_common::openapi::ProblemDoc;
use vigil_common::problem::{FieldError, Problem};

use crate::metrics::{ProducerMetrics, QueryLabels};
use crate::routes::{AppState, VerdictDoc};
use crate::verdicts::Lookup;

/// A stored transaction.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredTransaction {
    pub transaction_id: String,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub auth_code: String,
    pub amount_minor: i64,
    pub currency: String,
    pub category: String,
    pub merchant_id: String,
}

/// An anomaly naming the transaction, as `GET /alerts` lists it (the explaining fields).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NamedAnomaly {
    pub id: String,
    pub rule: String,
    pub dimension: String,
    pub dimension_value: String,
    pub severity: String,
    pub state: String,
    pub observed: f64,
    pub baseline_mean: f64,
    pub baseline_stddev: f64,
    pub baseline_n: i64,
    pub score: f64,
    pub threshold: f64,
    pub message: String,
    pub first_seen: DateTime<Utc>,
}

/// The verdict with where it comes from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LookupVerdict {
    #[serde(flatten)]
    pub verdict: VerdictDoc,
    /// `detector`: the detector's answer to this transaction; `anomalies`: read from the stored
    /// anomalies naming it (no verdict was asked for).
    pub source: &'static str,
}

/// `GET /transactions/{id}`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransactionView {
    pub transaction_id: String,
    /// Null until the sink has stored it.
    pub transaction: Option<StoredTransaction>,
    /// Null while nothing is known yet (a 202 says so instead).
    pub verdict: Option<LookupVerdict>,
    pub anomalies: Vec<NamedAnomaly>,
    /// The reversals of this transaction, oldest first.
    pub reversals: Vec<ReversalLink>,
    /// When this transaction is a reversal: the one it reverses.
    pub reversal_of: Option<ReversalLink>,
}

/// A reversal and the transaction it reverses.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReversalLink {
    pub reversal_id: String,
    pub original_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub occurred_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// A transaction, its verdict and the anomalies naming it.
#[utoipa::path(get, path = "/transactions/{id}", tag = "transactions",
    params(("id" = String, Path, description = "The transaction's id (a UUID).")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The transaction, its verdict and its anomalies", body = TransactionView),
        (status = 202, description = "Asked for and accepted here; the verdict is not there yet: poll again after Retry-After", body = TransactionView),
        (status = 401, description = "Missing or invalid API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No transaction, verdict or anomaly with this id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn get_transaction(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(addr): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    crate::routes::authenticate(&state, &headers, addr)?;
    let id = match uuid::Uuid::parse_str(&id) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => {
            return Err(crate::routes::unprocessable(vec![FieldError {
                field: "id".into(),
                message: "must be a UUID".into(),
            }]))
        }
    };
    let pool = state.idempotency.pool();
    let m = &state.metrics;
    let transaction = timed(m, "transaction_lookup", fetch_transaction(pool, &id)).await.map_err(unavailable)?;
    let anomalies = timed(m, "transaction_anomalies", fetch_anomalies(pool, &id)).await.map_err(unavailable)?;
    let (reversals, reversal_of) =
        timed(m, "transaction_reversals", fetch_reversals(pool, &id)).await.map_err(unavailable)?;
    let local = state.verdicts.lookup(&id);
    let verdict = match &local {
        Lookup::Known(v) => Some(LookupVerdict { verdict: VerdictDoc::from(&**v), source: "detector" }),
        _ => match timed(m, "transaction_verdict", fetch_verdict(pool, &id)).await.map_err(unavailable)? {
            Some(v) => Some(LookupVerdict { verdict: v, source: "detector" }),
            None if transaction.is_some() || !anomalies.is_empty() => {
                Some(LookupVerdict { verdict: from_anomalies(&anomalies), source: "anomalies" })
            }
            None => None,
        },
    };
    let pending = verdict.is_none() && local == Lookup::Pending;
    let view = TransactionView { transaction_id: id, transaction, verdict, anomalies, reversals, reversal_of };
    if pending {
        return Ok((StatusCode::ACCEPTED, [(header::RETRY_AFTER, "1")], Json(view)).into_response());
    }
    if view.transaction.is_none() && view.verdict.is_none() && view.reversal_of.is_none() {
        return Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
            .detail("No transaction, verdict or anomaly with this id (the sink may not have stored it yet)."));
    }
    Ok(Json(view).into_response())
}

fn from_anomalies(list: &[NamedAnomaly]) -> VerdictDoc {
    let severity = list.iter().map(|a| severity_rank(&a.severity)).max().flatten();
    VerdictDoc {
        decision: "counted",
        anomaly: !list.is_empty(),
        severity: severity.map(|(_, s)| s.to_owned()),
        anomaly_ids: list.iter().map(|a| a.id.clone()).collect(),
    }
}

fn severity_rank(s: &str) -> Option<(u8, &'static str)> {
    match s {
        "medium" => Some((1, "medium")),
        "high" => Some((2, "high")),
        "critical" => Some((3, "critical")),
        _ => None,
    }
}

fn unavailable(e: sqlx::Error) -> Problem {
    tracing::warn!(error = %e, "Transaction lookup failed.");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Database unavailable")
        .detail("The lookup could not reach the database; retry later.")
        .retry_after(1)
}

async fn timed<T>(
    metrics: &ProducerMetrics,
    query: &'static str,
    f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let start = Instant::now();
    let r = f.await;
    metrics.db_query_duration.get_or_create(&QueryLabels { query }).observe(start.elapsed().as_secs_f64());
    r
}

async fn fetch_transaction(pool: &PgPool, id: &str) -> Result<Option<StoredTransaction>, sqlx::Error> {
    sqlx::query_as(
        "SELECT transaction_id, occurred_at, received_at, status, auth_code, amount_minor, currency, category,
                merchant_id
         FROM transaction_records WHERE transaction_id = $1 ORDER BY received_at LIMIT 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

async fn fetch_anomalies(pool: &PgPool, id: &str) -> Result<Vec<NamedAnomaly>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, rule, dimension, dimension_value, severity, state, observed, baseline_mean, baseline_stddev,
                baseline_n, score, threshold, message, first_seen
         FROM anomalies WHERE transaction_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

async fn fetch_reversals(pool: &PgPool, id: &str) -> Result<(Vec<ReversalLink>, Option<ReversalLink>), sqlx::Error> {
    let mut rows: Vec<ReversalLink> = sqlx::query_as(
        "SELECT reversal_id, original_id, amount_minor, currency, occurred_at, reason FROM transaction_reversals
         WHERE original_id = $1 OR reversal_id = $1 ORDER BY occurred_at, reversal_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let of = rows.iter().position(|r| r.reversal_id == id).map(|i| rows.remove(i));
    Ok((rows, of))
}

async fn fetch_verdict(pool: &PgPool, id: &str) -> Result<Option<VerdictDoc>, sqlx::Error> {
    let row: Option<(String, bool, Option<String>, Vec<String>)> = sqlx::query_as(
        "SELECT decision, anomaly, severity, anomaly_ids FROM transaction_verdicts WHERE transaction_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(decision, anomaly, severity, anomaly_ids)| VerdictDoc {
        decision: match decision.as_str() {
            "late" => "late",
            "duplicate" => "duplicate",
            "refused" => "refused",
            _ => "counted",
        },
        anomaly,
        severity,
        anomaly_ids,
    }))
}
