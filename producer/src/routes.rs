//! HTTP routes. Every error is problem+json; a 2xx means the broker has the event.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Serialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use vigil_common::body::{malformed, parse_json, read_limited, require_media_type};
use vigil_common::openapi::ProblemDoc;
use vigil_common::problem::{FieldError, Problem};
use vigil_common::Secret;
use vigil_schemas::{Transaction, TransactionVerdict};

use crate::idempotency::{Digest, IdempotencyStore, NotFinal, SCOPE_BATCH, SCOPE_TRANSACTION};
use crate::metrics::ProducerMetrics;
use crate::publisher::Publisher;
use crate::validation::{self, check_idempotency_key, id_from_key};
use crate::verdicts::Verdicts;
use crate::{Config, Error};

pub const JSON: &str = "application/json";
pub const NDJSON: &str = "application/x-ndjson";
/// Currency assumed for the older clients' body, which had none.
pub const LEGACY_CURRENCY: &str = "USD";

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub publisher: Publisher,
    pub metrics: ProducerMetrics,
    pub limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    pub idempotency: IdempotencyStore,
    /// Requests waiting for the detector's verdict, and recent verdicts (see `verdicts`).
    pub verdicts: Arc<Verdicts>,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        publisher: Publisher,
        idempotency: IdempotencyStore,
        metrics: ProducerMetrics,
    ) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
            Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
        });
        let verdicts = Verdicts::new(config.instance_id.clone(), config.verdict_cache);
        AppState { config, publisher, metrics, limiter, idempotency, verdicts }
    }
}

/// The detector's verdict on one transaction, exactly as it stored its anomalies.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerdictDoc {
    /// counted, late (counted for an already final minute), duplicate (an id seen before: see
    /// the first one's verdict) or refused (dead-lettered).
    pub decision: &'static str,
    /// True when an anomaly names this transaction.
    pub anomaly: bool,
    /// The highest severity among `anomaly_ids`: medium, high or critical.
    pub severity: Option<String>,
    /// Ids of the anomalies naming this transaction, as in `GET /alerts`.
    pub anomaly_ids: Vec<String>,
}

impl From<&TransactionVerdict> for VerdictDoc {
    fn from(v: &TransactionVerdict) -> Self {
        VerdictDoc {
            decision: v.decision.as_str(),
            anomaly: v.anomaly,
            severity: v.severity.clone(),
            anomaly_ids: v.anomaly_ids.clone(),
        }
    }
}

/// Answer for one accepted event with its verdict.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub transaction_id: String,
    pub status: &'static str,
    pub verdict: VerdictDoc,
}

/// Answer for one accepted event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub transaction_id: String,
    pub status: &'static str,
}

/// The fate of one batch item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemResult {
    pub index: usize,
    /// accepted, rejected (fix the item) or unavailable (retry it later with the same id).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<vigil_common::openapi::FieldErrorDoc>)]
    pub errors: Vec<FieldError>,
}

/// Per-item verdicts of a batch: only items with status `accepted` are on the broker.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub accepted: usize,
    pub rejected: usize,
    pub unavailable: usize,
    pub items: Vec<ItemResult>,
}

/// Who the caller is: its API key when keys are configured, else its IP address.
pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap, addr: SocketAddr) -> Result<String, Problem> {
    if state.config.api_keys.is_empty() {
        return Ok(addr.ip().to_string());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        state.metrics.count("rejected", "unauthorized", 1);
        return Err(Problem::unauthorized("Send Authorization: Bearer <API key>."));
    };
    // Compare against every key in constant time, so timing reveals neither which key nor how
    // much of it matched.
    let mut matched: Option<&Secret> = None;
    for k in &state.config.api_keys {
        if bool::from(k.expose().as_bytes().ct_eq(presented.as_bytes())) {
            matched = Some(k);
        }
    }
    match matched {
        // The limiter key is a short digest of the API key, never the key itself.
        Some(k) => Ok(format!("key:{:016x}", fxhash(k.expose()))),
        None => {
            state.metrics.count("rejected", "unauthorized", 1);
            Err(Problem::unauthorized("The API key is not valid."))
        }
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Takes `n` events from the client's token bucket, or answers 429 with Retry-After.
pub(crate) fn rate_limit(state: &AppState, client: &str, n: usize) -> Result<(), Problem> {
    let Some(limiter) = &state.limiter else { return Ok(()) };
    let Some(n32) = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)) else { return Ok(()) };
    let too_many = |secs: u64, detail: String| {
        state.metrics.count("rejected", "rate_limited", n as u64);
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
            .detail(detail)
            .retry_after(secs)
    };
    match limiter.check_key_n(&client.to_owned(), n32) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Err(too_many(secs.max(1), format!("Rate limit exceeded; retry in {} s.", secs.max(1))))
        }
        Err(_) => Err(too_many(
            1,
            format!("{n} events exceed the burst size {}; send smaller batches.", state.config.rate_limit_burst),
        )),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let s = v.to_str().map_err(|_| {
        unprocessable(vec![FieldError { field: "Idempotency-Key".into(), message: "must be visible ASCII".into() }])
    })?;
    check_idempotency_key(s).map_err(|e| unprocessable(vec![e]))?;
    Ok(Some(s.to_owned()))
}

