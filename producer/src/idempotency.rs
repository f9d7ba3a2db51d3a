//! Idempotency keys: one key, one effect, one answer, across retries, restarts and instances.
//!
//! A client that sends `Idempotency-Key` promises that every request carrying that key means the
//! same thing. The store holds that promise in PostgreSQL (table `idempotency_keys`, migration
//! `20261205000010_idempotency_keys.sql`), so every producer instance sees the same keys and a
//! restart forgets none. Each key lives in a **scope** (the producer's routes use
//! [`SCOPE_TRANSACTION`] for `/ingest/transaction` and `/transactions`, [`SCOPE_BATCH`] for
//! `/ingest/transactions`; another operation picks its own, e.g. `"reversal"`); the same key in
//! two scopes is two keys.
//!
//! # The protocol
//!
//! 1. [`IdempotencyStore::claim`]`(scope, key, digest)` with the [`Digest`] of the request's
//!    canonical body returns one of
//!    * [`Claim::Claimed`]: the key is new (or its previous use has expired): this request does
//!      the work. One `INSERT ... ON CONFLICT DO UPDATE ... WHERE` decides, so of any number of
//!      concurrent requests on any number of instances exactly one is `Claimed`.
//!    * [`Claim::Replay`]: the key was used with the same body and answered: give that answer
//!      again ([`StoredResponse`]: status, content type, headers such as `Location`, body), do
//!      nothing.
//!    * [`Claim::Conflict`]: the key was used with another body: refuse (422, naming
//!      `Idempotency-Key`).
//!    * [`Claim::InFlight`]: the key is claimed with the same body by a request still running.
//! 2. The claimant then calls [`IdempotencyStore::complete`]`(scope, key, digest, response)`
//!    with a final answer, which every later request with that key and body gets back; or
//!    [`IdempotencyStore::release`]`(scope, key, digest)` when the answer is not final (5xx, 408,
//!    429, or a response carrying the [`NotFinal`] extension), so a retry does the work again.
//!
//! [`IdempotencyStore::once`] wraps the whole protocol around a handler: it waits out
//! `InFlight` (polling until the other request completes or releases, at most `wait`), runs the
//! handler when `Claimed`, stores or releases its answer by status, releases the claim if the
//! handler is cancelled (request timeout), and maps the outcomes to responses: a replay carries
//! `Idempotent-Replayed: true`, a conflict is 422 problem+json, a request still in flight after
//! `wait` is 409 with `Retry-After`, a database failure 503 with `Retry-After`.
//!
//! # Boundaries
//!
//! * A key is remembered for `window` (`IDEMPOTENCY_WINDOW`, 24 h by default) from its claim:
//!   a row older than that counts as absent (checked in the claim itself) and
//!   [`IdempotencyStore::expire`] deletes such rows (the producer runs it every minute), so the
//!   table holds at most one window of keys.
//! * A claim not completed within `lease` (the producer uses `REQUEST_TIMEOUT`: by then its
//!   request has timed out) is abandoned (its instance died mid-request): a request with the
//!   same body takes it over; one with another body is still a conflict, because the abandoned
//!   request may have had its effect.
//! * Requests without a key never reach the store: the normal path pays nothing.
//! * [`IdempotencyStore::once`] counts its decisions in
//!   `vigil_producer_idempotency_requests_total{outcome}` (claimed, replayed, conflict,
//!   in_flight, store_unavailable).
//! * Every query is timed in `vigil_producer_db_query_duration_seconds{query}`, `query` one of
//!   `idempotency_claim`, `idempotency_read`, `idempotency_complete`, `idempotency_release`,
//!   `idempotency_expire`.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use vigil_common::problem::{FieldError, Problem};

use crate::metrics::{IdempotencyLabels, ProducerMetrics, QueryLabels};

/// Scope of `/ingest/transaction` and `/transactions`: both derive the transaction id from the
/// key alone, so they share the key space (their digests differ by route).
pub const SCOPE_TRANSACTION: &str = "transaction";
/// Scope of `/ingest/transactions`.
pub const SCOPE_BATCH: &str = "batch";
/// Header set on an answer given again from the store.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Largest answer body the store keeps (a batch answer of 100 000 items fits).
const MAX_STORED_BODY: usize = 64 << 20;
/// Rows deleted per statement by [`IdempotencyStore::expire`].
const EXPIRE_BATCH: i64 = 10_000;

