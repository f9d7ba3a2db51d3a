//! The one place that decides whether a failed database write is worth retrying.

use std::time::Duration;

use rand::Rng;

/// Retry when the database is unreachable, restarting, overloaded or aborted the transaction
/// for concurrency reasons; give up (dead-letter the offending rows) when the data itself was
/// refused.
pub fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| is_retryable_sqlstate(&c)),
        _ => false,
    }
}

/// SQLSTATE classes and codes that describe the server's condition, not the data.
pub fn is_retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || code.starts_with("57P") // operator intervention: admin/crash shutdown, cannot connect now
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock detected
        || code == "55P03" // lock not available
        || code == "58000" // system error
        || code == "58030" // io error
}

/// A short label for metrics.
pub fn kind(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Io(_) => "io",
        sqlx::Error::PoolTimedOut => "pool_timeout",
        sqlx::Error::Database(_) if is_retryable(e) => "database_unavailable",
        sqlx::Error::Database(_) => "rejected",
        _ if is_retryable(e) => "connection",
        _ => "other",
    }
}

/// Exponential backoff from 100 ms, doubling, capped at `max`, with ±25 % jitter.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(16));
    let capped = base.min(max);
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_conditions_are_retryable_and_data_errors_are_not() {
        for c in ["08006", "08001", "57P01", "57P03", "53300", "40001", "40P01"] {
            assert!(is_retryable_sqlstate(c), "{c}");
        }
        for c in ["23505", "23514", "22P02", "42P01", "42703"] {
            assert!(!is_retryable_sqlstate(c), "{c}");
        }
        assert!(is_retryable(&sqlx::Error::PoolTimedOut));
        assert!(!is_retryable(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        assert!(backoff(0, max) < Duration::from_millis(200));
        assert!(backoff(3, max) >= Duration::from_millis(600));
        assert!(backoff(30, max) <= Duration::from_millis(6250));
    }
}
