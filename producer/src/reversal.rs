//! `POST /transactions/{id}/reversal`: gives back all or part of an accepted transaction.
//!
//! * `Idempotency-Key` is required and lives in the `reversal` scope of the idempotency store:
//!   the same key and body always get the first answer (also after a restart, from any
//!   instance), the same key with another body is refused (422 naming `Idempotency-Key`).
//! * Refused: an original that is not stored (404, `id`), an original that is itself a
//!   reversal or was sent as `reversed` (422, `id`), an amount above what remains of the
//!   original after its earlier reversals (422, `amount_minor`).
//! * Accepted: a `reversed` transaction (the original's merchant, category, currency and auth
//!   code; its id derived from the original and the key) is published like any other, so it
//!   counts in the reversed rate, and `transaction_reversals` links it to the original. The check
//!   of what remains, the link and the publication happen under an advisory lock on the
//!   original's id, and the link is committed only once the broker acknowledged the reversal:
//!   concurrent reversals of one original never give back more than it was.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use vigil_common::openapi::ProblemDoc;
use vigil_common::problem::{FieldError, Problem};
use vigil_schemas::{Transaction, TransactionStatus};

use crate::idempotency::Digest;
use crate::metrics::QueryLabels;
use crate::routes::{authenticate, unprocessable, AppState};
use crate::validation::{check_idempotency_key, IDEMPOTENCY_NAMESPACE};

/// The idempotency scope of reversals.
pub const SCOPE_REVERSAL: &str = "reversal";
const MAX_REASON: usize = 500;

/// The body of a reversal: every field optional.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReversalRequest)]
#[allow(dead_code)]
pub struct ReversalDoc {
    /// Minor units to give back: 1 to what remains of the original; default all that remains.
    #[schema(minimum = 1, example = 500)]
    amount_minor: Option<i64>,
    /// Why (at most 500 characters), kept with the reversal.
    #[schema(max_length = 500, example = "customer refund")]
    reason: Option<String>,
}

/// An accepted reversal.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReversalAccepted {
    /// The id of the `reversed` transaction published.
    pub transaction_id: String,
    pub original_id: String,
    pub amount_minor: i64,
    pub currency: String,
    /// What remains of the original after this reversal.
    pub remaining_minor: i64,
    pub status: &'static str,
}

/// Reverses all or part of a stored transaction.
#[utoipa::path(post, path = "/transactions/{id}/reversal", tag = "transactions",
    request_body(content = ReversalDoc, content_type = "application/json"),
    params(
        ("id" = String, Path, description = "The original transaction's id (a UUID)."),
        ("Idempotency-Key" = String, Header, description = "Required, 1-255 visible ASCII characters: the same key and body always get the same answer; the same key with another body is refused."),
    ),
    security((), ("api_key" = [])),
    responses(
        (status = 201, description = "The reversal is on the broker, linked to its original", body = ReversalAccepted),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No stored transaction with this id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The same key is still being answered by another request; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Missing Idempotency-Key, a key reused with another body, a reversal of a reversal, or an amount above what remains; `errors` names the field", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the client's rate limit; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The broker or the database did not answer in time: nothing was reversed; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn reverse(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let client = authenticate(&state, &headers, addr)?;
    let original =
        uuid::Uuid::parse_str(&id).map(|u| u.hyphenated().to_string()).map_err(|_| field("id", "must be a UUID"))?;
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => return Err(field("Idempotency-Key", "is required on a reversal")),
        Some(Err(_)) => return Err(field("Idempotency-Key", "must be visible ASCII")),
        Some(Ok(k)) => {
            check_idempotency_key(k).map_err(|e| unprocessable(vec![e]))?;
            k.to_owned()
        }
    };
    let value = crate::routes::read_json_or_empty(&state, &headers, body).await?;
    let (amount, reason) = parse(&value)?;
    crate::routes::rate_limit(&state, &client, 1)?;
    let digest = Digest::of_json(&format!("reversal:{original}"), &value);
    let wait = state.config.produce_timeout + std::time::Duration::from_secs(1);
    let scoped_key = format!("{original}:{key}");
    Ok(state
        .idempotency
        .once(SCOPE_REVERSAL, &scoped_key, digest, wait, || async {
            match reverse_once(&state, &original, &key, amount, reason).await {
                Ok(r) => r,
                Err(p) => p.into_response(),
            }
        })
        .await)
}

fn field(name: &str, message: &str) -> Problem {
    unprocessable(vec![FieldError { field: name.into(), message: message.into() }])
}

fn parse(value: &Value) -> Result<(Option<i64>, Option<String>), Problem> {
    let Some(obj) = value.as_object() else { return Err(field("body", "must be a JSON object")) };
    let mut errors = Vec::new();
    for k in obj.keys() {
        if k != "amount_minor" && k != "reason" {
            errors.push(FieldError { field: k.clone(), message: "unknown field".into() });
        }
    }
    let amount = match obj.get("amount_minor") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(a) if a >= 1 => Some(a),
            _ => {
                errors.push(FieldError { field: "amount_minor".into(), message: "must be a whole number >= 1".into() });
                None
            }
        },
    };
    let reason = match obj.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_REASON && !s.chars().any(char::is_control) => {
            Some(s.clone())
        }
        Some(_) => {
            errors.push(FieldError {
                field: "reason".into(),
                message: format!("must be a string of at most {MAX_REASON} characters without control characters"),
            });
            None
        }
    };
    if errors.is_empty() {
        Ok((amount, reason))
    } else {
        Err(unprocessable(errors))
    }
}