/// SHA-256 of what a request means: a kind (e.g. the route) and its canonical body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digest of `kind` and the canonical JSON of `body`: object keys sorted at every depth, no
    /// insignificant whitespace, so key order and formatting do not make two bodies differ.
    pub fn of_json(kind: &str, body: &Value) -> Digest {
        let mut canonical = String::new();
        write_canonical(body, &mut canonical);
        Digest::of_bytes(kind, canonical.as_bytes())
    }

    /// Digest of `kind` and raw bytes.
    pub fn of_bytes(kind: &str, bytes: &[u8]) -> Digest {
        let mut h = Sha256::new();
        h.update(kind.as_bytes());
        h.update([0u8]);
        h.update(bytes);
        Digest(h.finalize().into())
    }
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// An answer as stored, to be given again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    /// Every other header of the answer (e.g. `Location`, `Retry-After`), in order, except the
    /// ones that describe one transfer (`Content-Length`, `Date`, `Transfer-Encoding`,
    /// `Connection`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// The stored answer, marked `Idempotent-Replayed: true`.
    pub fn into_replay(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Body::from(self.body)).into_response();
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                resp.headers_mut().append(n, v);
            }
        }
        if let Ok(ct) = HeaderValue::from_str(&self.content_type) {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        resp.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        resp
    }
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: do the work, then `complete` or `release`.
    Claimed,
    /// Used before with the same body and answered: this is the answer.
    Replay(StoredResponse),
    /// Used before (or in flight) with another body.
    Conflict,
    /// Claimed with the same body by a request that has not answered yet.
    InFlight,
}

/// Put in a response's extensions by a handler whose answer must not be stored although its
/// status looks final (e.g. a 207 whose unavailable items a retry must publish).
#[derive(Debug, Clone, Copy)]
pub struct NotFinal;

/// Whether an answer is final (stored and replayed) or not (released, so a retry runs again):
/// 5xx, 408 and 429 say "try again later", everything else is the request's outcome.
pub fn is_final(status: StatusCode) -> bool {
    !(status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS)
}

/// `body_digest, status, content_type, headers, response` of one key.
type KeyRow = (Vec<u8>, Option<i16>, Option<String>, Option<sqlx::types::Json<Vec<(String, String)>>>, Option<Vec<u8>>);

/// The PostgreSQL-backed store of idempotency keys (cheap to clone).
#[derive(Clone)]
pub struct IdempotencyStore {
    pool: PgPool,
    window: Duration,
    lease: Duration,
    metrics: ProducerMetrics,
}

impl IdempotencyStore {
    /// `window`: how long a key is remembered. `lease`: after how long an uncompleted claim
    /// counts as abandoned.
    pub fn new(pool: PgPool, window: Duration, lease: Duration, metrics: ProducerMetrics) -> Self {
        IdempotencyStore { pool, window, lease, metrics }
    }

