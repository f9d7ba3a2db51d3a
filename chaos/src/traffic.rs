//! Traffic: the simulator's generator and HTTP target, in-process, through the producer's batch
//! route. Every item carries its own transaction id; a refused or unavailable item is sent
//! again with the same id (`retries` times), and the [`SendReport`] counts each item's final
//! fate: `sent = accepted + refused + unavailable`, with every HTTP status seen.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use vigil_simulator::report::SendReport;
use vigil_simulator::run::{self, RunOptions, Speed};
use vigil_simulator::send::{HttpTarget, Target};
use vigil_simulator::{Generator, Scenario};

/// Eight categories, one merchant each, so records spread over the six partitions.
const CATEGORIES: [(&str, f64, f64, f64); 8] = [
    ("grocery", 4.0, 8.0, 0.5),
    ("fuel", 2.0, 8.5, 0.35),
    ("restaurants", 3.0, 8.2, 0.6),
    ("electronics", 1.0, 10.0, 0.7),
    ("travel", 1.0, 11.0, 0.8),
    ("pharmacy", 2.0, 7.5, 0.5),
    ("books", 1.0, 7.8, 0.4),
    ("clothing", 2.0, 9.0, 0.6),
];

fn scenario_toml(name: &str, minutes: u32, events_per_minute: f64, incidents: &str) -> String {
    let mut s = format!(
        "name = \"{name}\"\n\
         description = \"Vigil chaos traffic.\"\n\
         duration = \"{minutes}m\"\n\
         events_per_minute = {events_per_minute}\n\
         currency = \"EUR\"\n\n\
         [status_mix]\napproved = 0.90\ndenied = 0.05\nfailed = 0.03\nreversed = 0.02\n\n\
         [auth_codes]\ndenied = {{ \"05\" = 0.6, \"51\" = 0.4 }}\nfailed = {{ \"91\" = 1.0 }}\n\n"
    );
    for (cat, weight, ln_mean, ln_sigma) in CATEGORIES {
        let _ = write!(
            s,
            "[[categories]]\nname = \"{cat}\"\nweight = {weight}\nln_mean = {ln_mean}\nln_sigma = {ln_sigma}\n\
             merchants = [{{ id = \"m-{cat}-1\" }}]\n\n"
        );
    }
    s.push_str(incidents);
    s
}

/// History sent at once before the faults: enough final minutes for the rate baselines (the
/// detector judges from 10), with a denied spike that resolves within the history and a failed
/// spike at its end, still open when the faults begin.
pub fn history(minutes: u32, events_per_minute: f64) -> Scenario {
    let spike = minutes.saturating_sub(5).max(1);
    let late_spike = minutes.saturating_sub(2).max(1);
    let incidents = format!(
        "[[incidents]]\nkind = \"rate_spike\"\nstatus = \"denied\"\nstart = \"{spike}m\"\nduration = \"2m\"\ntarget_rate = 0.30\n\n\
         [[incidents]]\nkind = \"rate_spike\"\nstatus = \"failed\"\nstart = \"{late_spike}m\"\nduration = \"2m\"\ntarget_rate = 0.30\n\n\
         [[incidents]]\nkind = \"amount_outlier\"\ncategory = \"electronics\"\nsigma = 8\ncount = 3\nstart = \"{spike}m\"\nduration = \"3m\"\n"
    );
    Scenario::from_toml(&scenario_toml("chaos-history", minutes, events_per_minute, &incidents))
        .expect("the chaos history scenario is valid")
}

/// Live traffic: steady volume with a few large amounts in its first minute.
pub fn live(events_per_minute: f64) -> Scenario {
    let incidents = "[[incidents]]\nkind = \"amount_outlier\"\ncategory = \"travel\"\nsigma = 8\ncount = 2\nstart = \"0m\"\nduration = \"1m\"\n\n\
                     [[incidents]]\nkind = \"amount_outlier\"\nmerchant = \"m-grocery-1\"\nsigma = 8\ncount = 2\nstart = \"0m\"\nduration = \"1m\"\n";
    Scenario::from_toml(&scenario_toml("chaos-live", 60, events_per_minute, incidents))
        .expect("the chaos live scenario is valid")
}

