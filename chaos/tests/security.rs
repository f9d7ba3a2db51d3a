//! Security properties that are tests: no secret in any log, body limits and time limits on
//! the routes that take bodies, per-client rate limits, SQL only with bound parameters, and
//! every Kafka client built from the one `KafkaConfig` that carries the security settings.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use vigil_chaos::services::{strip_ansi, Kind};
use vigil_chaos::stack::{alertmanager_notification, Stack, StackOptions};
use vigil_chaos::{books, traffic};

/// A distinctive value per secret, so a match in a log can only be a leak.
fn secret(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Posts and returns the status.
async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_configured_secret_reaches_a_log_at_debug_level_help_or_a_config_error() {
    let s: BTreeMap<&str, String> = [
        ("API_KEYS", secret("apikey")),
        ("API_KEYS second", secret("apikey2")),
        ("WEBHOOK_TOKENS", secret("whtoken")),
        ("WEBHOOK_READ_TOKENS", secret("whread")),
        ("WEBHOOK_HMAC_SECRETS", secret("whhmac")),
        ("OUTBOUND_HMAC_SECRET", secret("outhmac")),
        ("KAFKA_SASL_PASSWORD", secret("saslpw")),
        ("KAFKA_SSL_KEY_PASSWORD", secret("sslkeypw")),
        ("DATABASE_URL password", secret("dbpw")),
    ]
    .into_iter()
    .collect();
    // Credentials a client presents that are wrong must not be logged either.
    let wrong = [secret("wrongkey"), secret("wrongtoken"), secret("wrongsig")];

    let mut opts = StackOptions::new("secrets");
    opts.own_infrastructure = false;
    opts.rust_log = "debug".into();
    opts.idle_timeout = "1s".into();
    opts.db_password = Some(s["DATABASE_URL password"].clone());
    opts.webhook_token = s["WEBHOOK_TOKENS"].clone();
    // Security settings in every service's configuration, unused with a plaintext broker.
    opts.common_env.push(("KAFKA_SASL_USERNAME".into(), "vigil".into()));
    opts.common_env.push(("KAFKA_SASL_PASSWORD".into(), s["KAFKA_SASL_PASSWORD"].clone()));
    opts.common_env.push(("KAFKA_SSL_KEY_PASSWORD".into(), s["KAFKA_SSL_KEY_PASSWORD"].clone()));
    opts.env.push((Kind::Producer, "API_KEYS".into(), format!("{},{}", s["API_KEYS"], s["API_KEYS second"])));
    opts.env.push((Kind::Webhook, "WEBHOOK_READ_TOKENS".into(), s["WEBHOOK_READ_TOKENS"].clone()));
    opts.env.push((Kind::Webhook, "WEBHOOK_HMAC_SECRETS".into(), s["WEBHOOK_HMAC_SECRETS"].clone()));
    opts.env.push((Kind::Webhook, "OUTBOUND_HMAC_SECRET".into(), s["OUTBOUND_HMAC_SECRET"].clone()));
    let mut stack = Stack::start(opts).await;
    let (producer, webhook) = (stack.url("producer"), stack.url("webhook"));
    let http = stack.http.clone();
    let key = &s["API_KEYS"];

    // The producer: accepted with the key, refused without it or with a wrong one. 120 equal
    // amounts (a baseline the amount rules judge by), then one 200 times larger: a critical
    // anomaly the webhook forwards, signed.
    let minute = (Utc::now().timestamp_millis() / 60_000 - 5) * 60_000;
    let mut batch = traffic::events(minute, 120, 0, &["grocery"]);
    let mut big = traffic::events(minute, 1, 121, &["grocery"]);
    big[0]["amount_minor"] = serde_json::json!(250_000);
    batch.as_array_mut().unwrap().push(big[0].clone());
    let ingest = format!("{producer}/ingest/transactions");
    assert_eq!(status(http.post(&ingest).bearer_auth(key).json(&batch)).await, 202);
    let one = traffic::events(minute, 1, 122, &["grocery"])[0].clone();
    let single = format!("{producer}/ingest/transaction");
    assert_eq!(status(http.post(&single).bearer_auth(&s["API_KEYS second"]).json(&one)).await, 202);
    assert_eq!(status(http.post(&single).bearer_auth(&wrong[0]).json(&one)).await, 401);
    assert_eq!(status(http.post(&single).json(&one)).await, 401);
    let mut invalid = one.clone();
    invalid["amount_minor"] = serde_json::json!(-5);
    invalid["transaction_id"] = serde_json::json!(uuid::Uuid::new_v4());
    assert_eq!(status(http.post(&single).bearer_auth(key).json(&invalid)).await, 422);
    let legacy = format!("{producer}/transactions");
    let _ = status(http.post(&legacy).bearer_auth(key).json(&serde_json::json!({"nonsense": true}))).await;

    // The webhook: Alertmanager with the token and with a wrong one; Grafana signed with the
    // HMAC secret and with a wrong signature; the lists with the read token and a wrong one.
    let am = format!("{webhook}/alertmanager/webhook");
    let note = alertmanager_notification("0123456789abcdef");
    assert_eq!(status(http.post(&am).bearer_auth(&s["WEBHOOK_TOKENS"]).json(&note)).await, 200);
    assert_eq!(status(http.post(&am).bearer_auth(&wrong[1]).json(&note)).await, 401);
    let grafana =
        std::fs::read(vigil_chaos::workspace_root().join("webhook/tests/fixtures/grafana-firing-one-alert.json"))
            .expect("the Grafana fixture");
    let ts = Utc::now().timestamp().to_string();
    let sig = vigil_webhook::auth::grafana_signature(s["WEBHOOK_HMAC_SECRETS"].as_bytes(), Some(&ts), &grafana);
    let gf = format!("{webhook}/grafana/webhook");
    let signed = |sig: &str| {
        http.post(&gf)
            .bearer_auth(&s["WEBHOOK_TOKENS"])
            .header("content-type", "application/json")
            .header("X-Grafana-Alerting-Signature", sig)
            .header("X-Grafana-Alerting-Signature-Timestamp", &ts)
            .body(grafana.clone())
    };
    assert_eq!(status(signed(&sig)).await, 200);
    assert_eq!(status(signed(&wrong[2])).await, 401);
    assert_eq!(status(http.get(format!("{webhook}/alerts")).bearer_auth(&s["WEBHOOK_READ_TOKENS"])).await, 200);
    assert_eq!(status(http.get(format!("{webhook}/grafana/alerts")).bearer_auth(&wrong[1])).await, 401);
    for name in stack.names() {
        let _ = stack.metrics(&name).await;
        let _ = stack.is_ready(&name).await;
    }

    // The anomaly reaches the receiver, signed with the outbound secret.
    let receiver = stack.receiver.as_ref().map(|r| r.received.clone()).unwrap();
    let forwarded = vigil_testkit::eventually(Duration::from_secs(60), || async {
        (!receiver.snapshot().is_empty()).then_some(())
    })
    .await;
    let counted = vigil_testkit::eventually(Duration::from_secs(60), || async {
        books::counted(&stack.pool).await.ok().map(|c| c.total()).filter(|n| *n >= 122)
    })
    .await
    .unwrap_or(-1);
    stack.shutdown();

    // --help and a configuration error, with the secrets in the environment.
    let mut extra_outputs = Vec::new();
    for (bin, env) in [
        ("producer", vec![("API_KEYS", s["API_KEYS"].clone())]),
        (
            "webhook",
            vec![
                ("WEBHOOK_TOKENS", s["WEBHOOK_TOKENS"].clone()),
                ("WEBHOOK_HMAC_SECRETS", s["WEBHOOK_HMAC_SECRETS"].clone()),
            ],
        ),
        ("sink", vec![("DATABASE_URL", format!("postgres://vigil:{}@db:notaport/vigil", s["DATABASE_URL password"]))]),
        ("detector", vec![("KAFKA_SASL_PASSWORD", s["KAFKA_SASL_PASSWORD"].clone())]),
    ] {
        for args in [&["--help"][..], &["--check-config"][..]] {
            let mut cmd = std::process::Command::new(vigil_chaos::service_bin(bin));
            cmd.args(args).env_clear().env("KAFKA_SECURITY_PROTOCOL", "sasl_ssl").env("KAFKA_BROKERS", "nohost");
            for (k, v) in &env {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            extra_outputs.push((
                format!("{bin} {}", args.join(" ")),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            ));
        }
    }

    // The scan.
    let mut leaks = Vec::new();
    let mut scanned = Vec::new();
    for file in stack.log_files() {
        let text = strip_ansi(&std::fs::read_to_string(&file).unwrap_or_default());
        scanned.push(format!(
            "{} ({} lines)",
            file.file_name().unwrap_or_default().to_string_lossy(),
            text.lines().count()
        ));
        leaks.extend(find(&text, &file.display().to_string(), &s, &wrong));
    }
    for (what, text) in &extra_outputs {
        leaks.extend(find(text, what, &s, &wrong));
    }
    println!("Scanned at RUST_LOG=debug: {}; and --help / --check-config of each binary.", scanned.join(", "));
    assert!(forwarded.is_some(), "the critical anomaly was never forwarded: the outbound path was not exercised");
    assert_eq!(counted, 122, "the accepted events are counted");
    assert!(leaks.is_empty(), "secrets in logs or output:\n{}", leaks.join("\n"));
}

fn find(text: &str, whence: &str, secrets: &BTreeMap<&str, String>, wrong: &[String]) -> Vec<String> {
    let mut leaks = Vec::new();
    let named = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(wrong.iter().map(|w| ("a wrong credential".to_string(), w)));
    for (name, value) in named {
        for line in text.lines().filter(|l| l.contains(value.as_str())) {
            leaks.push(format!("{whence}: {name}: {}", line.chars().take(300).collect::<String>()));
        }
    }
    leaks
}

/// Sends raw bytes on a fresh connection and returns the status line (or why there is none)
/// and how long the answer took.
fn raw_exchange(port: u16, head: &str, body: &[u8], hold: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(hold)).unwrap();
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut buf = [0u8; 512];
    let line = match s.read(&mut buf) {
        Ok(0) => "connection closed".to_string(),
        Ok(n) => String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string(),
        Err(e) => format!("no answer ({e})"),
    };
    (line, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_that_takes_a_body_limits_its_size_and_every_request_its_time() {
    let mut opts = StackOptions::new("limits");
    opts.own_infrastructure = false;
    opts.outbound = false;
    opts.env.push((Kind::Producer, "MAX_BODY_BYTES".into(), "65536".into()));
    opts.env.push((Kind::Producer, "PRODUCE_TIMEOUT".into(), "1s".into()));
    opts.env.push((Kind::Producer, "REQUEST_TIMEOUT".into(), "2s".into()));
    // A verdict wait plus PRODUCE_TIMEOUT must fit in REQUEST_TIMEOUT: no wait at all here.
    opts.env.push((Kind::Producer, "VERDICT_WAIT".into(), "0s".into()));
    opts.env.push((Kind::Producer, "VERDICT_MAX_WAIT".into(), "0s".into()));
    opts.env.push((Kind::Webhook, "WEBHOOK_MAX_BODY_BYTES".into(), "65536".into()));
    opts.env.push((Kind::Webhook, "REQUEST_TIMEOUT".into(), "2s".into()));
    let mut stack = Stack::start(opts).await;
    let port = |name: &str| stack.lock().get(name).map(|s| s.port).unwrap();
    let token = stack.opts.webhook_token.clone();
    let big = vec![b' '; 100_000];
    let mut findings = Vec::new();
    let mut failures = Vec::new();

    // 413 for every route that takes a body, with Content-Length and chunked.
    let routes: [(&str, &str, Option<&str>); 5] = [
        ("producer", "/ingest/transaction", None),
        ("producer", "/ingest/transactions", None),
        ("producer", "/transactions", None),
        ("webhook", "/grafana/webhook", Some(&token)),
        ("webhook", "/alertmanager/webhook", Some(&token)),
    ];
    for (svc, path, auth) in routes {
        let auth = auth.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n",
            big.len()
        );
        let (line, _) = tokio::task::block_in_place(|| raw_exchange(port(svc), &head, &big, Duration::from_secs(10)));
        let chunked = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let mut body = format!("{:x}\r\n", big.len()).into_bytes();
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let (chunked_line, _) =
            tokio::task::block_in_place(|| raw_exchange(port(svc), &chunked, &body, Duration::from_secs(10)));
        findings.push(format!("{svc} POST {path}, 100 kB: {line} / chunked: {chunked_line}"));
        for l in [&line, &chunked_line] {
            if !l.contains(" 413 ") {
                failures.push(format!("{svc} POST {path} with 100 kB answered {l:?}, not 413"));
            }
        }
    }

    // A body that stops half-way: answered 408 within REQUEST_TIMEOUT (2 s), not held open.
    for (svc, path, auth) in routes {
        let auth = auth.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}content-length: 1000\r\nconnection: close\r\n\r\n"
        );
        let (line, took) = tokio::task::block_in_place(|| {
            raw_exchange(port(svc), &head, b"[{\"occurred_at\"", Duration::from_secs(15))
        });
        findings.push(format!("{svc} POST {path}, body stalled: {line} after {:.1} s", took.as_secs_f64()));
        if !line.contains(" 408 ") || took > Duration::from_secs(6) {
            failures.push(format!("{svc} POST {path} with a stalled body: {line:?} after {:.1} s", took.as_secs_f64()));
        }
    }

    // The operational routes take no body: a POST is refused without reading one.
    for svc in ["detector-1", "sink", "producer", "webhook"] {
        let head =
            format!("POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", big.len());
        let (line, _) = tokio::task::block_in_place(|| raw_exchange(port(svc), &head, &big, Duration::from_secs(10)));
        findings.push(format!("{svc} POST /metrics, 100 kB: {line}"));
        if !line.contains(" 405 ") {
            failures.push(format!("{svc} POST /metrics answered {line:?}, not 405"));
        }
    }

    // Headers that never end (slowloris): how long each server holds the connection. Measured
    // and printed, not asserted: no service sets a header read timeout today (REQUEST_TIMEOUT
    // starts once a request is parsed), a gap RELIABILITY.md records.
    let mut holds = Vec::new();
    for svc in ["producer", "webhook", "detector-1", "sink"] {
        let p = port(svc);
        holds.push((
            svc,
            tokio::task::spawn_blocking(move || {
                raw_exchange(p, "GET /health HTTP/1.1\r\nhost: x\r\n", b"", Duration::from_secs(15))
            }),
        ));
    }
    for (svc, h) in holds {
        let (line, took) = h.await.unwrap();
        let held =
            if took >= Duration::from_secs(15) { "still open (no header read timeout)".to_string() } else { line };
        findings.push(format!("{svc} headers never finished: {held} after {:.1} s", took.as_secs_f64()));
    }
    stack.shutdown();
    println!("Limits:\n  {}", findings.join("\n  "));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_producer_rate_limits_each_client_on_its_own() {
    let (k1, k2) = (secret("ratekey"), secret("ratekey2"));
    let mut opts = StackOptions::new("rate-limits");
    opts.own_infrastructure = false;
    opts.outbound = false;
    opts.env.push((Kind::Producer, "API_KEYS".into(), format!("{k1},{k2}")));
    opts.env.push((Kind::Producer, "RATE_LIMIT_PER_SECOND".into(), "5".into()));
    opts.env.push((Kind::Producer, "RATE_LIMIT_BURST".into(), "20".into()));
    let mut stack = Stack::start(opts).await;
    let url = format!("{}/ingest/transactions", stack.url("producer"));
    let minute = (Utc::now().timestamp_millis() / 60_000 - 5) * 60_000;
    let http = stack.http.clone();
    let first =
        http.post(&url).bearer_auth(&k1).json(&traffic::events(minute, 20, 0, &["grocery"])).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 202, "the burst is allowed");
    let over =
        http.post(&url).bearer_auth(&k1).json(&traffic::events(minute, 10, 20, &["grocery"])).send().await.unwrap();
    let over_status = over.status().as_u16();
    let retry_after = over.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let other =
        http.post(&url).bearer_auth(&k2).json(&traffic::events(minute, 10, 30, &["grocery"])).send().await.unwrap();
    let other_status = other.status().as_u16();
    let metrics = stack.metrics("producer").await;
    stack.shutdown();
    println!("over the limit: {over_status} (Retry-After {retry_after:?}); another client meanwhile: {other_status}");
    assert_eq!(over_status, 429, "the same client over its burst is refused");
    assert!(retry_after.is_some(), "with Retry-After");
    assert_eq!(other_status, 202, "another client has its own budget");
    assert!(
        books::metric_sum(&metrics, "vigil_producer_events_total", &[("reason", "rate_limited")]) >= 10.0,
        "{metrics}"
    );
}