    /// The database the keys live in (for `/health`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    fn observe(&self, query: &'static str, start: Instant) {
        self.metrics.db_query_duration.get_or_create(&QueryLabels { query }).observe(start.elapsed().as_secs_f64());
    }

    fn count(&self, outcome: &'static str) {
        self.metrics.idempotency.get_or_create(&IdempotencyLabels { outcome }).inc();
    }

    /// Claims `key` in `scope` for a request whose body has `digest` (see the module doc).
    pub async fn claim(&self, scope: &str, key: &str, digest: &Digest) -> Result<Claim, sqlx::Error> {
        // A row can vanish between the two statements (released, or expired and deleted): then
        // the key is free again and the insert is tried once more.
        for _ in 0..3 {
            let start = Instant::now();
            let claimed: Option<i32> = sqlx::query_scalar(
                "INSERT INTO idempotency_keys AS k (scope, key, body_digest) VALUES ($1, $2, $3)
                 ON CONFLICT (scope, key) DO UPDATE
                 SET body_digest = EXCLUDED.body_digest, created_at = now(), claimed_at = now(),
                     completed_at = NULL, status = NULL, content_type = NULL, headers = NULL, response = NULL
                 WHERE k.created_at < now() - make_interval(secs => $4)
                    OR (k.completed_at IS NULL AND k.body_digest = EXCLUDED.body_digest
                        AND k.claimed_at < now() - make_interval(secs => $5))
                 RETURNING 1",
            )
            .bind(scope)
            .bind(key)
            .bind(&digest.0[..])
            .bind(self.window.as_secs_f64())
            .bind(self.lease.as_secs_f64())
            .fetch_optional(&self.pool)
            .await?;
            self.observe("idempotency_claim", start);
            if claimed.is_some() {
                return Ok(Claim::Claimed);
            }
            let start = Instant::now();
            let row: Option<KeyRow> = sqlx::query_as(
                "SELECT body_digest, status, content_type, headers, response FROM idempotency_keys
                 WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            self.observe("idempotency_read", start);
            let Some((stored_digest, status, content_type, headers, response)) = row else { continue };
            if stored_digest != digest.0 {
                return Ok(Claim::Conflict);
            }
            return Ok(match status {
                Some(status) => Claim::Replay(StoredResponse {
                    status: u16::try_from(status).unwrap_or(500),
                    content_type: content_type.unwrap_or_default(),
                    headers: headers.map(|h| h.0).unwrap_or_default(),
                    body: response.unwrap_or_default(),
                }),
                None => Claim::InFlight,
            });
        }
        Ok(Claim::InFlight)
    }

    /// Stores the final answer of a claimed key. False when the claim was no longer ours
    /// (expired and taken by a request with another body).
    pub async fn complete(
        &self,
        scope: &str,
        key: &str,
        digest: &Digest,
        response: &StoredResponse,
    ) -> Result<bool, sqlx::Error> {
        let start = Instant::now();
        let done = sqlx::query(
            "UPDATE idempotency_keys
             SET completed_at = now(), status = $4, content_type = $5, headers = $6, response = $7
             WHERE scope = $1 AND key = $2 AND body_digest = $3 AND completed_at IS NULL",
        )
        .bind(scope)
        .bind(key)
        .bind(&digest.0[..])
        .bind(i16::try_from(response.status).unwrap_or(500))
        .bind(&response.content_type)
        .bind(sqlx::types::Json(&response.headers))
        .bind(&response.body)
        .execute(&self.pool)
        .await?;
        self.observe("idempotency_complete", start);
        Ok(done.rows_affected() == 1)
    }

    /// Gives up a claim without an answer: the next request with the key does the work.
    pub async fn release(&self, scope: &str, key: &str, digest: &Digest) -> Result<(), sqlx::Error> {
        let start = Instant::now();
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE scope = $1 AND key = $2 AND body_digest = $3 AND completed_at IS NULL",
        )
        .bind(scope)
        .bind(key)
        .bind(&digest.0[..])
        .execute(&self.pool)
        .await?;
        self.observe("idempotency_release", start);
        Ok(())
    }

    /// Deletes every key older than the window, in batches; returns how many.
    pub async fn expire(&self) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let start = Instant::now();
            let n = sqlx::query(
                "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM idempotency_keys
                     WHERE created_at < now() - make_interval(secs => $1) LIMIT $2))",
            )
            .bind(self.window.as_secs_f64())
            .bind(EXPIRE_BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            self.observe("idempotency_expire", start);
            total += n;
            if n < EXPIRE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Runs [`IdempotencyStore::expire`] every `every` until `stop`.
    pub fn spawn_expiry(&self, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => match store.expire().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(deleted = n, "Expired idempotency keys deleted."),
                        Err(e) => tracing::warn!(error = %e, "Failed to delete expired idempotency keys; retrying at the next tick."),
                    },
                    _ = stop.cancelled() => break,
                }
            }
        })
    }

    /// Runs `work` at most once per (scope, key, digest) and answers every request with that
    /// key the same (see the module doc). `wait`: how long to wait for a request with the same
    /// key still in flight before answering 409.
    pub async fn once<F, Fut>(&self, scope: &str, key: &str, digest: Digest, wait: Duration, work: F) -> Response
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Response>,
    {
        let deadline = Instant::now() + wait;
        let claim = loop {
            match self.claim(scope, key, &digest).await {
                Ok(Claim::InFlight) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(c) => break c,
                Err(e) => {
                    self.count("store_unavailable");
                    return store_unavailable(&e);
                }
            }
        };
        match claim {
            Claim::Claimed => self.count("claimed"),
            Claim::Replay(stored) => {
                self.count("replayed");
                return stored.into_replay();
            }
            Claim::Conflict => {
                self.count("conflict");
                return conflict().into_response();
            }
            Claim::InFlight => {
                self.count("in_flight");
                return in_flight().into_response();
            }
        }
        let mut guard =
            ReleaseOnDrop { store: self.clone(), scope: scope.to_owned(), key: key.to_owned(), digest, armed: true };
        let resp = work().await;
        let status = resp.status();
        if !is_final(status) || resp.extensions().get::<NotFinal>().is_some() {
            guard.armed = false;
            if let Err(e) = self.release(scope, key, &digest).await {
                tracing::warn!(error = %e, "Failed to release an idempotency key; it frees itself after the lease.");
            }
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_STORED_BODY).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "Failed to read an answer to store it under its idempotency key.");
                return Problem::internal().into_response();
            }
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let headers = parts
            .headers
            .iter()
            .filter(|(n, _)| {
                ![
                    header::CONTENT_TYPE,
                    header::CONTENT_LENGTH,
                    header::DATE,
                    header::TRANSFER_ENCODING,
                    header::CONNECTION,
                ]
                .contains(n)
            })
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let stored = StoredResponse { status: status.as_u16(), content_type, headers, body: bytes.to_vec() };
        guard.armed = false;
        if let Err(e) = self.complete(scope, key, &digest, &stored).await {
            // The work is done and the client gets its answer; a retry finds the claim in
            // flight until the lease passes, then does the work again with the same body.
            tracing::warn!(error = %e, "Failed to store an answer under its idempotency key.");
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// Releases a claim whose request was cancelled (e.g. by the request timeout) before answering.
struct ReleaseOnDrop {
    store: IdempotencyStore,
    scope: String,
    key: String,
    digest: Digest,
    armed: bool,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, scope, key, digest) = (self.store.clone(), self.scope.clone(), self.key.clone(), self.digest);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release(&scope, &key, &digest).await {
                    tracing::warn!(error = %e, "Failed to release the idempotency key of a cancelled request.");
                }
            });
        }
    }
}