pub(crate) fn unprocessable(errors: Vec<FieldError>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "The event is invalid").with_errors(errors)
}

fn publish_problem(e: &Error) -> Problem {
    match e {
        Error::Overloaded => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Too many events in flight")
            .detail("The producer is at its in-flight limit; retry shortly with the same ids.")
            .retry_after(1),
        Error::AckTimeout(t) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "broker-unavailable", "The broker did not acknowledge")
                .detail(format!("No acknowledgement within {t:?}; the event is not accepted. Retry with the same id."))
                .retry_after(2)
        }
        Error::Broker(_) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "broker-unavailable", "The broker refused the event")
                .detail("The event is not accepted. Retry with the same id.")
                .retry_after(2)
        }
        Error::Encode(_) => Problem::internal(),
    }
}

fn count_failure(metrics: &ProducerMetrics, e: &Error) {
    let reason = match e {
        Error::Overloaded => "overloaded",
        Error::AckTimeout(_) => "broker_timeout",
        Error::Broker(_) => "broker_error",
        Error::Encode(_) => "encode_error",
    };
    metrics.count("failed", reason, 1);
    if let Error::Encode(err) = e {
        tracing::error!(error = %err, "Failed to encode a validated event.");
    }
}

/// Publishes one validated event: 202 with its id once acknowledged; with a `wait`, asks the
/// detector for its verdict and answers 201 with it, or 202 with a Location to poll when it is
/// not there within the wait.
async fn publish_one(state: &AppState, tx: Transaction, wait: Duration) -> Response {
    if !wait.is_zero() {
        return publish_asking(state, tx, wait).await;
    }
    let result = state.publisher.publish(std::slice::from_ref(&tx)).await.pop();
    match result {
        Some(Ok(())) => {
            state.metrics.count("accepted", "ok", 1);
            (StatusCode::ACCEPTED, Json(Accepted { transaction_id: tx.transaction_id, status: "accepted" }))
                .into_response()
        }
        Some(Err(e)) => {
            count_failure(&state.metrics, &e);
            publish_problem(&e).into_response()
        }
        None => Problem::internal().into_response(),
    }
}

/// The request-reply path (see `verdicts`): subscribe, publish with `vigil.reply-to`, wait.
async fn publish_asking(state: &AppState, tx: Transaction, wait: Duration) -> Response {
    let id = tx.transaction_id.clone();
    let rx = state.verdicts.subscribe(&id);
    if let Err(e) = state.publisher.publish_asking(&tx, state.verdicts.instance()).await {
        state.verdicts.unsubscribe(&id);
        count_failure(&state.metrics, &e);
        return publish_problem(&e).into_response();
    }
    state.metrics.count("accepted", "ok", 1);
    let location = format!("/transactions/{id}");
    match state.verdicts.wait(&id, rx, wait).await {
        Some(v) => (
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(Created { transaction_id: id, status: "accepted", verdict: VerdictDoc::from(&*v) }),
        )
            .into_response(),
        None => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, location), (header::RETRY_AFTER, "1".to_owned())],
            Json(Accepted { transaction_id: id, status: "accepted" }),
        )
            .into_response(),
    }
}

