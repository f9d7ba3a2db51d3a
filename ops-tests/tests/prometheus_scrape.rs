//! A real Prometheus (Debian's `prometheus`, started here on a free port with its own storage in
//! a temporary folder), configured from deploy/prometheus/prometheus.local.yml and the shared
//! rules, scraping the four services running in-process on fresh topics and a fresh database.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use futures::FutureExt;
use regex::Regex;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vigil_e2e::{Pipeline, Running};
use vigil_ops_tests::{repo, tools};

/// The Prometheus process; killed when dropped, so a failing test leaves nothing behind.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// prometheus.local.yml with each job's target moved to the port its service got, scraped
/// every second; the rules are copied beside it so `rule_files` finds them as in the repo.
fn start_prometheus(ports: &[(&str, u16)]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = repo::yaml("deploy/prometheus/prometheus.local.yml");
    cfg["global"]["scrape_interval"] = "1s".into();
    cfg["global"]["scrape_timeout"] = "1s".into();
    cfg["global"]["evaluation_interval"] = "1s".into();
    let port = free_port();
    let mut jobs = BTreeSet::new();
    for job in cfg["scrape_configs"].as_sequence_mut().unwrap() {
        let name = job["job_name"].as_str().unwrap().to_owned();
        let target = match ports.iter().find(|(n, _)| *n == name) {
            Some((_, p)) => format!("127.0.0.1:{p}"),
            None if name == "prometheus" => format!("127.0.0.1:{port}"),
            None => panic!("prometheus.local.yml scrapes {name}, which this test does not run"),
        };
        job["static_configs"] = serde_yaml::from_str(&format!("[{{targets: [\"{target}\"]}}]")).unwrap();
        jobs.insert(name);
    }
    for (name, _) in ports {
        assert!(jobs.contains(*name), "prometheus.local.yml does not scrape {name}");
    }
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for f in repo::files("deploy/prometheus/rules", ".yml") {
        std::fs::copy(repo::path(&f), dir.path().join("rules").join(f.rsplit('/').next().unwrap())).unwrap();
    }
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let child = Command::new(tools::prometheus())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prometheus starts");
    Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
}