/// 422: the key was used with another body.
pub fn conflict() -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused with another body")
        .detail("This Idempotency-Key was already used with a different request body; use a new key for a new request.")
        .with_errors(vec![FieldError {
            field: "Idempotency-Key".into(),
            message: "already used with a different request body".into(),
        }])
}

/// 409: a request with the same key is still being processed.
pub fn in_flight() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency-key-in-flight",
        "A request with this Idempotency-Key is in progress",
    )
    .detail("Another request with this Idempotency-Key has not been answered yet; retry shortly.")
    .with_errors(vec![FieldError {
        field: "Idempotency-Key".into(),
        message: "a request with this key is in progress".into(),
    }])
    .retry_after(1)
}

fn store_unavailable(e: &sqlx::Error) -> Response {
    tracing::warn!(error = %e, "The idempotency store is unavailable.");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "idempotency-store-unavailable", "Idempotency keys cannot be checked")
        .detail("The database that remembers Idempotency-Keys is unreachable; nothing was published. Retry later with the same key, or send without the key.")
        .retry_after(2)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_digest_ignores_key_order_and_whitespace_but_not_values_or_kind() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(Digest::of_json("ingest", &a), Digest::of_json("ingest", &b));
        assert_ne!(Digest::of_json("ingest", &a), Digest::of_json("legacy", &a));
        assert_ne!(
            Digest::of_json("ingest", &a),
            Digest::of_json("ingest", &json!({"b": 2, "a": {"x": "s", "y": [1, 2]}}))
        );
        assert_ne!(Digest::of_json("ingest", &json!([1, 2])), Digest::of_json("ingest", &json!([2, 1])));
    }

    #[test]
    fn only_final_answers_are_kept() {
        for s in [200, 202, 207, 400, 404, 422] {
            assert!(is_final(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [408, 429, 500, 503] {
            assert!(!is_final(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