/// How long a request waits for its verdict: `Prefer: wait=N` (RFC 7240, seconds, at most
/// VERDICT_MAX_WAIT), else `default`.
fn verdict_wait(state: &AppState, headers: &HeaderMap, default: Duration) -> Result<Duration, Problem> {
    let mut wait = default;
    for value in headers.get_all("prefer") {
        let bad = || {
            unprocessable(vec![FieldError {
                field: "Prefer".into(),
                message: "wait must be a number of seconds, e.g. Prefer: wait=2".into(),
            }])
        };
        let s = value.to_str().map_err(|_| bad())?;
        for pref in s.split(',') {
            let mut kv = pref.split(';').next().unwrap_or_default().splitn(2, '=');
            if kv.next().map(str::trim).is_some_and(|k| k.eq_ignore_ascii_case("wait")) {
                let secs: f64 =
                    kv.next().map(|v| v.trim().trim_matches('"')).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                if !secs.is_finite() || secs < 0.0 {
                    return Err(bad());
                }
                wait = Duration::from_secs_f64(secs.min(86_400.0));
            }
        }
    }
    Ok(wait.min(state.config.verdict_max_wait))
}

/// Publishes one event, at most once per Idempotency-Key: a key used before with the same body
/// gets the first answer again, with another body 422 (see `idempotency`). Without a key the
/// database is not touched.
async fn publish_keyed(
    state: &AppState,
    key: Option<String>,
    digest: Digest,
    tx: Transaction,
    verdict_wait: Duration,
) -> Response {
    match key {
        None => publish_one(state, tx, verdict_wait).await,
        Some(key) => {
            let wait = state.config.produce_timeout + verdict_wait + Duration::from_secs(1);
            state.idempotency.once(SCOPE_TRANSACTION, &key, digest, wait, || publish_one(state, tx, verdict_wait)).await
        }
    }
}

