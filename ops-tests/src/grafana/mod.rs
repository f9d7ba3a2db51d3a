//! Grafana's provisioning files (grafana/provisioning, grafana/dashboards) read as data, and
//! Grafana's query pipeline reproduced: macros and variables ([`macros`]), alert expressions
//! ([`expressions`]).

pub mod expressions;
pub mod macros;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::repo;

/// Every provisioned data source, UID -> type.
pub fn datasources() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in repo::files("grafana/provisioning/datasources", ".yaml") {
        let doc = repo::yaml(&f);
        for ds in doc["datasources"].as_sequence().unwrap_or_else(|| panic!("{f}: no datasources list")) {
            let uid = ds["uid"].as_str().unwrap_or_else(|| panic!("{f}: a data source without a fixed uid"));
            let ty = ds["type"].as_str().unwrap_or_else(|| panic!("{f}: data source {uid} without type"));
            assert!(out.insert(uid.to_owned(), ty.to_owned()).is_none(), "{f}: uid {uid} defined twice");
        }
    }
    out
}

/// Where a query sits in a dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Panel,
    Annotation,
    Variable,
}

/// One SQL or PromQL query of a dashboard, with what its result must look like.
#[derive(Debug, Clone)]
pub struct DashboardQuery {
    pub dashboard: String,
    pub place: Place,
    pub panel_id: Option<i64>,
    /// Panel type ("timeseries", "table", ...), or "annotation" / "variable".
    pub panel_type: String,
    pub title: String,
    pub datasource_uid: String,
    /// `time_series` or `table` for SQL; empty for PromQL.
    pub format: String,
    /// rawSql, expr or the variable's query.
    pub text: String,
}

fn ds_uid(v: &Value) -> Option<String> {
    v.get("datasource").and_then(|d| d.get("uid")).and_then(Value::as_str).map(str::to_owned)
}

/// Every query of a dashboard: panel targets (the target's data source, else the panel's),
/// annotation queries and query variables.
pub fn dashboard_queries(file: &str, dash: &Value) -> Vec<DashboardQuery> {
    let title = |v: &Value| v["title"].as_str().or_else(|| v["name"].as_str()).unwrap_or("").to_owned();
    let mut out = Vec::new();
    for panel in all_panels(dash) {
        let panel_ds = ds_uid(panel);
        for t in panel["targets"].as_array().into_iter().flatten() {
            let uid = ds_uid(t).or_else(|| panel_ds.clone()).unwrap_or_default();
            let text = t["rawSql"].as_str().or_else(|| t["expr"].as_str()).unwrap_or("").to_owned();
            out.push(DashboardQuery {
                dashboard: file.to_owned(),
                place: Place::Panel,
                panel_id: panel["id"].as_i64(),
                panel_type: panel["type"].as_str().unwrap_or("").to_owned(),
                title: title(panel),
                datasource_uid: uid,
                format: t["format"]
                    .as_str()
                    .unwrap_or(if t.get("rawSql").is_some() { "time_series" } else { "" })
                    .to_owned(),
                text,
            });
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if a["builtIn"].as_i64() == Some(1) {
            continue;
        }
        let t = &a["target"];
        out.push(DashboardQuery {
            dashboard: file.to_owned(),
            place: Place::Annotation,
            panel_id: None,
            panel_type: "annotation".to_owned(),
            title: title(a),
            datasource_uid: ds_uid(a).or_else(|| ds_uid(t)).unwrap_or_default(),
            format: t["format"].as_str().unwrap_or("table").to_owned(),
            text: t["rawSql"]
                .as_str()
                .or_else(|| t["expr"].as_str())
                .or_else(|| a["expr"].as_str())
                .unwrap_or("")
                .to_owned(),
        });
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"].as_str() != Some("query") {
            continue;
        }
        let text = match &v["query"] {
            Value::String(s) => s.clone(),
            other => other["query"].as_str().or_else(|| other["rawSql"].as_str()).unwrap_or("").to_owned(),
        };
        out.push(DashboardQuery {
            dashboard: file.to_owned(),
            place: Place::Variable,
            panel_id: None,
            panel_type: "variable".to_owned(),
            title: title(v),
            datasource_uid: ds_uid(v).unwrap_or_default(),
            format: "table".to_owned(),
            text,
        });
    }
    out
}

/// Panels, including those nested in rows.
pub fn all_panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// The dashboard's query variables as the macro expander needs them, all set to "All".
pub fn variables(dash: &Value) -> Vec<macros::Variable> {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| macros::Variable {
            name: v["name"].as_str().unwrap_or("").to_owned(),
            multi: v["multi"].as_bool().unwrap_or(false),
            include_all: v["includeAll"].as_bool().unwrap_or(false),
            all_value: v["allValue"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
            options: Vec::new(),
            selection: macros::Selection::All,
        })
        .collect()
}

/// An alert rule of grafana/provisioning/alerting.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub file: String,
    pub group: String,
    pub interval: String,
    pub uid: String,
    pub title: String,
    pub condition: String,
    pub data: Vec<AlertQuery>,
    pub for_: String,
    pub no_data_state: String,
    pub exec_err_state: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub dashboard_uid: Option<String>,
    pub panel_id: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct AlertQuery {
    pub ref_id: String,
    pub datasource_uid: String,
    /// Seconds before the evaluation time: the query's range is [now - from, now - to].
    pub from: i64,
    pub to: i64,
    /// The model as JSON (Grafana stores it so).
    pub model: Value,
}

impl AlertQuery {
    pub fn is_expression(&self) -> bool {
        self.datasource_uid == "__expr__" || self.datasource_uid == "-100"
    }

    /// The interval Grafana gives the query (`intervalMs`, default 1 s).
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.model["intervalMs"].as_u64().unwrap_or(1000))
    }
}

fn string_map(v: &serde_yaml::Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().unwrap_or("").to_owned(), v.as_str().unwrap_or("").to_owned()))
        .collect()
}

/// Every alert rule of every provisioning file that has `groups`.
pub fn alert_rules() -> Vec<AlertRule> {
    let mut out = Vec::new();
    for f in repo::files("grafana/provisioning/alerting", ".yaml") {
        let doc = repo::yaml(&f);
        for g in doc["groups"].as_sequence().into_iter().flatten() {
            for r in g["rules"].as_sequence().into_iter().flatten() {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                let data = r["data"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|q| AlertQuery {
                        ref_id: q["refId"].as_str().unwrap_or("").to_owned(),
                        datasource_uid: q["datasourceUid"].as_str().unwrap_or("").to_owned(),
                        from: q["relativeTimeRange"]["from"].as_i64().unwrap_or(0),
                        to: q["relativeTimeRange"]["to"].as_i64().unwrap_or(0),
                        model: serde_json::to_value(&q["model"]).unwrap(),
                    })
                    .collect();
                out.push(AlertRule {
                    file: f.clone(),
                    group: g["name"].as_str().unwrap_or("").to_owned(),
                    interval: g["interval"].as_str().unwrap_or("").to_owned(),
                    uid: s("uid"),
                    title: s("title"),
                    condition: s("condition"),
                    data,
                    for_: s("for"),
                    no_data_state: s("noDataState"),
                    exec_err_state: s("execErrState"),
                    labels: string_map(&r["labels"]),
                    annotations: string_map(&r["annotations"]),
                    dashboard_uid: r["dashboardUid"].as_str().map(str::to_owned),
                    panel_id: r["panelId"].as_i64(),
                });
            }
        }
    }
    out
}
