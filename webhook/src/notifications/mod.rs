//! Inbound notifications from Grafana and Alertmanager: their wire shapes (`wire`), the one
//! normalised form both become (`Notification`), the fingerprint of alerts that arrive without
//! one, storage, and the two routes.

pub mod fingerprint;
pub mod routes;
pub mod store;
pub mod wire;

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vigil_common::problem::FieldError;

pub use wire::{AlertStatus, Labels};

/// Who sent a notification (the `source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Grafana,
    Alertmanager,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Grafana => "grafana",
            Source::Alertmanager => "alertmanager",
        }
    }

    /// The `version` this source's payloads carry.
    pub fn version(self) -> &'static str {
        match self {
            Source::Grafana => "1",
            Source::Alertmanager => "4",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grafana" => Some(Source::Grafana),
            "alertmanager" => Some(Source::Alertmanager),
            _ => None,
        }
    }
}

/// A notification in the form both sources share.
#[derive(Debug, Clone)]
pub struct Notification {
    pub source: Source,
    pub receiver: String,
    pub status: AlertStatus,
    pub group_key: Option<String>,
    pub title: Option<String>,
    pub alerts: Vec<AlertInstance>,
}

/// One state of one alert instance.
#[derive(Debug, Clone)]
pub struct AlertInstance {
    pub status: AlertStatus,
    pub fingerprint: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub values: Option<Value>,
    pub value_string: Option<String>,
    /// `None` for Go's zero time (the sender did not know).
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
}

impl AlertInstance {
    /// The storage key: source + fingerprint + startsAt + status, so a notification re-sent by
    /// Grafana or retried by Alertmanager is stored once, while each new firing episode (a new
    /// startsAt) and its resolution are stored as their own rows. startsAt is normalised to UTC
    /// with nanoseconds, so two spellings of one instant are one key.
    pub fn dedup_key(&self, source: Source) -> String {
        let starts = match self.starts_at {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Nanos, true),
            None => "unknown".to_owned(),
        };
        format!("{}:{}:{}:{}", source.as_str(), self.fingerprint, starts, self.status.as_str())
    }

    pub fn alertname(&self) -> Option<&str> {
        self.labels.get("alertname").map(String::as_str)
    }

    pub fn severity(&self) -> Option<&str> {
        self.labels.get("severity").map(String::as_str)
    }
}

/// Go's zero time (`0001-01-01T00:00:00Z`) and anything before year 2 mean "not set".
fn known_time(t: DateTime<FixedOffset>) -> Option<DateTime<Utc>> {
    let utc = t.with_timezone(&Utc);
    (utc.year() > 1).then_some(utc)
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn fingerprint_or_computed(given: Option<String>, labels: &Labels) -> String {
    match given.map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()) {
        Some(f) => f,
        None => fingerprint::fingerprint(labels),
    }
}

/// Deserialises with the path of the first offending field, answered as a [`FieldError`].
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let field = match message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            Some(name) if path == "." => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None if path == "." => "body".to_owned(),
            None => path,
        };
        let message = if field.ends_with("startsAt") || field.ends_with("endsAt") {
            format!("must be an RFC 3339 timestamp ({message})")
        } else if field == "body" {
            format!("must be a JSON object with receiver, status and alerts ({message})")
        } else {
            message
        };
        vec![FieldError { field, message }]
    })
}

fn check_version(source: Source, version: Option<&str>) -> Result<(), Vec<FieldError>> {
    match version {
        Some(v) if v != source.version() => Err(vec![FieldError {
            field: "version".into(),
            message: format!("must be {:?} for {} payloads; got {v:?}", source.version(), source.as_str()),
        }]),
        _ => Ok(()),
    }
}