/// `POST /ingest/transaction`: one event.
#[utoipa::path(post, path = "/ingest/transaction", tag = "ingest",
    request_body(content = crate::openapi::TransactionDoc, content_type = "application/json"),
    params(("Prefer" = Option<String>, Header, description = "`wait=N`: publish, then wait up to N seconds (at most VERDICT_MAX_WAIT) for the detector's verdict and answer 201 with it, or 202 with a Location to poll."), ("Idempotency-Key" = Option<String>, Header, description = "Any 1-255 visible ASCII characters; the same key always yields the same transaction_id. Remembered for IDEMPOTENCY_WINDOW (24 h) by every instance: the same key and body get the first answer again (header Idempotent-Replayed: true) without publishing again; the same key with another body is refused with 422.")),
    security((), ("api_key" = [])),
    responses(
        (status = 201, description = "Acknowledged, and the detector's verdict came within the wait (Location: /transactions/{id})", body = Created),
        (status = 202, description = "Acknowledged by the broker; when a verdict was asked for and did not come within the wait, Location names /transactions/{id} to poll", body = Accepted),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 408, description = "The request took longer than REQUEST_TIMEOUT", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event, or Idempotency-Key reused with another body; `errors` names each field (or `Idempotency-Key`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the client's rate limit; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Not acknowledged in time, overloaded, or (with Idempotency-Key) the key store unreachable: not accepted; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn ingest_one(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let client = authenticate(&state, &headers, addr)?;
    let value = read_json(&state, &headers, body).await?;
    let key = idempotency_key(&headers)?;
    let tx =
        validation::validate(&value, &state.config.rules, Utc::now(), key.as_deref().map(|k| id_from_key(k, None)))
            .map_err(|errs| {
                state.metrics.count("rejected", "validation", 1);
                unprocessable(errs)
            })?;
    rate_limit(&state, &client, 1)?;
    let wait = verdict_wait(&state, &headers, Duration::ZERO)?;
    Ok(publish_keyed(&state, key, Digest::of_json("ingest", &value), tx, wait).await)
}

/// `POST /transactions`: the older clients' body.
#[utoipa::path(post, path = "/transactions", tag = "ingest",
    request_body(content = crate::openapi::LegacyTransactionDoc, content_type = "application/json"),
    params(("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds (at most VERDICT_MAX_WAIT) for the detector's verdict; default VERDICT_WAIT (2 s) on this route."), ("Idempotency-Key" = Option<String>, Header, description = "Any 1-255 visible ASCII characters; the same key always yields the same transaction_id. Remembered for IDEMPOTENCY_WINDOW (24 h) by every instance: the same key and body get the first answer again (header Idempotent-Replayed: true) without publishing again; the same key with another body is refused with 422.")),
    security((), ("api_key" = [])),
    responses(
        (status = 201, description = "Acknowledged, and the detector's verdict came within the wait (Location: /transactions/{id})", body = Created),
        (status = 202, description = "Acknowledged by the broker; when a verdict was asked for and did not come within the wait, Location names /transactions/{id} to poll", body = Accepted),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 408, description = "The request took longer than REQUEST_TIMEOUT", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event, or Idempotency-Key reused with another body; `errors` names each field (or `Idempotency-Key`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the client's rate limit; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Not acknowledged in time, overloaded, or (with Idempotency-Key) the key store unreachable: not accepted; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn ingest_legacy(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let client = authenticate(&state, &headers, addr)?;
    let value = read_json(&state, &headers, body).await?;
    let key = idempotency_key(&headers)?;
    let reject = |errs| {
        state.metrics.count("rejected", "validation", 1);
        unprocessable(validation::legacy_field_names(errs))
    };
    let mapped = validation::from_legacy(&value, LEGACY_CURRENCY).map_err(reject)?;
    let tx =
        validation::validate(&mapped, &state.config.rules, Utc::now(), key.as_deref().map(|k| id_from_key(k, None)))
            .map_err(reject)?;
    rate_limit(&state, &client, 1)?;
    let wait = verdict_wait(&state, &headers, state.config.verdict_wait)?;
    Ok(publish_keyed(&state, key, Digest::of_json("legacy", &value), tx, wait).await)
}

/// `POST /ingest/transactions`: a JSON array or NDJSON; every item gets its own verdict.
#[utoipa::path(post, path = "/ingest/transactions", tag = "ingest",
    request_body(content(
        (Vec<crate::openapi::TransactionDoc> = "application/json"),
        (String = "application/x-ndjson"),
    ), description = "1 to MAX_BATCH_ITEMS events."),
    params(("Idempotency-Key" = Option<String>, Header, description = "Item i gets the id of `<key>#<i>`: a retried batch yields the same ids. Remembered for IDEMPOTENCY_WINDOW (24 h): the same key and batch get the first final answer again (Idempotent-Replayed: true) without publishing; another batch under the key is refused with 422. An answer with unavailable items is not final: its retry publishes them.")),
    security((), ("api_key" = [])),
    responses(
        (status = 202, description = "Every item acknowledged by the broker", body = BatchResult),
        (status = 207, description = "Some items accepted; see each item's status", body = BatchResult),
        (status = 400, description = "Malformed JSON (not an array)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 408, description = "The request took longer than REQUEST_TIMEOUT", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Neither application/json nor application/x-ndjson", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "No item valid (a BatchResult), or too many or no items, or Idempotency-Key reused with another batch (a problem)", content(
            (BatchResult = "application/json"),
            (ProblemDoc = "application/problem+json"),
        )),
        (status = 429, description = "Over the client's rate limit; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "No item acknowledged in time; see Retry-After", body = BatchResult),
    ))]
pub async fn ingest_batch(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let client = authenticate(&state, &headers, addr)?;
    let media = require_media_type(&headers, &[JSON, NDJSON])
        .inspect_err(|_| state.metrics.count("rejected", "media_type", 1))?;
    let bytes = read_limited(body, state.config.max_body_bytes).await?;
    let key = idempotency_key(&headers)?;
    // Each item: a parsed value, or the reason it could not be parsed (NDJSON lines only).
    // With a key, `canonical` is what the key's digest covers: the items, an unparsable NDJSON
    // line by its text.
    let mut canonical: Vec<Value> = Vec::new();
    let items: Vec<Result<Value, String>> = if media == NDJSON {
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("The body is not UTF-8."))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let item = serde_json::from_str(l).map_err(|e: serde_json::Error| e.to_string());
                if key.is_some() {
                    canonical.push(match &item {
                        Ok(v) => Value::clone(v),
                        Err(_) => serde_json::json!({ "unparsable_line": l }),
                    });
                }
                item
            })
            .collect()
    } else {
        match parse_json(&bytes).inspect_err(|_| state.metrics.count("rejected", "malformed", 1))? {
            Value::Array(a) => {
                if key.is_some() {
                    canonical.clone_from(&a);
                }
                a.into_iter().map(Ok).collect()
            }
            _ => {
                return Err(malformed(
                    "A batch is a JSON array of events (or NDJSON with Content-Type application/x-ndjson).",
                ))
            }
        }
    };
    state.metrics.batch_size.observe(items.len() as f64);
    if items.is_empty() || items.len() > state.config.max_batch_items {
        state.metrics.count("rejected", "validation", items.len() as u64);
        return Err(unprocessable(vec![FieldError {
            field: "items".into(),
            message: format!("a batch holds 1 to {} items, this one {}", state.config.max_batch_items, items.len()),
        }]));
    }

    let now = Utc::now();
    let mut results: Vec<ItemResult> = Vec::with_capacity(items.len());
    let mut valid: Vec<(usize, Transaction)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key_id = key.as_deref().map(|k| id_from_key(k, Some(i)));
        let verdict = match item {
            Ok(v) => validation::validate(v, &state.config.rules, now, key_id),
            Err(e) => Err(vec![FieldError { field: String::new(), message: format!("malformed JSON: {e}") }]),
        };
        match verdict {
            Ok(tx) => {
                results.push(ItemResult {
                    index: i,
                    status: "accepted",
                    transaction_id: Some(tx.transaction_id.clone()),
                    errors: vec![],
                });
                valid.push((i, tx));
            }
            Err(errors) => results.push(ItemResult { index: i, status: "rejected", transaction_id: None, errors }),
        }
    }
    let rejected = results.len() - valid.len();
    state.metrics.count("rejected", "validation", rejected as u64);
    rate_limit(&state, &client, valid.len())?;

    match key {
        None => Ok(publish_batch(&state, valid, results, rejected).await),
        Some(key) => {
            let digest = Digest::of_json("batch", &Value::Array(canonical));
            let wait = state.config.produce_timeout + std::time::Duration::from_secs(1);
            Ok(state
                .idempotency
                .once(SCOPE_BATCH, &key, digest, wait, || publish_batch(&state, valid, results, rejected))
                .await)
        }
    }
}