/// The crates whose `src/` is production code.
const PRODUCTION: [&str; 7] = ["common", "schemas", "producer", "detector", "sink", "webhook", "simulator"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Production source with `#[cfg(test)]` modules cut off (they sit at the end of a file).
fn production_sources() -> Vec<(String, String)> {
    let root = vigil_chaos::workspace_root();
    let mut files = Vec::new();
    for c in PRODUCTION {
        rust_files(&root.join(c).join("src"), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "tests"))
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let prod = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            (f.strip_prefix(&root).unwrap_or(&f).display().to_string(), prod)
        })
        .collect()
}

#[test]
fn sql_is_built_only_from_constants_and_bound_parameters() {
    // Every place production code builds SQL text at run time, reviewed: what it interpolates
    // and why that is safe. A new one fails this test until it is reviewed and listed.
    let reviewed: [(&str, &str); 4] = [
        ("sink/src/retention.rs", "format! of a table name from the constant MINUTE_TABLES; values bound"),
        (
            "sink/src/transactions.rs",
            "format! of a day partition's name and bounds from a chrono NaiveDate (digits only); values bound",
        ),
        ("webhook/src/silences/store.rs", "format! of the constant column list COLUMNS; values bound"),
        ("webhook/src/listing/store.rs", "QueryBuilder: push of literal SQL, every value push_bind"),
    ];
    // A format! whose literal starts like a SQL statement (the code base writes SQL in capitals).
    let sql = regex::Regex::new(
        r#"format!\(\s*r?#?"\s*(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE|DROP|ALTER|TRUNCATE|WITH)\b"#,
    )
    .unwrap();
    let literal_push = regex::Regex::new(r#"\.push\(\s*[^"\s]"#).unwrap();
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, text) in production_sources() {
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let dynamic_query = flat.contains("query(&format!")
            || flat.contains("query_as(&format!")
            || flat.contains("query_scalar(&format!")
            || flat.contains("query(format!");
        let formatted_sql = sql.is_match(&flat);
        let builder = flat.contains("QueryBuilder");
        // QueryBuilder pushes must be literals: `.push(` followed by a quote.
        let non_literal_push = builder && literal_push.is_match(&flat);
        if dynamic_query || formatted_sql || builder {
            found.entry(file.clone()).or_default().push(format!(
                "{}{}{}",
                if dynamic_query || formatted_sql { "format!-built SQL " } else { "" },
                if builder { "QueryBuilder " } else { "" },
                if non_literal_push { "with a non-literal push" } else { "" }
            ));
        }
    }
    println!("Run-time SQL in production code:");
    for (file, what) in &found {
        let note = reviewed.iter().find(|(f, _)| f == file).map(|(_, n)| *n).unwrap_or("NOT REVIEWED");
        println!("  {file}: {} — {note}", what.join(", "));
    }
    let unreviewed: Vec<&String> = found.keys().filter(|f| !reviewed.iter().any(|(r, _)| r == f)).collect();
    assert!(unreviewed.is_empty(), "SQL built at run time in {unreviewed:?}: review it and list it here");
    assert!(
        !found.values().flatten().any(|w| w.contains("non-literal push")),
        "a QueryBuilder pushes something other than a literal: {found:?}"
    );
}

#[test]
fn every_kafka_client_is_built_from_kafka_config() {
    // rdkafka clients come from a ClientConfig; the only one made from scratch is
    // KafkaConfig::client_config, which every producer, consumer and admin config extends.
    let mut offenders = Vec::new();
    let root = vigil_chaos::workspace_root();
    let mut files = Vec::new();
    for c in PRODUCTION.iter().chain(["bench", "testkit", "e2e", "ops-tests", "chaos"].iter()) {
        rust_files(&root.join(c), &mut files);
    }
    for f in files {
        let rel = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if rel == "common/src/kafka.rs" || rel.starts_with("chaos/tests/security.rs") {
            continue;
        }
        if text.contains("ClientConfig::new") || text.contains("ClientConfig::default") {
            offenders.push(rel);
        }
    }
    assert!(offenders.is_empty(), "Kafka clients configured outside KafkaConfig: {offenders:?}");
    let kafka = std::fs::read_to_string(root.join("common/src/kafka.rs")).unwrap();
    for needle in ["pub fn producer_config", "pub fn consumer_config", "let mut c = self.client_config();"] {
        assert!(kafka.contains(needle), "common/src/kafka.rs no longer has {needle:?}");
    }
}