async fn query(http: &reqwest::Client, prom: &Prometheus, q: &str) -> Value {
    let r = http.get(format!("{}/api/v1/query", prom.url)).query(&[("query", q)]).send().await;
    match r {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn start_webhook(db_url: &str) -> Running {
    let args = vigil_webhook::Args::parse_from([
        "webhook",
        "--bind=127.0.0.1:0",
        &format!("--database-url={db_url}"),
        "--token=ops-tests-webhook-token",
        &format!("--kafka-brokers={}", vigil_testkit::brokers()),
    ]);
    let app = vigil_webhook::Application::build(vigil_webhook::Config::from_args(args).unwrap()).await.unwrap();
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Running::new(port, stop, task)
}

/// Metric names a service exposes, from the `# TYPE` lines of its /metrics (present even for
/// a family with no series yet), with the suffixes Prometheus stores.
async fn exported_names(http: &reqwest::Client, url: &str) -> BTreeSet<String> {
    let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// Names a service registers (`Metrics::register("name", ...)` in `<service>/src`, plus the
/// shared HTTP metrics), with every suffix Prometheus may store them under.
fn registered_names(service: &str) -> BTreeSet<String> {
    fn sources(dir: &std::path::Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut code = String::new();
    sources(&repo::path(&format!("{service}/src")), &mut code);
    let mut names: Vec<String> =
        Regex::new(r#"register\(\s*"([a-z0-9_]+)""#).unwrap().captures_iter(&code).map(|c| c[1].to_owned()).collect();
    if code.contains("HttpMetrics::new") {
        names.extend(["http_requests".to_owned(), "http_request_duration_seconds".to_owned()]);
    }
    assert!(!names.is_empty(), "{service} registers no metric");
    let mut out = BTreeSet::new();
    for n in names {
        for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
            out.insert(format!("vigil_{service}_{n}{suffix}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_all_four_services_and_counts_the_events_sent() {
    let p = Pipeline::start(6).await;
    let webhook = start_webhook(&p.db.url).await;
    // The services run blocking consumer loops: stop them even when a check fails, or the
    // runtime would wait for them forever instead of reporting the failure.
    let result = AssertUnwindSafe(scrape_checks(&p, &webhook)).catch_unwind().await;
    webhook.stop().await.unwrap();
    p.stop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn scrape_checks(p: &Pipeline, webhook: &Running) {
    let services = [
        ("producer", p.producer.port),
        ("detector", p.detector.port),
        ("sink", p.sink.port),
        ("webhook", webhook.port),
    ];
    let prom = start_prometheus(&services);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // 23 accepted events, and 2 refused (the client's fault), which must not count.
    let accepted = 23;
    for i in 0..accepted + 2 {
        let body = json!({
            "occurred_at": Utc::now().to_rfc3339(),
            "status": if i % 5 == 0 { "denied" } else { "approved" },
            "auth_code": if i % 5 == 0 { "05" } else { "00" },
            "amount_minor": if i >= accepted { -1 } else { 1000 + i },
            "currency": "EUR",
            "category": "grocery",
            "merchant_id": format!("m-{}", i % 3),
        });
        let r = p.http.post(format!("{}/ingest/transaction", p.producer.url())).json(&body).send().await.unwrap();
        assert_eq!(r.status().is_success(), i < accepted, "event {i}: {}", r.status());
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let (ok, last) = loop {
        let up = query(&http, &prom, r#"up{job=~"producer|detector|sink|webhook"}"#).await;
        let events = query(&http, &prom, r#"sum(vigil_producer_events_total{outcome="accepted"})"#).await;
        let up_jobs: BTreeSet<String> = up["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["value"][1] == "1")
            .map(|r| r["metric"]["job"].as_str().unwrap_or("").to_owned())
            .collect();
        let counted = events["data"]["result"][0]["value"][1].as_str().map(str::to_owned);
        if up_jobs.len() == 4 && counted.as_deref() == Some(accepted.to_string().as_str()) {
            break (true, (up, events));
        }
        if std::time::Instant::now() > deadline {
            break (false, (up, events));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        ok,
        "Prometheus never saw 4 targets up and {accepted} accepted events:\nup: {}\nevents: {}",
        last.0, last.1
    );

    // The detector's counters under their exact names (the rules and the README's table for the
    // older design's clients read them): every accepted event counted once under its category
    // and status, and the anomaly counters scraped (each rule and severity present from the
    // start, at 0 while nothing fired).
    let counted = r#"sum by (status) (vigil_detector_transactions_total{job="detector",category="grocery"})"#;
    let denied = (0..accepted).filter(|i| i % 5 == 0).count() as i64;
    let want = [("approved", accepted - denied), ("denied", denied)];
    let want: BTreeSet<(String, String)> = want.iter().map(|(s, n)| (s.to_string(), n.to_string())).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let r = query(&http, &prom, counted).await;
        let got: BTreeSet<(String, String)> = r["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (s["metric"]["status"].as_str().unwrap_or("").into(), s["value"][1].as_str().unwrap_or("").into()))
            .filter(|(_, v): &(String, String)| v != "0")
            .collect();
        if got == want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{counted}: expected {want:?}, Prometheus answered {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for name in [
        "vigil_detector_anomalies_opened_total",
        "vigil_detector_anomaly_escalations_total",
        "vigil_detector_amount_scores_below_min_total",
    ] {
        let r = query(&http, &prom, &format!(r#"count({name}{{job="detector"}})"#)).await;
        let series = r["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<u32>().ok());
        assert!(series.is_some_and(|n| n > 0), "{name} not scraped: {r}");
    }
    let r = query(
        &http,
        &prom,
        r#"count(vigil_detector_anomalies_opened_total{job="detector",rule="volume_drop",severity="critical"})"#,
    )
    .await;
    assert_eq!(r["data"]["result"][0]["value"][1], "1", "each rule and severity is one series: {r}");

    // Every metric the dashboard and the rules use is one a service exports: seen on its
    // /metrics, or registered in its code (a family shows on /metrics only once it has a
    // series, and errors or dead letters may have none yet).
    let mut exported = BTreeSet::new();
    for (svc, port) in services {
        exported.extend(exported_names(&http, &format!("http://127.0.0.1:{port}")).await);
        exported.extend(registered_names(svc));
    }
    let name = Regex::new(r"\bvigil_[a-z0-9_]+\b").unwrap();
    let mut used = BTreeSet::new();
    let dash = repo::json("grafana/dashboards/pipeline-health.json");
    let exprs: Vec<String> =
        vigil_ops_tests::grafana::dashboard_queries("pipeline-health", &dash).into_iter().map(|q| q.text).collect();
    for e in &exprs {
        used.extend(name.find_iter(e).map(|m| m.as_str().to_owned()));
    }
    for f in repo::files("deploy/prometheus/rules", ".yml") {
        let text = repo::read(&f);
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            used.extend(name.find_iter(line).map(|m| m.as_str().to_owned()));
        }
    }
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "used by the dashboard or rules but exported by no service: {missing:?}");

    // Every dashboard query is valid PromQL that this Prometheus evaluates.
    for e in exprs {
        let q = e.replace("$__rate_interval", "1m").replace("$__interval", "1m");
        let r = query(&http, &prom, &q).await;
        assert_eq!(r["status"], "success", "{q}: {r}");
    }
    // The recording rule the lag panel reads is evaluated.
    let rules = http.get(format!("{}/api/v1/rules", prom.url)).send().await.unwrap().json::<Value>().await.unwrap();
    let groups: Vec<&str> =
        rules["data"]["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert!(groups.contains(&"vigil-recording") && groups.contains(&"vigil-alerts"), "{groups:?}");

    drop(prom);
}
