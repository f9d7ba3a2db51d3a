use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use vigil_common::metrics::{latency_histogram, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// accepted, rejected (the client's fault) or failed (ours or the broker's).
    pub outcome: &'static str,
    /// Why: ok, validation, malformed, unauthorized, rate_limited, overloaded, broker_timeout, broker_error.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// A fixed name per SQL statement, e.g. idempotency_claim (see `idempotency`).
    pub query: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdempotencyLabels {
    /// claimed (the request did the work), replayed, conflict, in_flight, store_unavailable.
    pub outcome: &'static str,
}

/// The producer's own metrics (`vigil_producer_*`).
#[derive(Clone)]
pub struct ProducerMetrics {
    pub events: Family<OutcomeLabels, Counter>,
    pub produce_duration: Histogram,
    pub batch_size: Histogram,
    pub in_flight: Gauge,
    pub db_query_duration: Family<QueryLabels, Histogram>,
    pub idempotency: Family<IdempotencyLabels, Counter>,
}

impl ProducerMetrics {
    pub fn new(m: &Metrics) -> Self {
        let s = ProducerMetrics {
            events: Family::default(),
            produce_duration: latency_histogram(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            in_flight: Gauge::default(),
            db_query_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            idempotency: Family::default(),
        };
        m.register("events", "Transaction events by outcome and reason", s.events.clone());
        m.register(
            "produce_duration_seconds",
            "Time from send to broker acknowledgement (acks=all)",
            s.produce_duration.clone(),
        );
        m.register("batch_items", "Items per batch request", s.batch_size.clone());
        m.register("in_flight_events", "Events sent and awaiting acknowledgement", s.in_flight.clone());
        m.register(
            "db_query_duration_seconds",
            "PostgreSQL query duration, by query (the idempotency store's statements)",
            s.db_query_duration.clone(),
        );
        m.register(
            "idempotency_requests",
            "Requests with an Idempotency-Key, by what the key store decided",
            s.idempotency.clone(),
        );
        s
    }

    pub fn count(&self, outcome: &'static str, reason: &'static str, n: u64) {
        if n > 0 {
            self.events.get_or_create(&OutcomeLabels { outcome, reason }).inc_by(n);
        }
    }
}
