//! The webhook service's own metrics (`vigil_webhook_*`); HTTP request counts and latencies by
//! matched route come from `vigil_common::metrics::HttpMetrics`.

use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use vigil_common::metrics::{latency_histogram, Metrics};

/// Every database query the service runs, by name: the `query` label of
/// `vigil_webhook_db_query_duration_seconds`. A fixed set, so the label never carries SQL or
/// anything a client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbQuery {
    /// `GET /alerts`: one page of anomalies.
    AlertsList,
    /// `GET /grafana/alerts`: one page of received alerts.
    GrafanaAlertsList,
    /// Storing a notification, one transaction: BEGIN (including the wait for a pooled
    /// connection), the raw notification, its alert state changes, closing resolved alerts, COMMIT.
    NotificationBegin,
    NotificationInsert,
    ReceivedAlertsInsert,
    ReceivedAlertsClose,
    NotificationCommit,
    /// The outbound forwarder: queueing an anomaly's deliveries, a worker claiming due ones,
    /// releasing a claim, asking when the next is due, and recording an attempt's outcome.
    OutboundInsert,
    OutboundClaim,
    OutboundRelease,
    OutboundNextDue,
    OutboundMarkDelivered,
    OutboundMarkRetry,
    OutboundMarkFailed,
    /// `/ready`: whether every migration is applied.
    ReadyMigrations,
    /// Triage: reading an anomaly's triage and audit trail; applying an action (each statement
    /// of its transaction).
    TriageRead,
    TriageWrite,
    /// The triage queue's gauges (every 30 s).
    TriageQueue,
    /// Silences: reading, creating or expiring one, and the forwarder's "is this one silenced?".
    SilenceRead,
    SilenceWrite,
    SilenceMatch,
    /// Rule settings: listing the published records; recording one (its transaction).
    SettingsRead,
    SettingsWrite,
}

impl DbQuery {
    pub const ALL: [DbQuery; 23] = [
        DbQuery::AlertsList,
        DbQuery::GrafanaAlertsList,
        DbQuery::NotificationBegin,
        DbQuery::NotificationInsert,
        DbQuery::ReceivedAlertsInsert,
        DbQuery::ReceivedAlertsClose,
        DbQuery::NotificationCommit,
        DbQuery::OutboundInsert,
        DbQuery::OutboundClaim,
        DbQuery::OutboundRelease,
        DbQuery::OutboundNextDue,
        DbQuery::OutboundMarkDelivered,
        DbQuery::OutboundMarkRetry,
        DbQuery::OutboundMarkFailed,
        DbQuery::ReadyMigrations,
        DbQuery::TriageRead,
        DbQuery::TriageWrite,
        DbQuery::TriageQueue,
        DbQuery::SilenceRead,
        DbQuery::SilenceWrite,
        DbQuery::SilenceMatch,
        DbQuery::SettingsRead,
        DbQuery::SettingsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DbQuery::AlertsList => "alerts_list",
            DbQuery::GrafanaAlertsList => "grafana_alerts_list",
            DbQuery::NotificationBegin => "notification_begin",
            DbQuery::NotificationInsert => "notification_insert",
            DbQuery::ReceivedAlertsInsert => "received_alerts_insert",
            DbQuery::ReceivedAlertsClose => "received_alerts_close",
            DbQuery::NotificationCommit => "notification_commit",
            DbQuery::OutboundInsert => "outbound_insert",
            DbQuery::OutboundClaim => "outbound_claim",
            DbQuery::OutboundRelease => "outbound_release",
            DbQuery::OutboundNextDue => "outbound_next_due",
            DbQuery::OutboundMarkDelivered => "outbound_mark_delivered",
            DbQuery::OutboundMarkRetry => "outbound_mark_retry",
            DbQuery::OutboundMarkFailed => "outbound_mark_failed",
            DbQuery::ReadyMigrations => "ready_migrations",
            DbQuery::TriageRead => "triage_read",
            DbQuery::TriageWrite => "triage_write",
            DbQuery::TriageQueue => "triage_queue",
            DbQuery::SilenceRead => "silence_read",
            DbQuery::SilenceWrite => "silence_write",
            DbQuery::SilenceMatch => "silence_match",
            DbQuery::SettingsRead => "settings_read",
            DbQuery::SettingsWrite => "settings_write",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// One of [`DbQuery::as_str`].
    pub query: &'static str,
}

/// `vigil_webhook_db_query_duration_seconds{query}`: how long each database query took, failed
/// ones included (from sending it to its answer or error, with any wait for a pooled connection).
#[derive(Clone, Debug)]
pub struct DbMetrics {
    duration: Family<QueryLabels, Histogram>,
}

impl DbMetrics {
    fn new() -> Self {
        let duration = Family::<QueryLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        // Every series exists from the start (count 0), so a rate over a query never run is 0,
        // not absent.
        for q in DbQuery::ALL {
            drop(duration.get_or_create(&QueryLabels { query: q.as_str() }));
        }
        DbMetrics { duration }
    }

    /// Runs `fut` (one query) and records its duration under `query`.
    pub async fn time<T, E>(&self, query: DbQuery, fut: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let started = Instant::now();
        let result = fut.await;
        self.duration.get_or_create(&QueryLabels { query: query.as_str() }).observe(started.elapsed().as_secs_f64());
        result
    }
}

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
    pub db: DbMetrics,
    pub triage_queue: crate::triage::queue::QueueGauges,
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
            db: DbMetrics::new(),
            triage_queue: Default::default(),
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
        m.register(
            "unacknowledged_critical_anomalies",
            "Critical anomalies first seen within TRIAGE_QUEUE_WINDOW whose triage is still open",
            s.triage_queue.unacknowledged.clone(),
        );
        m.register(
            "overdue_critical_anomalies",
            "Unacknowledged critical anomalies older than TRIAGE_ACK_DEADLINE",
            s.triage_queue.overdue.clone(),
        );
        m.register(
            "db_query_duration_seconds",
            "Time of one database query, by query name (see the webhook README for the list)",
            s.db.duration.clone(),
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
