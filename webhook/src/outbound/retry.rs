//! Whether to retry a delivery, and when: decided here, in one place.
//!
//! * 2xx: delivered.
//! * 408, 425, 429, 5xx and transport failures (refused, reset, timed out): retried with
//!   exponential backoff and jitter, until the delivery is `give_up_after` old.
//! * Any other status (3xx after redirects, 4xx): the receiver refuses this request and will
//!   refuse it again, so the delivery is marked failed at once.
//! * A 429 or 503 with a `Retry-After` (delay-seconds or an HTTP-date, RFC 9110 §10.2.3) waits
//!   what the receiver asked, but never longer than `max` (a receiver cannot park a delivery
//!   for a day) and never shorter than the backoff (a `Retry-After: 0` does not make us hammer
//!   it). An unparsable or past value is ignored: the backoff applies.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt (before jitter).
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Age at which a delivery stops being retried and is marked failed.
    pub give_up_after: Duration,
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: connection refused or reset, timeout, TLS failure...
    Transport(String),
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    RetryAfter(Duration),
    GiveUp,
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..600).contains(&status)
}

/// The wait after `attempts` failed attempts (1 = the first failed): `initial * 2^(attempts-1)`
/// capped at `max`, of which the upper half is random ("equal jitter", `jitter` in `[0, 1)`), so
/// receivers that fail together are not hit again in lockstep.
pub fn backoff(attempts: u32, policy: &RetryPolicy, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(32);
    let base = policy.initial.saturating_mul(2u32.saturating_pow(exp)).min(policy.max);
    let half = base / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The statuses whose `Retry-After` is honoured: the receiver is rate-limiting us (429) or
/// says when it will be back (503). On a redirect or any other status the header means
/// something else or nothing.
pub fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// The delay a `Retry-After` value asks for, measured from `now`: delay-seconds (`120`) or an
/// HTTP-date in any of the three forms a recipient must accept (IMF-fixdate
/// `Sun, 06 Nov 1994 08:49:37 GMT`, the obsolete RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` and
/// asctime `Sun Nov  6 08:49:37 1994`). `None` when the value is none of these; a date in the
/// past is a delay of zero.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time": the cap applies.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

fn http_date(value: &str) -> Option<DateTime<Utc>> {
    // IMF-fixdate is RFC 5322's date with zone GMT; chrono's RFC 2822 parser reads it.
    if value.ends_with(" GMT") {
        if let Ok(d) = DateTime::parse_from_rfc2822(value) {
            return Some(d.with_timezone(&Utc));
        }
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|d| d.and_utc())
}

/// Decides after an attempt. `attempts` counts this one; `age` is the delivery's age now;
/// `retry_after` is the delay the receiver's `Retry-After` asked for, if it sent one (see
/// [`parse_retry_after`]), used only with a status that [`honours_retry_after`].
pub fn decide(
    attempt: &Attempt,
    attempts: u32,
    age: Duration,
    retry_after: Option<Duration>,
    policy: &RetryPolicy,
    jitter: f64,
) -> Decision {
    let (retry, asked) = match attempt {
        Attempt::Status(s) if (200..300).contains(s) => return Decision::Delivered,
        Attempt::Status(s) => (retryable_status(*s), retry_after.filter(|_| honours_retry_after(*s))),
        Attempt::Transport(_) => (true, None),
    };
    if !retry {
        return Decision::GiveUp;
    }
    let backoff = backoff(attempts, policy, jitter);
    let wait = match asked {
        Some(asked) => asked.min(policy.max).max(backoff),
        None => backoff,
    };
    if age + wait > policy.give_up_after {
        Decision::GiveUp
    } else {
        Decision::RetryAfter(wait)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        give_up_after: Duration::from_secs(3600),
    };

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_its_upper_half() {
        assert_eq!(backoff(1, &POLICY, 0.0), Duration::from_millis(500));
        let high = backoff(1, &POLICY, 0.999);
        assert!(high > Duration::from_millis(990) && high < Duration::from_secs(1), "{high:?}");
        assert_eq!(backoff(4, &POLICY, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(7, &POLICY, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(7, &POLICY, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(1000, &POLICY, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn success_server_errors_and_client_errors_are_told_apart() {
        let young = Duration::from_secs(10);
        assert_eq!(decide(&Attempt::Status(204), 1, young, None, &POLICY, 0.5), Decision::Delivered);
        assert!(matches!(decide(&Attempt::Status(503), 1, young, None, &POLICY, 0.5), Decision::RetryAfter(_)));
        assert!(matches!(decide(&Attempt::Status(429), 1, young, None, &POLICY, 0.5), Decision::RetryAfter(_)));
        assert!(matches!(
            decide(&Attempt::Transport("refused".into()), 3, young, None, &POLICY, 0.5),
            Decision::RetryAfter(_)
        ));
        assert_eq!(decide(&Attempt::Status(400), 1, young, None, &POLICY, 0.5), Decision::GiveUp);
        assert_eq!(decide(&Attempt::Status(404), 1, young, None, &POLICY, 0.5), Decision::GiveUp);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn retry_after_reads_seconds_and_every_http_date_form() {
        let now = at("1994-11-06T08:49:30Z");
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::from_secs(u64::MAX)));
        let seven = Some(Duration::from_secs(7));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), seven);
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), seven);
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), seven);
        // A date already past asks for no wait.
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        for bad in ["", "-5", "1.5", "soon", "Sun, 06 Nov 1994 08:49:37 +0200", "2 s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_on_429_and_503_is_honoured_between_the_backoff_and_the_cap() {
        let young = Duration::from_secs(10);
        let secs = |s| Some(Duration::from_secs(s));
        // Longer than the backoff (500 ms to 1 s after the first attempt): the receiver's wait.
        assert_eq!(
            decide(&Attempt::Status(429), 1, young, secs(2), &POLICY, 0.5),
            Decision::RetryAfter(secs(2).unwrap())
        );
        assert_eq!(
            decide(&Attempt::Status(503), 1, young, secs(2), &POLICY, 0.5),
            Decision::RetryAfter(secs(2).unwrap())
        );
        // Longer than the cap: the cap.
        assert_eq!(
            decide(&Attempt::Status(429), 1, young, secs(86_400), &POLICY, 0.0),
            Decision::RetryAfter(POLICY.max)
        );
        // Shorter than the backoff (4 s to 8 s after the fourth attempt): the backoff.
        assert_eq!(
            decide(&Attempt::Status(503), 4, young, secs(0), &POLICY, 0.0),
            Decision::RetryAfter(secs(4).unwrap())
        );
        // Other retryable statuses do not honour it.
        assert_eq!(
            decide(&Attempt::Status(500), 1, young, secs(30), &POLICY, 0.0),
            Decision::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(
            decide(&Attempt::Status(408), 1, young, secs(30), &POLICY, 0.0),
            Decision::RetryAfter(Duration::from_millis(500))
        );
        // A refusal stays a refusal.
        assert_eq!(decide(&Attempt::Status(400), 1, young, secs(2), &POLICY, 0.0), Decision::GiveUp);
        assert_eq!(decide(&Attempt::Status(200), 1, young, secs(2), &POLICY, 0.0), Decision::Delivered);
        // A wait that would run past the give-up age gives up.
        let old = Duration::from_secs(3590);
        assert_eq!(decide(&Attempt::Status(429), 1, old, secs(30), &POLICY, 0.0), Decision::GiveUp);
    }

    #[test]
    fn a_delivery_older_than_the_limit_gives_up() {
        let old = Duration::from_secs(3590);
        assert_eq!(decide(&Attempt::Status(503), 9, old, None, &POLICY, 0.0), Decision::GiveUp);
        assert_eq!(decide(&Attempt::Status(200), 9, old, None, &POLICY, 0.0), Decision::Delivered);
    }
}
