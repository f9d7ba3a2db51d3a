//! A query's result as Grafana's PostgreSQL data source sees it: run with the simple query
//! protocol (Grafana's `PgConn().Exec`), so every value arrives as text, with each column's
//! PostgreSQL type; then checked against what a panel type needs, or turned into the series
//! an alert rule reduces.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Column, PgPool, Row, TypeInfo, ValueRef};

/// What Grafana makes of a column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Time,
    Number,
    Text,
    Other,
}

#[derive(Debug, Clone)]
pub struct Col {
    pub name: String,
    pub pg_type: String,
    pub kind: Kind,
}

/// Rows as text (None for NULL).
#[derive(Debug, Clone)]
pub struct Frame {
    pub columns: Vec<Col>,
    pub rows: Vec<Vec<Option<String>>>,
}

fn kind(pg_type: &str) -> Kind {
    match pg_type {
        "TIMESTAMPTZ" | "TIMESTAMP" | "DATE" => Kind::Time,
        "INT2" | "INT4" | "INT8" | "FLOAT4" | "FLOAT8" | "NUMERIC" => Kind::Number,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Kind::Text,
        _ => Kind::Other,
    }
}

/// Runs `sql` as Grafana does and returns its (last) result set.
pub async fn query(pool: &PgPool, sql: &str) -> Result<Frame, sqlx::Error> {
    let rows: Vec<PgRow> = sqlx::raw_sql(sql).fetch_all(pool).await?;
    let columns = rows
        .first()
        .map(|r| {
            r.columns()
                .iter()
                .map(|c| {
                    let pg_type = c.type_info().name().to_owned();
                    Col { name: c.name().to_owned(), kind: kind(&pg_type), pg_type }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut values = Vec::with_capacity(r.len());
        for i in 0..r.len() {
            let raw = r.try_get_raw(i)?;
            values.push(if raw.is_null() { None } else { Some(raw.as_str().map_err(sqlx::Error::Decode)?.to_owned()) });
        }
        out.push(values);
    }
    Ok(Frame { columns, rows: out })
}

impl Frame {
    pub fn column(&self, name: &str) -> Option<(usize, &Col)> {
        self.columns.iter().enumerate().find(|(_, c)| c.name == name)
    }

    pub fn describe(&self) -> String {
        self.columns.iter().map(|c| format!("{} {}", c.name, c.pg_type)).collect::<Vec<_>>().join(", ")
    }

    /// Grafana's time-series format: a column named `time` (or `time_sec`) holding a timestamp
    /// or epoch seconds, at least one numeric value column, any other column text (it becomes
    /// a label), rows in time order. Returns the problems found.
    pub fn time_series_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some((ti, tc)) = self.column("time").or_else(|| self.column("time_sec")) else {
            return vec![format!("no column named time ({})", self.describe())];
        };
        if !matches!(tc.kind, Kind::Time | Kind::Number) {
            problems.push(format!("the time column is {}, not a timestamp or epoch", tc.pg_type));
        }
        let values: Vec<&Col> = self.columns.iter().enumerate().filter(|(i, _)| *i != ti).map(|(_, c)| c).collect();
        if !values.iter().any(|c| c.kind == Kind::Number) {
            problems.push(format!("no numeric value column ({})", self.describe()));
        }
        for c in values.iter().filter(|c| !matches!(c.kind, Kind::Number | Kind::Text)) {
            problems.push(format!("column {} is {}: neither a value nor a label", c.name, c.pg_type));
        }
        let times: Vec<Option<f64>> =
            self.rows.iter().map(|r| r[ti].as_deref().and_then(|s| epoch(tc.kind, s))).collect();
        if times.iter().any(Option::is_none) {
            problems.push("a time value is NULL or unreadable".to_owned());
        }
        if times.windows(2).any(|w| w[0] > w[1]) {
            problems.push("rows are not sorted by time".to_owned());
        }
        problems
    }

    /// The series Grafana builds from a time-series frame: one per numeric column and per
    /// combination of the text columns' values (long to wide), named by the column.
    pub fn series(&self) -> Vec<Series> {
        let Some((ti, tc)) = self.column("time").or_else(|| self.column("time_sec")) else {
            return Vec::new();
        };
        let labels: Vec<usize> =
            (0..self.columns.len()).filter(|&i| i != ti && self.columns[i].kind == Kind::Text).collect();
        let mut by_key: BTreeMap<(String, BTreeMap<String, String>), Series> = BTreeMap::new();
        for row in &self.rows {
            let Some(t) = row[ti].as_deref().and_then(|s| epoch(tc.kind, s)) else { continue };
            let lbl: BTreeMap<String, String> =
                labels.iter().map(|&i| (self.columns[i].name.clone(), row[i].clone().unwrap_or_default())).collect();
            for (i, c) in self.columns.iter().enumerate() {
                if i == ti || c.kind != Kind::Number {
                    continue;
                }
                let v = row[i].as_deref().and_then(|s| s.parse::<f64>().ok());
                by_key
                    .entry((c.name.clone(), lbl.clone()))
                    .or_insert_with(|| Series { name: c.name.clone(), labels: lbl.clone(), points: Vec::new() })
                    .points
                    .push((t, v));
            }
        }
        by_key.into_values().collect()
    }
}

/// Epoch seconds of a time value as PostgreSQL prints it (text format).
fn epoch(kind: Kind, s: &str) -> Option<f64> {
    match kind {
        Kind::Number => s.parse().ok(),
        Kind::Time => parse_pg_timestamp(s).map(|t| t.timestamp_millis() as f64 / 1000.0),
        _ => None,
    }
}

/// `2026-11-22 10:00:00+00`, `2026-11-22 10:00:00.25+05:30`, or a timestamp without zone (UTC).
pub fn parse_pg_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok().map(|n| n.and_utc()))
}