/// The path of the first string or key holding U+0000, in the notation of [`typed`]'s paths
/// (`alerts[0].labels.n`, `.` for the body itself).
fn path_of_nul(value: &Value, path: &str) -> Option<String> {
    let child = |key: &str| if path == "." { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => {
            let base = if path == "." { "" } else { path };
            items.iter().enumerate().find_map(|(i, v)| path_of_nul(v, &format!("{base}[{i}]")))
        }
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(child(&k.replace('\0', "\\u0000")))
            } else {
                path_of_nul(v, &child(k))
            }
        }),
        _ => None,
    }
}

/// Checks the shape of a parsed body and normalises it; every error names its field.
///
/// The whole body is stored, and PostgreSQL's text and jsonb cannot hold U+0000: a NUL in any
/// string or key, known field or not, is refused here rather than failing the insert.
pub fn parse(source: Source, value: &Value) -> Result<Notification, Vec<FieldError>> {
    if let Some(field) = path_of_nul(value, ".") {
        let field = if field == "." { "body".to_owned() } else { field };
        return Err(vec![FieldError {
            field,
            message: "must not contain U+0000 (NUL), which cannot be stored".into(),
        }]);
    }
    match source {
        Source::Grafana => {
            let n: wire::GrafanaNotification = typed(value)?;
            check_version(source, n.version.as_deref())?;
            let alerts = n
                .alerts
                .into_iter()
                .map(|a| AlertInstance {
                    status: a.status,
                    fingerprint: fingerprint_or_computed(a.fingerprint, &a.labels),
                    annotations: a.annotations.unwrap_or_default(),
                    values: a.values.map(Value::Object),
                    value_string: non_empty(a.value_string),
                    starts_at: known_time(a.starts_at),
                    ends_at: a.ends_at.and_then(known_time),
                    generator_url: non_empty(a.generator_url),
                    labels: a.labels,
                })
                .collect();
            Ok(Notification {
                source,
                receiver: n.receiver,
                status: n.status,
                group_key: non_empty(n.group_key),
                title: non_empty(n.title),
                alerts,
            })
        }
        Source::Alertmanager => {
            let n: wire::AlertmanagerNotification = typed(value)?;
            check_version(source, n.version.as_deref())?;
            let alerts = n
                .alerts
                .into_iter()
                .map(|a| AlertInstance {
                    status: a.status,
                    fingerprint: fingerprint_or_computed(a.fingerprint, &a.labels),
                    annotations: a.annotations.unwrap_or_default(),
                    values: None,
                    value_string: None,
                    starts_at: known_time(a.starts_at),
                    ends_at: a.ends_at.and_then(known_time),
                    generator_url: non_empty(a.generator_url),
                    labels: a.labels,
                })
                .collect();
            Ok(Notification {
                source,
                receiver: n.receiver,
                status: n.status,
                group_key: non_empty(n.group_key),
                title: None,
                alerts,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grafana_alert() -> Value {
        json!({
            "status": "firing",
            "labels": {"alertname": "DeniedRateHigh", "severity": "critical"},
            "annotations": {"summary": "Denied rate is high"},
            "startsAt": "2026-11-22T10:00:00.123456789+01:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "0a1b2c3d4e5f6071",
            "values": null
        })
    }

    #[test]
    fn a_grafana_payload_is_normalised() {
        let v =
            json!({"receiver": "vigil", "status": "firing", "version": "1", "alerts": [grafana_alert()], "extra": 1});
        let n = parse(Source::Grafana, &v).unwrap();
        let a = &n.alerts[0];
        assert_eq!(a.fingerprint, "0a1b2c3d4e5f6071");
        assert_eq!(a.starts_at.unwrap().to_rfc3339(), "2026-11-22T09:00:00.123456789+00:00");
        assert_eq!(a.ends_at, None, "Go's zero time means unset");
        assert_eq!(a.values, None);
        assert_eq!(a.alertname(), Some("DeniedRateHigh"));
        assert_eq!(a.dedup_key(Source::Grafana), "grafana:0a1b2c3d4e5f6071:2026-11-22T09:00:00.123456789Z:firing");
    }

    #[test]
    fn one_instant_spelled_two_ways_has_one_dedup_key() {
        let mut a = grafana_alert();
        let v1 = json!({"receiver": "r", "status": "firing", "alerts": [a.clone()]});
        a["startsAt"] = json!("2026-11-22T09:00:00.123456789Z");
        let v2 = json!({"receiver": "r", "status": "firing", "alerts": [a]});
        let k1 = parse(Source::Grafana, &v1).unwrap().alerts[0].dedup_key(Source::Grafana);
        let k2 = parse(Source::Grafana, &v2).unwrap().alerts[0].dedup_key(Source::Grafana);
        assert_eq!(k1, k2);
    }

    #[test]
    fn a_missing_fingerprint_is_computed_from_the_labels() {
        let mut a = grafana_alert();
        a.as_object_mut().unwrap().remove("fingerprint");
        let v = json!({"receiver": "r", "status": "firing", "version": "4", "alerts": [a]});
        let n = parse(Source::Alertmanager, &v).unwrap();
        assert_eq!(n.alerts[0].fingerprint, fingerprint::fingerprint(&n.alerts[0].labels));
    }

    fn field_of(source: Source, v: Value) -> String {
        let errs = parse(source, &v).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].field.clone()
    }

    /// Found by schemathesis: a NUL anywhere in the body reached PostgreSQL, which refused it
    /// ("unsupported Unicode escape sequence"), and the client got 500 instead of 422.
    #[test]
    fn a_nul_anywhere_in_the_body_is_refused_naming_where() {
        let mut a = grafana_alert();
        a["annotations"]["summary"] = json!("a\u{0}b");
        let body = json!({"receiver": "r", "status": "firing", "alerts": [a], "unknown": {"x": ["ok"]}});
        assert_eq!(field_of(Source::Grafana, body), "alerts[0].annotations.summary");
        let body = json!({"receiver": "r", "status": "firing", "alerts": [], "extra": [1, {"deep": "\u{0}"}]});
        assert_eq!(field_of(Source::Alertmanager, body), "extra[1].deep");
        let body = json!({"receiver": "r", "status": "firing", "alerts": [], "\u{0}": 1});
        assert_eq!(field_of(Source::Alertmanager, body), "\\u0000");
    }

    #[test]
    fn a_wrong_shape_names_the_offending_field() {
        let mut a = grafana_alert();
        a["status"] = json!("pending");
        assert_eq!(
            field_of(Source::Grafana, json!({"receiver": "r", "status": "firing", "alerts": [a]})),
            "alerts[0].status"
        );
        let mut a = grafana_alert();
        a.as_object_mut().unwrap().remove("labels");
        assert_eq!(
            field_of(Source::Grafana, json!({"receiver": "r", "status": "firing", "alerts": [grafana_alert(), a]})),
            "alerts[1].labels"
        );
        let mut a = grafana_alert();
        a["startsAt"] = json!("yesterday");
        assert_eq!(
            field_of(Source::Grafana, json!({"receiver": "r", "status": "firing", "alerts": [a]})),
            "alerts[0].startsAt"
        );
        let mut a = grafana_alert();
        a["labels"] = json!({"n": 5});
        assert_eq!(
            field_of(Source::Grafana, json!({"receiver": "r", "status": "firing", "alerts": [a]})),
            "alerts[0].labels.n"
        );
        assert_eq!(field_of(Source::Grafana, json!({"receiver": "r", "status": "firing"})), "alerts");
        assert_eq!(field_of(Source::Grafana, json!([])), "body");
        let mut a = grafana_alert();
        a["labels"]["n\u{0}"] = json!("x");
        assert_eq!(
            field_of(Source::Grafana, json!({"receiver": "r", "status": "firing", "alerts": [a]})),
            "alerts[0].labels.n\\u0000"
        );
        assert_eq!(
            field_of(Source::Alertmanager, json!({"receiver": "r", "status": "firing", "version": "3", "alerts": []})),
            "version"
        );
    }
}
