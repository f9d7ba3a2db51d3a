//! Prometheus metrics with one naming convention: `vigil_<subsystem>_<name>_<unit>`, `_total`
//! for counters, seconds for durations, labels from a small fixed set.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The process-wide registry of one service, shared by its parts.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    subsystem: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("subsystem", &self.subsystem).finish()
    }
}

impl Metrics {
    /// A registry whose metrics are named `vigil_<subsystem>_...`.
    pub fn new(subsystem: &'static str) -> Self {
        Metrics { registry: Arc::new(Mutex::new(Registry::with_prefix("vigil"))), subsystem }
    }

    pub fn subsystem(&self) -> &'static str {
        self.subsystem
    }

    /// Registers a metric as `vigil_<subsystem>_<name>`.
    pub fn register<M>(&self, name: &str, help: &str, metric: M)
    where
        M: prometheus_client::registry::Metric,
    {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.sub_registry_with_prefix(self.subsystem).register(name, help, metric);
    }

    /// Renders the OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}

/// Buckets for latencies from 0.5 ms to ~16 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// HTTP request metrics, labelled by the matched route (never the raw path, which would let a
/// client create unbounded series).
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let requests = Family::<HttpLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        metrics.register(
            "http_requests",
            "HTTP requests answered, by method, matched route and status",
            requests.clone(),
        );
        metrics.register(
            "http_request_duration_seconds",
            "HTTP request duration, by method and matched route",
            duration.clone(),
        );
        HttpMetrics { requests, duration }
    }
}

/// Axum middleware recording [`HttpMetrics`]; install with `from_fn_with_state`.
pub async fn track_http(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    m.duration
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(start.elapsed().as_secs_f64());
    m.requests.get_or_create(&HttpLabels { method, route, status }).inc();
    resp
}
