//! Grafana's PostgreSQL query pipeline up to the SQL it sends, reproduced so the tests run the
//! dashboards' and alert rules' queries exactly as Grafana would.
//!
//! Sources of truth (grafana/grafana, read in the public code corpus):
//! 1. Template variables, in the browser: `TemplateSrv.replace` with the SQL data sources'
//!    `interpolateVariable` (`packages/grafana-sql/src/datasource/SqlDatasource.ts`,
//!    commit e75b5e7dd36309964a1ec33494cc10c9fd2929d6). A variable's value is formatted by
//!    `interpolateVariable`: a single value of a variable that is neither multi-value nor has
//!    "All" has its quotes doubled and is inserted bare; every value of a multi-value or
//!    include-All variable is quoted ('a','b'). "All" inserts the custom all value as written
//!    (TemplateSrv skips formatting custom all values), or else every option quoted. The
//!    panel's scoped variables `$__interval` and `$__interval_ms` are replaced here too.
//!    Syntaxes: `$var`, `${var}`, `[[var]]`; names Grafana does not know are left untouched
//!    (that is how `$__timeFilter(...)` reaches the backend).
//! 2. Global SQL substitutions, in the backend: `sqleng.Interpolate`
//!    (`pkg/tsdb/grafana-postgresql-datasource/sqleng/sql_engine.go`): `$__interval_ms`,
//!    `$__interval` (formatted by the plugin SDK's `gtime.FormatInterval`), `$__unixEpochFrom()`,
//!    `$__unixEpochTo()`. Alert queries start here: no browser, no template variables.
//! 3. The PostgreSQL macro engine (`pkg/tsdb/grafana-postgresql-datasource/macros.go`, commit
//!    0577088076c3920f31aa0ca03cf8ac62e08f4d5b): every `$name(args)` matching
//!    `\$([_a-zA-Z0-9]+)\(([^\)]*)\)`, arguments split on commas and trimmed of spaces:
//!    `$__time`, `$__timeEpoch`, `$__timeFilter` (`col BETWEEN '<from>' AND '<to>'`, RFC 3339
//!    with nanoseconds, UTC), `$__timeFrom()`, `$__timeTo()`, `$__timeGroup(col, interval)`
//!    (`floor(extract(epoch from col)/S)*S`, S printed like Go's %v of a float64; an
//!    interval argument may be quoted), `$__timeGroupAlias` (adds `AS "time"`; so does
//!    `$__timeGroup` directly followed by a comma, the pre-5.3 compatibility rule),
//!    `$__unixEpochFilter`, `$__unixEpochNanoFilter`, `$__unixEpochNanoFrom()`,
//!    `$__unixEpochNanoTo()`, `$__unixEpochGroup`, `$__unixEpochGroupAlias`. Unknown macros are
//!    errors. TimescaleDB's `time_bucket` form and fill modes (a third `$__timeGroup` argument)
//!    are not reproduced: the data source has `timescaledb: false` and the dashboards do not fill.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::{Captures, Regex};

/// The dashboard's (or an alert query's) time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A template variable's current selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One value (a single-value variable, or one chosen of a multi-value one).
    One(String),
    /// Several values of a multi-value variable.
    Many(Vec<String>),
    /// The "All" option.
    All,
}

/// A template variable as the dashboard defines it, with a selection.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub multi: bool,
    pub include_all: bool,
    /// The custom all value (`allValue`), inserted as written when "All" is selected.
    pub all_value: Option<String>,
    /// The variable's options (used for "All" without a custom all value).
    pub options: Vec<String>,
    pub selection: Selection,
}

