//! One worker per receiver URL: a receiver that is slow or down only delays its own queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vigil_common::Secret;

use super::retry::{decide, parse_retry_after, Attempt, Decision, RetryPolicy};
use super::signature::{self, ANOMALY_ID_HEADER, DELIVERY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::store::{self, Claimed};
use crate::metrics::WebhookMetrics;

/// Deliveries claimed at once.
const BATCH: i64 = 16;
/// Longest sleep with nothing due: picks up rows another replica released or a clock moved.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Pause after a database error before trying again.
const DB_PAUSE: Duration = Duration::from_secs(1);

/// The scheme, host and port of a URL: what logs show (a webhook URL's path often is a secret).
pub fn redacted(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

pub struct Worker {
    pub url: reqwest::Url,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub secret: Secret,
    pub policy: RetryPolicy,
    pub timeout: Duration,
    pub wake: Arc<Notify>,
    pub metrics: WebhookMetrics,
}

/// The text of an error and its causes, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Worker {
    pub async fn run(self, stop: CancellationToken) -> crate::Result<()> {
        let receiver = redacted(&self.url);
        let url = self.url.as_str().to_owned();
        // A claim outlives the attempt it covers, so no other worker takes the row meanwhile.
        let lease = self.timeout + Duration::from_secs(5);
        tracing::info!(%receiver, "Outbound worker started.");
        while !stop.is_cancelled() {
            let claimed = match store::claim_due(&self.pool, &self.metrics.db, &url, BATCH, lease).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%receiver, error = %e, "Failed to read due deliveries; retrying.");
                    pause(&stop, DB_PAUSE).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                let wait = match store::next_due(&self.pool, &self.metrics.db, &url).await {
                    Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(IDLE_POLL),
                    Ok(None) => IDLE_POLL,
                    Err(_) => DB_PAUSE,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
            for d in claimed {
                let id = d.id;
                // Stopping mid-attempt is safe: the row stays pending; releasing the claim lets
                // the next run attempt it at once rather than when the claim lapses.
                tokio::select! {
                    _ = self.deliver(&receiver, d) => {}
                    _ = stop.cancelled() => {
                        if let Err(e) = store::release(&self.pool, &self.metrics.db, id).await {
                            tracing::debug!(%receiver, error = %e, "Failed to release a claim at shutdown.");
                        }
                        break;
                    }
                }
            }
        }
        tracing::info!(%receiver, "Outbound worker stopped.");
        Ok(())
    }

    async fn deliver(&self, receiver: &str, d: Claimed) {
        let body = match serde_json::to_vec(&d.payload) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(id = d.id, error = %e, "Failed to encode a stored payload.");
                return;
            }
        };
        let timestamp = Utc::now().timestamp();
        let started = Instant::now();
        let result = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature::sign(self.secret.expose().as_bytes(), timestamp, &body))
            .header(ANOMALY_ID_HEADER, &d.anomaly_id)
            .header(DELIVERY_ID_HEADER, d.id.to_string())
            .body(body)
            .send()
            .await;
        self.metrics.delivery_duration.observe(started.elapsed().as_secs_f64());
        let (attempt, retry_after) = match result {
            Ok(resp) => {
                // A Retry-After that is not text or does not parse is ignored (decide() uses it only
                // on 429 and 503).
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Utc::now()));
                (Attempt::Status(resp.status().as_u16()), retry_after)
            }
            // without_url: the URL may carry a secret in its path or query.
            Err(e) => (Attempt::Transport(chain(&e.without_url())), None),
        };
        let attempts = u32::try_from(d.attempts).unwrap_or(0).saturating_add(1);
        let age = (Utc::now() - d.created_at).to_std().unwrap_or(Duration::ZERO);
        let jitter = rand::thread_rng().gen::<f64>();
        let (status, error) = match &attempt {
            Attempt::Status(s) => (Some(*s), format!("HTTP {s}")),
            Attempt::Transport(e) => (None, e.clone()),
        };
        let decision = decide(&attempt, attempts, age, retry_after, &self.policy, jitter);
        let recorded = match decision {
            Decision::Delivered => {
                self.metrics.delivery("delivered");
                tracing::info!(receiver, anomaly_id = %d.anomaly_id, attempts, "Delivered an anomaly.");
                store::mark_delivered(&self.pool, &self.metrics.db, d.id, status.unwrap_or(200)).await
            }
            Decision::RetryAfter(after) => {
                self.metrics.delivery("retried");
                tracing::warn!(receiver, anomaly_id = %d.anomaly_id, attempts, error = %error, retry_in = ?after, "Delivery failed; will retry.");
                store::mark_retry(&self.pool, &self.metrics.db, d.id, status, &error, after).await
            }
            Decision::GiveUp => {
                self.metrics.delivery("failed");
                tracing::error!(receiver, anomaly_id = %d.anomaly_id, attempts, error = %error, "Delivery failed for good.");
                store::mark_failed(&self.pool, &self.metrics.db, d.id, status, &error).await
            }
        };
        if let Err(e) = recorded {
            // The claim lapses and the delivery is attempted again: at least once, never lost.
            tracing::warn!(receiver, anomaly_id = %d.anomaly_id, error = %e, "Failed to record a delivery outcome.");
        }
    }
}

/// Sleeps for `d` unless `stop` comes first.
pub async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}
