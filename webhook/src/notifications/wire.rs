//! The bodies Grafana and Alertmanager send, as they send them.
//!
//! Only the core is required: `receiver`, `status`, `alerts[]` and, per alert, `status`,
//! `labels` and `startsAt`. Everything else is optional, may be `null`, and fields we do not know
//! are accepted (they stay in the stored raw payload). A field that is present must have its
//! documented type; otherwise the request is answered 422 naming it.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub type Labels = BTreeMap<String, String>;

/// State of a notification or of one alert in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// A Grafana unified-alerting webhook notification (contact point type `webhook`, `version` "1").
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaNotification {
    /// Name of the contact point.
    pub receiver: String,
    /// `firing` while any alert of the group fires, else `resolved`.
    pub status: AlertStatus,
    pub alerts: Vec<GrafanaAlert>,
    /// Payload version; must be "1" when present.
    pub version: Option<String>,
    /// Key of the alert group.
    pub group_key: Option<String>,
    pub title: Option<String>,
    /// `alerting` or `ok`.
    pub state: Option<String>,
    pub message: Option<String>,
    pub org_id: Option<i64>,
    pub truncated_alerts: Option<i64>,
    pub group_labels: Option<Labels>,
    pub common_labels: Option<Labels>,
    pub common_annotations: Option<Labels>,
    #[serde(rename = "externalURL")]
    pub external_url: Option<String>,
}

/// One alert instance in a Grafana notification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaAlert {
    pub status: AlertStatus,
    pub labels: Labels,
    /// Missing or `null` means none.
    pub annotations: Option<Labels>,
    /// RFC 3339. Go's zero time (`0001-01-01T00:00:00Z`) means unknown.
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: DateTime<FixedOffset>,
    /// RFC 3339; the resolution time of a resolved alert. Go's zero time means unset.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<DateTime<FixedOffset>>,
    #[serde(rename = "generatorURL")]
    pub generator_url: Option<String>,
    /// Identity of the alert instance; computed from the labels when missing.
    pub fingerprint: Option<String>,
    #[serde(rename = "silenceURL")]
    pub silence_url: Option<String>,
    #[serde(rename = "dashboardURL")]
    pub dashboard_url: Option<String>,
    #[serde(rename = "panelURL")]
    pub panel_url: Option<String>,
    /// Query results by ref id; may be `null`.
    #[schema(value_type = Option<HashMap<String, f64>>)]
    pub values: Option<serde_json::Map<String, serde_json::Value>>,
    pub value_string: Option<String>,
    pub org_id: Option<i64>,
    #[serde(rename = "ruleUID")]
    pub rule_uid: Option<String>,
    #[serde(rename = "imageURL")]
    pub image_url: Option<String>,
}

/// A Prometheus Alertmanager webhook notification (`webhook_configs`, `version` "4").
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerNotification {
    pub receiver: String,
    pub status: AlertStatus,
    pub alerts: Vec<AlertmanagerAlert>,
    /// Payload version; must be "4" when present.
    pub version: Option<String>,
    pub group_key: Option<String>,
    /// Alerts left out because of `max_alerts` (Alertmanager 0.21+).
    pub truncated_alerts: Option<i64>,
    pub group_labels: Option<Labels>,
    pub common_labels: Option<Labels>,
    pub common_annotations: Option<Labels>,
    #[serde(rename = "externalURL")]
    pub external_url: Option<String>,
    /// Why this notification was sent (Alertmanager 0.32+).
    #[serde(rename = "notification_reason")]
    pub notification_reason: Option<String>,
}

/// One alert in an Alertmanager notification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Option<Labels>,
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: DateTime<FixedOffset>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<DateTime<FixedOffset>>,
    #[serde(rename = "generatorURL")]
    pub generator_url: Option<String>,
    /// Missing before Alertmanager 0.19: then computed from the labels exactly as Alertmanager does.
    pub fingerprint: Option<String>,
}
