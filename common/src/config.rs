//! Typed configuration, checked at start-up, with every bad value named at once.
//!
//! Each service declares its variables with clap (`env = "..."`), so `--help` documents them,
//! and reads them as text; a [`Validator`] then parses every one, collecting all failures, so a
//! misconfigured deployment learns everything that is wrong in one attempt.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A value that must never be printed or logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Every configuration problem found, one line each.
#[derive(Debug, Default, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem{}):", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Collects parse and cross-field errors; [`Validator::finish`] reports them all.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<String>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with the variable `var`.
    pub fn error(&mut self, var: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{var}: {msg}"));
    }

    /// Parses `raw` as `T`; on failure records the error and returns `T::default()`.
    pub fn parse<T>(&mut self, var: &str, raw: &str) -> T
    where
        T: FromStr + Default,
        T::Err: fmt::Display,
    {
        match raw.trim().parse::<T>() {
            Ok(v) => v,
            Err(e) => {
                self.error(var, format_args!("{raw:?} is not valid: {e}"));
                T::default()
            }
        }
    }

    /// Parses a number that must lie in `min..=max`.
    pub fn parse_in<T>(&mut self, var: &str, raw: &str, min: T, max: T) -> T
    where
        T: FromStr + Default + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let v: T = self.parse(var, raw);
        if raw.trim().parse::<T>().is_ok() && (v < min || v > max) {
            self.error(var, format_args!("{v} is out of range {min}..={max}"));
        }
        v
    }

    /// Parses a boolean: true/false/1/0/yes/no/on/off.
    pub fn parse_bool(&mut self, var: &str, raw: &str) -> bool {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => {
                self.error(var, format_args!("{raw:?} is not a boolean (true/false)"));
                false
            }
        }
    }

    /// Parses a duration such as `250ms`, `30s`, `5m`, `2h`, `30d` (a bare number means seconds).
    pub fn parse_duration(&mut self, var: &str, raw: &str) -> Duration {
        match parse_duration(raw) {
            Ok(d) => d,
            Err(e) => {
                self.error(var, format_args!("{raw:?} is not a duration: {e}"));
                Duration::ZERO
            }
        }
    }

    /// Parses a duration that must be strictly positive.
    pub fn parse_positive_duration(&mut self, var: &str, raw: &str) -> Duration {
        let ok = parse_duration(raw).is_ok();
        let d = self.parse_duration(var, raw);
        if ok && d.is_zero() {
            self.error(var, "must be greater than zero");
        }
        d
    }

    /// Parses `host:port` (an IP address; port 0 means any free port).
    pub fn parse_addr(&mut self, var: &str, raw: &str) -> std::net::SocketAddr {
        match raw.trim().parse::<std::net::SocketAddr>() {
            Ok(a) => a,
            Err(e) => {
                self.error(var, format_args!("{raw:?} is not an address such as 0.0.0.0:3002: {e}"));
                std::net::SocketAddr::from(([0, 0, 0, 0], 0))
            }
        }
    }

    /// Requires a non-empty value.
    pub fn required(&mut self, var: &str, raw: &str) -> String {
        let v = raw.trim();
        if v.is_empty() {
            self.error(var, "is required");
        }
        v.to_owned()
    }

    /// Records `msg` against `var` when `cond` is false (cross-field rules).
    pub fn check(&mut self, cond: bool, var: &str, msg: impl fmt::Display) {
        if !cond {
            self.error(var, msg);
        }
    }

    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// `250ms`, `30s`, `5m`, `2h`, `30d`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty".into());
    }
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{num:?} is not a number"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err("out of range".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_validator_reports_every_bad_value_at_once() {
        let mut v = Validator::new();
        let _: u16 = v.parse("PORT", "http");
        let _ = v.parse_duration("TIMEOUT", "soon");
        let _: u32 = v.parse_in("MAX", "0", 1, 10);
        v.check(false, "A", "must be less than B");
        let err = v.finish().unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        let text = err.to_string();
        for var in ["PORT", "TIMEOUT", "MAX", "A"] {
            assert!(text.contains(var), "{text}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s} {s:?}").contains("hunter2"));
    }
}