/// How one stream is sent.
#[derive(Debug, Clone)]
pub struct Send {
    pub producer_url: String,
    /// Re-sends of an item not yet accepted (same id).
    pub retries: u32,
    pub request_timeout: Duration,
    pub concurrency: usize,
}

impl Send {
    pub fn new(producer_url: &str) -> Send {
        Send {
            producer_url: producer_url.to_owned(),
            retries: 30,
            request_timeout: Duration::from_secs(30),
            concurrency: 4,
        }
    }

    /// Sends `scenario` from `start` at `speed` until it ends or `stop` is cancelled.
    pub async fn run(
        &self,
        scenario: Scenario,
        seed: u64,
        start: DateTime<Utc>,
        speed: Speed,
        stop: CancellationToken,
    ) -> SendReport {
        self.run_delayed(scenario, seed, start, speed, Duration::ZERO, stop).await
    }

    /// As [`Send::run`], each transaction sent `delay` after the simulated clock reaches it.
    pub async fn run_delayed(
        &self,
        scenario: Scenario,
        seed: u64,
        start: DateTime<Utc>,
        speed: Speed,
        delay: Duration,
        stop: CancellationToken,
    ) -> SendReport {
        let target = Target::Http(
            HttpTarget::new(&self.producer_url, None, self.retries, self.request_timeout)
                .expect("an HTTP client builds"),
        );
        let opts = RunOptions {
            speed,
            batch_size: 200,
            concurrency: self.concurrency,
            max_skew: Duration::from_secs(20),
            delay,
            progress_every: Duration::from_secs(5),
            ground_truth: None,
            report: None,
        };
        let gen = Generator::new(scenario, seed, start);
        match run::run(gen, &target, &opts, stop).await {
            Ok(r) => r.report,
            Err(e) => panic!("the simulator failed: {e}"),
        }
    }
}

/// HTTP statuses other than 2xx, as "503 × 12, transport_error × 3".
pub fn non_2xx(report: &SendReport) -> String {
    let list: Vec<String> =
        report.responses.iter().filter(|(k, _)| !k.starts_with('2')).map(|(k, v)| format!("{k} × {v}")).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Adds `b`'s counts to `a`.
pub fn add(a: &mut SendReport, b: &SendReport) {
    a.sent += b.sent;
    a.accepted += b.accepted;
    a.refused += b.refused;
    a.unavailable += b.unavailable;
    a.retried += b.retried;
    a.batches += b.batches;
    for (k, v) in &b.responses {
        *a.responses.entry(k.clone()).or_default() += v;
    }
}

/// `n` approved events in `minute` (one a second from `from_second`), each with a fresh id,
/// cycling over `categories` (one category keeps them on one partition): the producer's JSON.
pub fn events(minute: i64, n: usize, from_second: i64, categories: &[&str]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let at =
                chrono::DateTime::from_timestamp_millis(minute + (from_second + i as i64) * 1000).unwrap_or_default();
            serde_json::json!({
                "transaction_id": uuid::Uuid::new_v4(),
                "occurred_at": at.to_rfc3339(),
                "status": "approved",
                "auth_code": "00",
                "amount_minor": 1250,
                "currency": "EUR",
                "category": categories[i % categories.len().max(1)],
                "merchant_id": "m-1",
            })
        })
        .collect();
    serde_json::Value::Array(items)
}

/// POSTs a batch to the producer; panics unless every item was accepted.
pub async fn post_all(http: &reqwest::Client, producer_url: &str, body: &serde_json::Value) {
    let url = format!("{producer_url}/ingest/transactions");
    let r = http.post(&url).json(body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.as_u16() == 202 || status.as_u16() == 200, "POST {url}: {status}: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenarios_are_valid_and_the_history_holds_its_spikes() {
        let h = history(16, 600.0);
        assert_eq!(h.duration_ms, 16 * 60_000);
        assert_eq!(h.incidents.len(), 3);
        let l = live(3000.0);
        assert_eq!(l.categories.len(), 8);
    }
}
