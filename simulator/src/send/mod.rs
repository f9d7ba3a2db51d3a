//! Where transactions go: the producer's HTTP batch route, the broker, or standard output.
//!
//! Each target takes a [`Batch`] and returns, once every item has its final fate, a
//! [`BatchOutcome`]: items accepted, refused (the producer rejected them as invalid; retrying
//! cannot help) and unavailable (still not accepted after `--retries` retries). A retry re-sends
//! only the items not yet accepted, with the same transaction ids, so the pipeline's
//! deduplication by id makes a retry of an item that was in fact accepted harmless, and the
//! counts can never include an item twice.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::generator::SimTransaction;

pub mod http;
pub mod kafka;
pub mod stdout;

pub use http::HttpTarget;
pub use kafka::KafkaTarget;
pub use stdout::StdoutTarget;

/// Consecutive transactions sent together.
#[derive(Debug, Clone)]
pub struct Batch {
    pub seq: u64,
    pub items: Vec<SimTransaction>,
}

impl Batch {
    pub fn first_ms(&self) -> i64 {
        self.items.first().map_or(0, |t| t.occurred_at)
    }

    pub fn last_ms(&self) -> i64 {
        self.items.last().map_or(0, |t| t.occurred_at)
    }
}

/// The final fate of one batch's items, and what it took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    pub accepted: u64,
    pub refused: u64,
    pub unavailable: u64,
    /// Item re-sends (an item retried twice counts twice).
    pub retried: u64,
    /// Responses by HTTP status code, or by failure kind (`transport_error`, `kafka:<code>`).
    pub responses: BTreeMap<String, u64>,
    /// A few reasons for refusals, for the report.
    pub problems: Vec<String>,
    /// The run cannot go on (e.g. the producer refuses the API key).
    pub fatal: Option<String>,
}

impl BatchOutcome {
    pub fn response(&mut self, key: impl Into<String>) {
        *self.responses.entry(key.into()).or_default() += 1;
    }

    pub fn problem(&mut self, p: impl Into<String>) {
        if self.problems.len() < 5 {
            self.problems.push(p.into());
        }
    }
}

pub type Sending = Pin<Box<dyn Future<Output = BatchOutcome> + Send>>;

/// A destination for batches.
pub enum Target {
    Http(HttpTarget),
    Kafka(KafkaTarget),
    Stdout(StdoutTarget),
}

impl Target {
    /// Starts sending a batch. Whatever must happen in order (enqueueing records on the broker
    /// client) happens before this returns; the future completes when every item has its fate.
    pub fn start(&self, batch: Batch) -> Sending {
        match self {
            Target::Http(t) => t.start(batch),
            Target::Kafka(t) => t.start(batch),
            Target::Stdout(t) => t.start(batch),
        }
    }

    /// Whether batches reach the broker in the order they were started, however many are in
    /// flight (one idempotent producer enqueueing in order; one output stream). HTTP requests in
    /// flight together may be published in any order.
    pub fn preserves_order(&self) -> bool {
        !matches!(self, Target::Http(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Http(_) => "http",
            Target::Kafka(_) => "kafka",
            Target::Stdout(_) => "stdout",
        }
    }

    /// Waits for anything buffered to be delivered (the broker client's queue).
    pub async fn flush(&self) {
        if let Target::Kafka(t) = self {
            t.flush().await;
        }
    }
}

/// Backoff before retry `attempt` (1-based): the server's Retry-After when given (at most
/// 30 s), else 200 ms doubling up to 5 s.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(d) => d.min(Duration::from_secs(30)),
        None => Duration::from_millis(200u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)))
            .min(Duration::from_secs(5)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_millis(200));
        assert_eq!(backoff(2, None), Duration::from_millis(400));
        assert_eq!(backoff(9, None), Duration::from_secs(5));
        assert_eq!(backoff(1, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(backoff(1, Some(Duration::from_secs(600))), Duration::from_secs(30));
    }
}