/// The original as stored by the sink, and what is known of its reversals.
#[derive(sqlx::FromRow)]
struct Original {
    occurred_at: DateTime<Utc>,
    status: String,
    auth_code: String,
    amount_minor: i64,
    currency: String,
    category: String,
    merchant_id: String,
}

async fn reverse_once(
    state: &AppState,
    original_id: &str,
    key: &str,
    amount: Option<i64>,
    reason: Option<String>,
) -> Result<Response, Problem> {
    let pool: &PgPool = state.idempotency.pool();
    let timed = |query: &'static str, start: Instant| {
        state.metrics.db_query_duration.get_or_create(&QueryLabels { query }).observe(start.elapsed().as_secs_f64())
    };
    let mut db = pool.begin().await.map_err(unavailable)?;
    let start = Instant::now();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('reversal:' || $1))")
        .bind(original_id)
        .execute(&mut *db)
        .await
        .map_err(unavailable)?;
    timed("reversal_lock", start);
    let start = Instant::now();
    let (is_reversal, reversed): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM transaction_reversals WHERE reversal_id = $1),
                COALESCE((SELECT sum(amount_minor) FROM transaction_reversals WHERE original_id = $1), 0)::bigint",
    )
    .bind(original_id)
    .fetch_one(&mut *db)
    .await
    .map_err(unavailable)?;
    timed("reversal_remaining", start);
    // Before the original is looked up: a reversal just accepted may not be stored yet.
    if is_reversal {
        return Err(field("id", "is a reversal: a reversal cannot be reversed"));
    }
    let start = Instant::now();
    let original: Option<Original> = sqlx::query_as(
        "SELECT occurred_at, status, auth_code, amount_minor, currency, category, merchant_id
         FROM transaction_records WHERE transaction_id = $1 ORDER BY received_at LIMIT 1",
    )
    .bind(original_id)
    .fetch_optional(&mut *db)
    .await
    .map_err(unavailable)?;
    timed("reversal_original", start);
    let Some(original) = original else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "Original not found")
            .detail("No stored transaction with this id: nothing to reverse (a transaction is stored within seconds of its acknowledgement)."));
    };
    if original.status == "reversed" {
        return Err(field("id", "is a reversal: a reversal cannot be reversed"));
    }
    let remaining = original.amount_minor - reversed;
    let amount = amount.unwrap_or(remaining);
    if remaining <= 0 {
        return Err(field("amount_minor", "nothing remains of the original: it is fully reversed"));
    }
    if amount > remaining {
        return Err(field("amount_minor", &format!("is above what remains of the original ({remaining})")));
    }
    let reversal_id =
        uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("reversal:{original_id}:{key}").as_bytes()).to_string();
    let now = Utc::now();
    // Never before the original, so a reversal of a transaction stamped ahead of our clock still
    // comes after it.
    let occurred_at = now.max(original.occurred_at);
    let start = Instant::now();
    sqlx::query(
        "INSERT INTO transaction_reversals (reversal_id, original_id, amount_minor, currency, occurred_at, reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&reversal_id)
    .bind(original_id)
    .bind(amount)
    .bind(&original.currency)
    .bind(occurred_at)
    .bind(&reason)
    .execute(&mut *db)
    .await
    .map_err(unavailable)?;
    timed("reversal_insert", start);
    let tx = Transaction {
        transaction_id: reversal_id.clone(),
        occurred_at: occurred_at.timestamp_millis(),
        status: TransactionStatus::Reversed,
        auth_code: original.auth_code,
        amount_minor: amount,
        currency: original.currency.clone(),
        category: original.category,
        merchant_id: original.merchant_id,
        received_at: now.timestamp_millis(),
    };
    // Held under the lock until the broker acknowledged: a failed publication rolls the link back.
    if let Some(Err(e)) = state.publisher.publish(std::slice::from_ref(&tx)).await.pop() {
        tracing::warn!(error = %e, original = original_id, "A reversal was not acknowledged; nothing reversed.");
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Broker unavailable")
            .detail(
                "The reversal was not acknowledged in time; nothing was reversed. Retry with the same Idempotency-Key.",
            )
            .retry_after(1));
    }
    let start = Instant::now();
    db.commit().await.map_err(unavailable)?;
    timed("reversal_commit", start);
    state.metrics.count("accepted", "reversal", 1);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/transactions/{reversal_id}"))],
        Json(ReversalAccepted {
            transaction_id: reversal_id,
            original_id: original_id.to_owned(),
            amount_minor: amount,
            currency: original.currency,
            remaining_minor: remaining - amount,
            status: "accepted",
        }),
    )
        .into_response())
}

fn unavailable(e: sqlx::Error) -> Problem {
    tracing::warn!(error = %e, "A reversal could not reach the database.");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Database unavailable")
        .detail("Nothing was reversed; retry with the same Idempotency-Key.")
        .retry_after(1)
}