/// Publishes a batch's valid items and answers with every item's fate.
async fn publish_batch(
    state: &AppState,
    valid: Vec<(usize, Transaction)>,
    mut results: Vec<ItemResult>,
    rejected: usize,
) -> Response {
    let txs: Vec<Transaction> = valid.iter().map(|(_, t)| t.clone()).collect();
    let outcomes = if txs.is_empty() { Vec::new() } else { state.publisher.publish(&txs).await };
    let mut unavailable = 0;
    let mut retry_after = None;
    for ((i, _), outcome) in valid.iter().zip(outcomes) {
        if let Err(e) = outcome {
            count_failure(&state.metrics, &e);
            unavailable += 1;
            retry_after = publish_problem(&e).retry_after_secs.or(retry_after);
            results[*i].status = "unavailable";
            results[*i].errors = vec![FieldError { field: String::new(), message: e.to_string() }];
        }
    }
    let accepted = valid.len() - unavailable;
    state.metrics.count("accepted", "ok", accepted as u64);
    let status = if accepted == results.len() {
        StatusCode::ACCEPTED
    } else if accepted > 0 {
        StatusCode::MULTI_STATUS
    } else if unavailable > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut resp = (status, Json(BatchResult { accepted, rejected, unavailable, items: results })).into_response();
    if let Some(secs) = retry_after {
        if let Ok(v) = secs.to_string().parse() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if unavailable > 0 {
        // A 207 with unavailable items is not final: under an Idempotency-Key, a retry must
        // publish them, so the answer is not stored.
        resp.extensions_mut().insert(NotFinal);
    }
    resp
}

/// Like `read_json`, but an empty body (with or without a content type) is `{}`.
pub(crate) async fn read_json_or_empty(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, Problem> {
    let bytes = read_limited(body, state.config.max_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    require_media_type(headers, &[JSON]).inspect_err(|_| state.metrics.count("rejected", "media_type", 1))?;
    parse_json(&bytes).inspect_err(|_| state.metrics.count("rejected", "malformed", 1))
}

async fn read_json(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, Problem> {
    require_media_type(headers, &[JSON]).inspect_err(|_| state.metrics.count("rejected", "media_type", 1))?;
    let bytes = read_limited(body, state.config.max_body_bytes).await?;
    parse_json(&bytes).inspect_err(|_| state.metrics.count("rejected", "malformed", 1))
}
