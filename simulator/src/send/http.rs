//! The producer's batch route, `POST /ingest/transactions` (a JSON array).
//!
//! Every item carries its own `transaction_id`, chosen by the generator: it is the item's
//! idempotency key. (The producer's `Idempotency-Key` header derives ids as `<key>#<index>`,
//! which ties an id to the item's position in its request; a retry that re-sends only the
//! refused items would then change their ids. Explicit ids keep them fixed across retries.)

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use vigil_common::Secret;

use super::{backoff, Batch, BatchOutcome, Sending};

#[derive(Clone)]
pub struct HttpTarget {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    endpoint: String,
    api_key: Option<Secret>,
    retries: u32,
}

/// The fate of one item as one response tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemFate {
    Accepted,
    /// Invalid: retrying cannot help.
    Refused(String),
    /// Not accepted this time; retry with the same id.
    Retry,
}

/// What one response means.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Per item, in request order.
    Items(Vec<ItemFate>),
    /// The same for every item.
    All(ItemFate),
    /// No request can succeed (bad key, wrong URL, batches too large): stop the run.
    Fatal(String),
}

#[derive(Deserialize)]
struct BatchBody {
    items: Vec<ItemBody>,
}

#[derive(Deserialize)]
struct ItemBody {
    status: String,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Decides, in one place, what a response from the batch route means for the `n` items sent:
/// accepted, refused for good, to be retried, or a reason to stop.
pub fn verdict(status: u16, body: &[u8], n: usize) -> Verdict {
    if let Ok(b) = serde_json::from_slice::<BatchBody>(body) {
        if b.items.len() == n && matches!(status, 200..=299 | 422 | 503) {
            return Verdict::Items(
                b.items
                    .into_iter()
                    .map(|i| match i.status.as_str() {
                        "accepted" => ItemFate::Accepted,
                        "rejected" => {
                            ItemFate::Refused(i.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
                        }
                        _ => ItemFate::Retry,
                    })
                    .collect(),
            );
        }
    }
    match status {
        200..=299 => Verdict::All(ItemFate::Accepted),
        401 | 403 => Verdict::Fatal(format!(
            "the producer refused the API key (HTTP {status}); set --api-key or PRODUCER_API_KEY: {}",
            snippet(body)
        )),
        404 | 405 => {
            Verdict::Fatal(format!("no batch route there (HTTP {status}); is --producer-url the producer's address?"))
        }
        413 => Verdict::Fatal("the producer finds the batches too large (HTTP 413); lower --batch-size".into()),
        400 | 415 | 422 => {
            Verdict::Fatal(format!("the producer refused a whole batch (HTTP {status}): {}", snippet(body)))
        }
        408 | 425 | 429 | 500..=599 => Verdict::All(ItemFate::Retry),
        _ => Verdict::All(ItemFate::Refused(format!("HTTP {status}: {}", snippet(body)))),
    }
}

impl HttpTarget {
    /// `producer_url` is the producer's base URL (e.g. `http://127.0.0.1:3002`).
    pub fn new(producer_url: &str, api_key: Option<Secret>, retries: u32, timeout: Duration) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(64).build()?;
        let endpoint = format!("{}/ingest/transactions", producer_url.trim_end_matches('/'));
        Ok(HttpTarget { inner: Arc::new(Inner { client, endpoint, api_key, retries }) })
    }

    pub fn start(&self, batch: Batch) -> Sending {
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(batch).await })
    }
}

impl Inner {
    async fn send(&self, batch: Batch) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        let mut pending: Vec<usize> = (0..batch.items.len()).collect();
        let mut retry_after = None;
        for attempt in 0..=self.retries {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                out.retried += pending.len() as u64;
                tokio::time::sleep(backoff(attempt, retry_after.take())).await;
            }
            let body: Vec<_> = pending.iter().map(|i| &batch.items[*i]).collect();
            let mut req = self.client.post(&self.endpoint).json(&body);
            if let Some(k) = &self.api_key {
                req = req.bearer_auth(k.expose());
            }
            let verdict = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    out.response(status.to_string());
                    retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match resp.bytes().await {
                        Ok(bytes) => verdict(status, &bytes, pending.len()),
                        Err(_) => Verdict::All(ItemFate::Retry),
                    }
                }
                Err(e) => {
                    out.response("transport_error");
                    out.problem(format!("request failed: {e}"));
                    Verdict::All(ItemFate::Retry)
                }
            };
            let fates: Vec<ItemFate> = match verdict {
                Verdict::Items(f) => f,
                Verdict::All(f) => vec![f; pending.len()],
                Verdict::Fatal(msg) => {
                    out.fatal = Some(msg);
                    out.unavailable += pending.len() as u64;
                    return out;
                }
            };
            let mut still = Vec::new();
            for (i, fate) in pending.iter().zip(fates) {
                match fate {
                    ItemFate::Accepted => out.accepted += 1,
                    ItemFate::Refused(why) => {
                        out.refused += 1;
                        out.problem(format!("{} refused: {why}", batch.items[*i].transaction_id));
                    }
                    ItemFate::Retry => still.push(*i),
                }
            }
            pending = still;
        }
        if !pending.is_empty() {
            out.unavailable += pending.len() as u64;
            out.problem(format!("{} transactions never accepted after {} retries", pending.len(), self.retries));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_decides_each_item() {
        let body = br#"{"accepted":1,"rejected":1,"unavailable":1,"items":[
            {"index":0,"status":"accepted","transaction_id":"x"},
            {"index":1,"status":"rejected","errors":[{"field":"amount_minor","message":"must not be negative"}]},
            {"index":2,"status":"unavailable"}]}"#;
        let v = verdict(207, body, 3);
        let Verdict::Items(f) = v else { panic!("{v:?}") };
        assert_eq!(f[0], ItemFate::Accepted);
        assert!(matches!(&f[1], ItemFate::Refused(why) if why.contains("amount_minor")));
        assert_eq!(f[2], ItemFate::Retry);
        // 503 with every item unavailable: all retried.
        let body = br#"{"accepted":0,"rejected":0,"unavailable":1,"items":[{"index":0,"status":"unavailable"}]}"#;
        assert_eq!(verdict(503, body, 1), Verdict::Items(vec![ItemFate::Retry]));
    }

    #[test]
    fn whole_request_answers_retry_refuse_or_stop() {
        let problem = br#"{"type":"about:blank","title":"Too many requests"}"#;
        assert_eq!(verdict(429, problem, 3), Verdict::All(ItemFate::Retry));
        assert_eq!(verdict(503, problem, 3), Verdict::All(ItemFate::Retry));
        assert_eq!(verdict(502, b"", 3), Verdict::All(ItemFate::Retry));
        assert_eq!(verdict(202, b"", 3), Verdict::All(ItemFate::Accepted));
        assert!(matches!(verdict(401, problem, 3), Verdict::Fatal(m) if m.contains("API key")));
        assert!(matches!(verdict(413, b"", 3), Verdict::Fatal(m) if m.contains("--batch-size")));
        assert!(matches!(verdict(422, br#"{"errors":[{"field":"items"}]}"#, 3), Verdict::Fatal(_)));
        assert!(matches!(verdict(409, b"conflict", 3), Verdict::All(ItemFate::Refused(_))));
    }

    #[test]
    fn an_item_list_of_the_wrong_length_is_not_trusted_per_item() {
        let body = br#"{"items":[{"index":0,"status":"accepted"}]}"#;
        assert_eq!(verdict(503, body, 2), Verdict::All(ItemFate::Retry));
    }
}