/// One series of a time-series frame: (epoch seconds, value or NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, Option<f64>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cols: &[(&str, &str)], rows: &[&[Option<&str>]]) -> Frame {
        Frame {
            columns: cols.iter().map(|(n, t)| Col { name: (*n).into(), pg_type: (*t).into(), kind: kind(t) }).collect(),
            rows: rows.iter().map(|r| r.iter().map(|v| v.map(str::to_owned)).collect()).collect(),
        }
    }

    #[test]
    fn a_wide_frame_gives_one_series_per_value_column() {
        let f = frame(
            &[("time", "TIMESTAMPTZ"), ("a", "INT8"), ("b", "FLOAT8")],
            &[
                &[Some("2026-11-22 10:00:00+00"), Some("1"), Some("0.5")],
                &[Some("2026-11-22 10:01:00+00"), Some("2"), None],
            ],
        );
        assert!(f.time_series_problems().is_empty());
        let s = f.series();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "a");
        assert_eq!(s[0].points[1].1, Some(2.0));
        assert_eq!(s[1].points[1].1, None);
    }

    #[test]
    fn a_long_frame_gives_one_series_per_label_value() {
        let f = frame(
            &[("time", "NUMERIC"), ("metric", "TEXT"), ("value", "NUMERIC")],
            &[
                &[Some("60"), Some("05"), Some("3")],
                &[Some("60"), Some("51"), Some("1")],
                &[Some("120"), Some("05"), Some("4")],
            ],
        );
        assert!(f.time_series_problems().is_empty());
        let s = f.series();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["metric"], "05");
        assert_eq!(s[0].points, vec![(60.0, Some(3.0)), (120.0, Some(4.0))]);
    }

    #[test]
    fn time_series_problems_name_what_grafana_would_refuse() {
        let f = frame(&[("minute", "TIMESTAMPTZ"), ("n", "INT8")], &[&[Some("2026-11-22 10:00:00+00"), Some("1")]]);
        assert!(f.time_series_problems()[0].contains("no column named time"));
        let f = frame(&[("time", "TIMESTAMPTZ"), ("ok", "BOOL")], &[&[Some("2026-11-22 10:00:00+00"), Some("t")]]);
        assert_eq!(f.time_series_problems().len(), 2);
        let f = frame(&[("time", "INT8"), ("n", "INT8")], &[&[Some("120"), Some("1")], &[Some("60"), Some("1")]]);
        assert!(f.time_series_problems()[0].contains("sorted"));
    }

    #[test]
    fn postgres_timestamps_parse_with_short_and_long_offsets() {
        assert_eq!(parse_pg_timestamp("2026-11-22 10:00:00+00").unwrap().timestamp(), 1_795_341_600);
        assert_eq!(parse_pg_timestamp("2026-11-22 15:30:00.5+05:30").unwrap().timestamp_millis(), 1_795_341_600_500);
    }
}
