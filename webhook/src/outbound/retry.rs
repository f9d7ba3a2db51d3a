//! Whether to retry a delivery, and when: decided here, in one place.
//!
//! * 2xx: delivered.
//! * 408, 425, 429, 5xx and transport failures (refused, reset, timed out): retried with
//!   exponential backoff and jitter, until the delivery is `give_up_after` old.
//! * Any other status (3xx after redirects, 4xx): the receiver refuses this request and will
//!   refuse it again, so the delivery is marked failed at once.

use std::time::Duration;

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

/// Decides after an attempt. `attempts` counts this one; `age` is the delivery's age now.
pub fn decide(attempt: &Attempt, attempts: u32, age: Duration, policy: &RetryPolicy, jitter: f64) -> Decision {
    let retry = match attempt {
        Attempt::Status(s) if (200..300).contains(s) => return Decision::Delivered,
        Attempt::Status(s) => retryable_status(*s),
        Attempt::Transport(_) => true,
    };
    if !retry {
        return Decision::GiveUp;
    }
    let wait = backoff(attempts, policy, jitter);
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
        assert_eq!(decide(&Attempt::Status(204), 1, young, &POLICY, 0.5), Decision::Delivered);
        assert!(matches!(decide(&Attempt::Status(503), 1, young, &POLICY, 0.5), Decision::RetryAfter(_)));
        assert!(matches!(decide(&Attempt::Status(429), 1, young, &POLICY, 0.5), Decision::RetryAfter(_)));
        assert!(matches!(
            decide(&Attempt::Transport("refused".into()), 3, young, &POLICY, 0.5),
            Decision::RetryAfter(_)
        ));
        assert_eq!(decide(&Attempt::Status(400), 1, young, &POLICY, 0.5), Decision::GiveUp);
        assert_eq!(decide(&Attempt::Status(404), 1, young, &POLICY, 0.5), Decision::GiveUp);
    }

    #[test]
    fn a_delivery_older_than_the_limit_gives_up() {
        let old = Duration::from_secs(3590);
        assert_eq!(decide(&Attempt::Status(503), 9, old, &POLICY, 0.0), Decision::GiveUp);
        assert_eq!(decide(&Attempt::Status(200), 9, old, &POLICY, 0.0), Decision::Delivered);
    }
}
