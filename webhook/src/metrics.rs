//! The webhook service's own metrics (`vigil_webhook_*`); HTTP request counts and latencies by
//! matched route come from `vigil_common::metrics::HttpMetrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use vigil_common::metrics::{latency_histogram, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceStatusLabels {
    /// grafana or alertmanager.
    pub source: &'static str,
    /// firing or resolved.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: &'static str,
    /// too_large, malformed, invalid.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// grafana, alertmanager or read.
    pub route: &'static str,
    /// See `AuthFailure::reason`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct WebhookMetrics {
    notifications: Family<SourceStatusLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    alerts_stored: Family<SourceStatusLabels, Counter>,
    duplicates: Family<SourceLabels, Counter>,
    resolved: Family<SourceLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
    pub store_duration: Histogram,
    anomalies_consumed: Family<OutcomeLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    pub delivery_duration: Histogram,
}

impl WebhookMetrics {
    pub fn new(m: &Metrics) -> Self {
        let s = WebhookMetrics {
            notifications: Family::default(),
            rejected: Family::default(),
            alerts_stored: Family::default(),
            duplicates: Family::default(),
            resolved: Family::default(),
            auth_failures: Family::default(),
            store_duration: latency_histogram(),
            anomalies_consumed: Family::default(),
            deliveries: Family::default(),
            delivery_duration: latency_histogram(),
        };
        m.register(
            "notifications",
            "Notifications accepted, by source and notification status",
            s.notifications.clone(),
        );
        m.register(
            "notifications_rejected",
            "Notifications refused for their body, by source and reason (too_large, malformed, invalid)",
            s.rejected.clone(),
        );
        m.register("alerts_stored", "Alert state changes stored, by source and status", s.alerts_stored.clone());
        m.register(
            "alerts_duplicate",
            "Alert state changes ignored because they were already stored (re-sent notifications)",
            s.duplicates.clone(),
        );
        m.register("alerts_resolved", "Firing alert rows closed by a resolved notification", s.resolved.clone());
        m.register("auth_failures", "Requests refused with 401, by route and reason", s.auth_failures.clone());
        m.register(
            "store_duration_seconds",
            "Time to store one notification (one database transaction)",
            s.store_duration.clone(),
        );
        m.register(
            "anomalies_consumed",
            "Anomaly events read from Kafka, by outcome (queued, already_pushed, filtered, undecodable, refused_future)",
            s.anomalies_consumed.clone(),
        );
        m.register(
            "outbound_deliveries",
            "Outbound delivery attempts, by outcome (delivered, retried, failed)",
            s.deliveries.clone(),
        );
        m.register(
            "outbound_delivery_duration_seconds",
            "Time of one outbound delivery attempt",
            s.delivery_duration.clone(),
        );
        s
    }

    pub fn accepted(&self, source: &'static str, status: &'static str) {
        self.notifications.get_or_create(&SourceStatusLabels { source, status }).inc();
    }

    pub fn rejected(&self, source: &'static str, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { source, reason }).inc();
    }

    pub fn stored(&self, source: &'static str, status: &'static str, n: u64) {
        if n > 0 {
            self.alerts_stored.get_or_create(&SourceStatusLabels { source, status }).inc_by(n);
        }
    }

    pub fn duplicates(&self, source: &'static str, n: u64) {
        if n > 0 {
            self.duplicates.get_or_create(&SourceLabels { source }).inc_by(n);
        }
    }

    pub fn resolved(&self, source: &'static str, n: u64) {
        if n > 0 {
            self.resolved.get_or_create(&SourceLabels { source }).inc_by(n);
        }
    }

    pub fn auth_failure(&self, route: &'static str, reason: &'static str) {
        self.auth_failures.get_or_create(&AuthLabels { route, reason }).inc();
    }

    pub fn consumed(&self, outcome: &'static str) {
        self.anomalies_consumed.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
