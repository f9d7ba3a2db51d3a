//! Formatting for anomaly messages.

use chrono::{TimeZone, Utc};

pub fn utc(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()
}

pub fn hm(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().map(|t| t.format("%H:%M").to_string()).unwrap_or_default()
}

/// Minor units as a decimal amount with the currency code (2 decimals; good enough for text).
pub fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

pub fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A count or an expected count: whole from 10 on, one decimal below.
pub fn count(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}