/// Everything a query's expansion depends on.
#[derive(Debug, Clone)]
pub struct QueryContext {
    pub range: TimeRange,
    /// `$__interval` of the panel (Grafana: range / max data points, at least the data
    /// source's minimum interval).
    pub interval: Duration,
    pub variables: Vec<Variable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroError(pub String);

impl fmt::Display for MacroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MacroError {}

/// A dashboard panel's query, as Grafana sends it to PostgreSQL: browser-side variables, then
/// the backend's global substitutions, then the macro engine.
pub fn expand_panel_query(sql: &str, ctx: &QueryContext) -> Result<String, MacroError> {
    let sql = interpolate_variables(sql, ctx)?;
    let sql = interpolate_global(&sql, ctx.range, ctx.interval);
    interpolate_macros(&sql, ctx.range)
}

/// An alert rule's query: no browser, so no template variables (Grafana refuses them in rules).
pub fn expand_alert_query(sql: &str, range: TimeRange, interval: Duration) -> Result<String, MacroError> {
    let sql = interpolate_global(sql, range, interval);
    interpolate_macros(&sql, range)
}

// TemplateSrv's variableRegex: $var | [[var]] / [[var:fmt]] | ${var} / ${var.path} / ${var:fmt}.
// JavaScript's \w is ASCII.
static VARIABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+?)(?::([A-Za-z0-9_]+))?\]\]|\$\{([A-Za-z0-9_]+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}",
    )
    .unwrap()
});

/// Step 1: template variables and the panel's scoped variables, as the browser does.
pub fn interpolate_variables(sql: &str, ctx: &QueryContext) -> Result<String, MacroError> {
    let mut error = None;
    let out = VARIABLE.replace_all(sql, |c: &Captures<'_>| {
        let whole = c.get(0).map(|m| m.as_str()).unwrap_or_default();
        let name = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(4)).map(|m| m.as_str()).unwrap_or_default();
        let format = c.get(3).or_else(|| c.get(6)).map(|m| m.as_str());
        if format.is_some() || c.get(5).is_some() {
            error.get_or_insert(MacroError(format!("{whole}: explicit formats and field paths are not reproduced")));
            return whole.to_owned();
        }
        match name {
            // Scoped variables of a panel request (a string and a number): interpolateVariable
            // leaves a string of a variable-less value bare.
            "__interval" => format_interval(ctx.interval),
            "__interval_ms" => ctx.interval.as_millis().to_string(),
            // The browser's own time macros (epoch milliseconds).
            "__from" => ctx.range.from.timestamp_millis().to_string(),
            "__to" => ctx.range.to.timestamp_millis().to_string(),
            _ => match ctx.variables.iter().find(|v| v.name == name) {
                Some(v) => format_variable(v),
                // Not a variable: left for the backend ($__timeFilter, ...).
                None => whole.to_owned(),
            },
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(out.into_owned()),
    }
}

/// `quoteLiteral` of the PostgreSQL query model: single quotes, inner quotes doubled.
fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn format_variable(v: &Variable) -> String {
    let quote_all = |values: &[String]| values.iter().map(|s| quote_literal(s)).collect::<Vec<_>>().join(",");
    match &v.selection {
        Selection::All => match &v.all_value {
            Some(custom) => custom.clone(),
            None => quote_all(&v.options),
        },
        Selection::One(s) if v.multi || v.include_all => quote_literal(s),
        Selection::One(s) => s.replace('\'', "''"),
        Selection::Many(values) => quote_all(values),
    }
}

/// Step 2: `sqleng.Interpolate`.
pub fn interpolate_global(sql: &str, range: TimeRange, interval: Duration) -> String {
    sql.replace("$__interval_ms", &interval.as_millis().to_string())
        .replace("$__interval", &format_interval(interval))
        .replace("$__unixEpochFrom()", &range.from.timestamp().to_string())
        .replace("$__unixEpochTo()", &range.to.timestamp().to_string())
}

static MACRO: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)").unwrap());

/// Step 3: the PostgreSQL macro engine.
pub fn interpolate_macros(sql: &str, range: TimeRange) -> Result<String, MacroError> {
    let mut error = None;
    let out = MACRO.replace_all(sql, |c: &Captures<'_>| {
        let whole = &c[0];
        let mut name = c[1].to_owned();
        // Pre-5.3 compatibility: "$__timeGroup(...)," (a comma right after the first
        // occurrence of this exact text) means the alias form.
        if name == "__timeGroup" {
            if let Some(i) = sql.find(whole) {
                if sql[i + whole.len()..].starts_with(',') {
                    name = "__timeGroupAlias".to_owned();
                }
            }
        }
        let args: Vec<String> = c[2].split(',').map(|a| a.trim_matches(' ').to_owned()).collect();
        match evaluate_macro(&name, &args, range) {
            Ok(s) => s,
            Err(e) => {
                error.get_or_insert(e);
                "macro_error()".to_owned()
            }
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(out.into_owned()),
    }
}

fn evaluate_macro(name: &str, args: &[String], range: TimeRange) -> Result<String, MacroError> {
    // strings.Split of "" gives [""]: Grafana's len(args) == 0 never holds; a missing column
    // shows up as an empty first argument, which PostgreSQL then rejects.
    let col = || -> Result<&str, MacroError> {
        args.first()
            .map(String::as_str)
            .ok_or_else(|| MacroError(format!("missing time column argument for macro {name}")))
    };
    let group = |args: &[String]| -> Result<Duration, MacroError> {
        if args.len() < 2 {
            return Err(MacroError(format!("macro {name} needs time column and interval and optional fill value")));
        }
        if args.len() == 3 {
            return Err(MacroError(format!("macro {name}: fill modes are not reproduced")));
        }
        parse_interval(args[1].trim_matches('\''))
            .map_err(|_| MacroError(format!("error parsing interval {}", args[1])))
    };
    let (from, to) = (range.from, range.to);
    Ok(match name {
        "__time" => format!("{} AS \"time\"", col()?),
        "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", col()?),
        "__timeFilter" => format!("{} BETWEEN '{}' AND '{}'", col()?, rfc3339_nano(from), rfc3339_nano(to)),
        "__timeFrom" => format!("'{}'", rfc3339_nano(from)),
        "__timeTo" => format!("'{}'", rfc3339_nano(to)),
        "__timeGroup" => {
            let s = go_float(group(args)?.as_secs_f64());
            format!("floor(extract(epoch from {})/{s})*{s}", args[0])
        }
        "__timeGroupAlias" => format!("{} AS \"time\"", evaluate_macro("__timeGroup", args, range)?),
        "__unixEpochFilter" => {
            let c = col()?;
            format!("{c} >= {} AND {c} <= {}", from.timestamp(), to.timestamp())
        }
        "__unixEpochNanoFilter" => {
            let c = col()?;
            format!("{c} >= {} AND {c} <= {}", nanos(from), nanos(to))
        }
        "__unixEpochNanoFrom" => nanos(from).to_string(),
        "__unixEpochNanoTo" => nanos(to).to_string(),
        "__unixEpochGroup" => {
            let s = go_float(group(args)?.as_secs_f64());
            format!("floor(({})/{s})*{s}", args[0])
        }
        "__unixEpochGroupAlias" => format!("{} AS \"time\"", evaluate_macro("__unixEpochGroup", args, range)?),
        other => return Err(MacroError(format!("unknown macro {other:?}"))),
    })
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Go's `time.RFC3339Nano` in UTC: seconds, then the fraction with trailing zeros removed.
pub fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let ns = t.timestamp_subsec_nanos();
    if ns == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{ns:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

/// Go's `fmt.Sprintf("%v", f)` of a float64, which is strconv's 'g' format with the shortest
/// precision: the shortest digits that round-trip, in exponent form (`1e+06`) when the decimal
/// exponent is below -4 or at least 6. So a 30-day group prints as `2.592e+06`, which
/// PostgreSQL reads as the same number.
pub fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".to_owned();
    }
    // Rust's `{}` for f64 is the shortest round-trip digits in positional form; `{:e}` the
    // same digits in exponent form.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// The plugin SDK's `gtime.FormatInterval`: the largest unit that fits, truncated.
pub fn format_interval(d: Duration) -> String {
    let ms = d.as_millis();
    const SEC: u128 = 1000;
    const MIN: u128 = 60 * SEC;
    const HOUR: u128 = 60 * MIN;
    const DAY: u128 = 24 * HOUR;
    const YEAR: u128 = 365 * DAY;
    match ms {
        m if m >= YEAR => format!("{}y", m / YEAR),
        m if m >= DAY => format!("{}d", m / DAY),
        m if m >= HOUR => format!("{}h", m / HOUR),
        m if m >= MIN => format!("{}m", m / MIN),
        m if m >= SEC => format!("{}s", m / SEC),
        m if m >= 1 => format!("{m}ms"),
        _ => "1ms".to_owned(),
    }
}

/// The plugin SDK's `gtime.ParseInterval`: a Go duration (`500ms`, `90s`, `1h30m`) or a whole
/// number of days, weeks, months or years (`2d`, `1w`, `1M`, `1y`; a month is a twelfth of a
/// Julian year).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    const DAY: f64 = 86_400.0;
    let s = s.trim();
    if let Some(unit) = s.chars().last().filter(|c| matches!(c, 'd' | 'w' | 'M' | 'y')) {
        let num = &s[..s.len() - 1];
        if !num.is_empty() && num.chars().all(|c| c.is_ascii_digit()) {
            let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
            let secs = match unit {
                'd' => n * DAY,
                'w' => n * 7.0 * DAY,
                'M' => n * 365.25 * DAY / 12.0,
                _ => n * 365.25 * DAY,
            };
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    parse_go_duration(s)
}

/// Go's `time.ParseDuration` for non-negative values: `[0-9.]+unit` repeated, units ns, us,
/// µs, ms, s, m, h; "0" alone is allowed.
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let err = || format!("invalid duration {s:?}");
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn range() -> TimeRange {
        TimeRange {
            from: Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap() + chrono::Duration::milliseconds(250),
        }
    }

    fn ctx(variables: Vec<Variable>) -> QueryContext {
        QueryContext { range: range(), interval: Duration::from_secs(300), variables }
    }

    fn var(name: &str, selection: Selection) -> Variable {
        Variable {
            name: name.into(),
            multi: true,
            include_all: true,
            all_value: None,
            options: vec!["fuel".into(), "o'hare".into()],
            selection,
        }
    }

    #[test]
    fn time_filter_uses_rfc3339_with_trimmed_nanoseconds_in_utc() {
        let sql = interpolate_macros("WHERE $__timeFilter(minute)", range()).unwrap();
        assert_eq!(sql, "WHERE minute BETWEEN '2026-11-22T09:00:00Z' AND '2026-11-22T12:00:00.25Z'");
    }

    #[test]
    fn time_from_and_to_are_quoted_timestamps() {
        let sql = interpolate_macros("$__timeFrom() .. $__timeTo()", range()).unwrap();
        assert_eq!(sql, "'2026-11-22T09:00:00Z' .. '2026-11-22T12:00:00.25Z'");
    }

    #[test]
    fn time_group_alias_buckets_epoch_seconds_and_names_the_column_time() {
        let sql = interpolate_macros("SELECT $__timeGroupAlias(minute, '5m'), 1", range()).unwrap();
        assert_eq!(sql, "SELECT floor(extract(epoch from minute)/300)*300 AS \"time\", 1");
        let sql = interpolate_macros("GROUP BY $__timeGroup(minute,1h)", range()).unwrap();
        assert_eq!(sql, "GROUP BY floor(extract(epoch from minute)/3600)*3600");
    }

    #[test]
    fn time_group_followed_by_a_comma_gets_the_alias_for_pre_5_3_dashboards() {
        let sql = interpolate_macros("SELECT $__timeGroup(minute, 1m), count(*)", range()).unwrap();
        assert_eq!(sql, "SELECT floor(extract(epoch from minute)/60)*60 AS \"time\", count(*)");
    }

    #[test]
    fn unix_epoch_macros_use_seconds_and_nanoseconds() {
        let r = range();
        let sql = interpolate_global("$__unixEpochFrom() $__unixEpochTo()", r, Duration::from_secs(60));
        assert_eq!(sql, format!("{} {}", r.from.timestamp(), r.to.timestamp()));
        let sql = interpolate_macros("$__unixEpochFilter(ts)", r).unwrap();
        assert_eq!(sql, format!("ts >= {} AND ts <= {}", r.from.timestamp(), r.to.timestamp()));
        let sql = interpolate_macros("$__unixEpochNanoFrom()", r).unwrap();
        assert_eq!(sql, r.from.timestamp_nanos_opt().unwrap().to_string());
        let sql = interpolate_macros("$__unixEpochGroupAlias(ts, 30s)", r).unwrap();
        assert_eq!(sql, "floor((ts)/30)*30 AS \"time\"");
    }

    #[test]
    fn unknown_macros_and_bad_intervals_are_errors() {
        assert!(interpolate_macros("$__nope(x)", range()).is_err());
        assert!(interpolate_macros("$__timeGroup(minute, fortnight)", range()).is_err());
        assert!(interpolate_macros("$__timeGroup(minute)", range()).is_err());
    }

    #[test]
    fn interval_variables_are_grafana_durations_and_milliseconds() {
        let c = ctx(vec![]);
        let sql =
            expand_panel_query("$__timeGroupAlias(minute, $__interval), x * 60000.0 / $__interval_ms", &c).unwrap();
        assert_eq!(sql, "floor(extract(epoch from minute)/300)*300 AS \"time\", x * 60000.0 / 300000");
        // The backend alone (alert queries) substitutes them the same way.
        let sql = expand_alert_query("$__interval $__interval_ms", range(), Duration::from_secs(60)).unwrap();
        assert_eq!(sql, "1m 60000");
    }

    #[test]
    fn format_interval_truncates_to_the_largest_unit() {
        assert_eq!(format_interval(Duration::from_secs(90)), "1m");
        assert_eq!(format_interval(Duration::from_secs(86_400 * 2)), "2d");
        assert_eq!(format_interval(Duration::from_millis(500)), "500ms");
        assert_eq!(format_interval(Duration::from_secs(15)), "15s");
        assert_eq!(format_interval(Duration::ZERO), "1ms");
    }

    #[test]
    fn parse_interval_accepts_go_durations_and_calendar_units() {
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_interval("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_interval("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_interval("1w").unwrap(), Duration::from_secs(604_800));
        assert!(parse_interval("5 minutes").is_err());
        assert!(parse_interval("").is_err());
    }

    #[test]
    fn go_float_prints_like_percent_v() {
        assert_eq!(go_float(60.0), "60");
        assert_eq!(go_float(86_400.0), "86400");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(604_800.0), "604800");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(2_592_000.0), "2.592e+06");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn multi_value_selections_are_quoted_and_joined_with_commas() {
        let c = ctx(vec![var("category", Selection::Many(vec!["fuel".into(), "o'hare".into()]))]);
        let sql = interpolate_variables("category IN ($category)", &c).unwrap();
        assert_eq!(sql, "category IN ('fuel','o''hare')");
        // The other syntaxes name the same variable.
        let sql = interpolate_variables("${category} [[category]]", &c).unwrap();
        assert_eq!(sql, "'fuel','o''hare' 'fuel','o''hare'");
    }

    #[test]
    fn one_value_of_a_multi_value_variable_is_quoted() {
        let c = ctx(vec![var("category", Selection::One("fuel".into()))]);
        assert_eq!(interpolate_variables("= $category", &c).unwrap(), "= 'fuel'");
    }

    #[test]
    fn a_single_value_variable_is_inserted_bare_with_quotes_doubled() {
        let mut v = var("merchant", Selection::One("o'hare".into()));
        v.multi = false;
        v.include_all = false;
        let c = ctx(vec![v]);
        assert_eq!(interpolate_variables("= '$merchant'", &c).unwrap(), "= 'o''hare'");
    }

    #[test]
    fn all_inserts_the_custom_all_value_as_written_or_every_option_quoted() {
        let mut v = var("category", Selection::All);
        let c = ctx(vec![v.clone()]);
        assert_eq!(interpolate_variables("IN ($category)", &c).unwrap(), "IN ('fuel','o''hare')");
        v.all_value = Some("'__all'".into());
        let c = ctx(vec![v]);
        assert_eq!(interpolate_variables("'__all' IN ($category)", &c).unwrap(), "'__all' IN ('__all')");
    }

    #[test]
    fn unknown_names_are_left_for_the_backend_and_explicit_formats_are_refused() {
        let c = ctx(vec![var("category", Selection::All)]);
        let sql = interpolate_variables("$__timeFilter(minute) AND $nothing", &c).unwrap();
        assert_eq!(sql, "$__timeFilter(minute) AND $nothing");
        assert!(interpolate_variables("${category:csv}", &c).is_err());
    }

    #[test]
    fn a_panel_query_goes_through_all_three_steps() {
        let c = ctx(vec![var("category", Selection::One("fuel".into()))]);
        let sql = expand_panel_query(
            "SELECT $__timeGroupAlias(minute, $__interval), sum(count) FROM t WHERE $__timeFilter(minute) AND category IN ($category) GROUP BY 1",
            &c,
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT floor(extract(epoch from minute)/300)*300 AS \"time\", sum(count) FROM t WHERE minute BETWEEN \
             '2026-11-22T09:00:00Z' AND '2026-11-22T12:00:00.25Z' AND category IN ('fuel') GROUP BY 1"
        );
    }
}
