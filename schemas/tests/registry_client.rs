//! The schema registry client (`SchemaRegistry`) against a local HTTP server that
//! answers as told: retries on 503, 429 and a refused connection, none on a 4xx; a timeout per
//! request; HTTP basic auth (explicit or from the URL, never in an error); HTTPS through a TLS
//! terminator with a CA of the test's own, refused without it.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_schemas::{RegistryOptions, SchemaRegistry};
use vigil_testkit::tls::{TestPki, TlsTerminator};

const USER: &str = "reg-user";
const PASSWORD: &str = "reg-p@ss/1";
/// `Basic base64("reg-user:reg-p@ss/1")`, computed outside the code under test.
const AUTHORIZATION: &str = "Basic cmVnLXVzZXI6cmVnLXBAc3MvMQ==";

/// What the server does with each request.
#[derive(Clone, Copy)]
enum Script {
    /// 503 to the first `n` requests, then the schema.
    FailFirst(usize, u16),
    /// Never answers within `Duration`.
    Slow(Duration),
    /// The schema only with the right `Authorization`, 401 otherwise.
    RequireAuth,
    /// Always this status.
    Always(u16),
}

struct Server {
    port: u16,
    requests: Arc<AtomicUsize>,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

const SCHEMA: &str = r#"{"schema":"{\"type\":\"string\"}"}"#;

async fn serve(script: Script) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let authorizations = Arc::new(Mutex::new(Vec::new()));
    let (count, auths) = (requests.clone(), authorizations.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (count, auths) = (count.clone(), auths.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let auth = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_owned())
                });
                let n = count.fetch_add(1, Ordering::SeqCst);
                auths.lock().unwrap().push(auth.clone());
                let status = match script {
                    Script::FailFirst(k, status) if n < k => status,
                    Script::FailFirst(..) => 200,
                    Script::Slow(d) => {
                        tokio::time::sleep(d).await;
                        200
                    }
                    Script::RequireAuth if auth.as_deref() == Some(AUTHORIZATION) => 200,
                    Script::RequireAuth => 401,
                    Script::Always(s) => s,
                };
                let body = if status == 200 { SCHEMA.to_owned() } else { format!(r#"{{"error_code":{status}}}"#) };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    Server { port, requests, authorizations }
}

fn options(retries: u32) -> RegistryOptions {
    RegistryOptions { retries, retry_initial: Duration::from_millis(20), ..RegistryOptions::default() }
}

#[tokio::test]
async fn a_503_and_a_429_are_retried_until_the_schema_comes() {
    for status in [503, 429] {
        let s = serve(Script::FailFirst(2, status)).await;
        let r = SchemaRegistry::with_options(&format!("http://127.0.0.1:{}", s.port), options(3)).unwrap();
        assert_eq!(r.schema_by_id(1).await.unwrap(), r#"{"type":"string"}"#);
        assert_eq!(s.requests.load(Ordering::SeqCst), 3, "two failures and the success");
    }
}

#[tokio::test]
async fn retries_end_with_an_error_naming_the_status_and_the_attempts() {
    let s = serve(Script::Always(503)).await;
    let r = SchemaRegistry::with_options(&format!("http://127.0.0.1:{}", s.port), options(2)).unwrap();
    let err = r.schema_by_id(7).await.unwrap_err().to_string();
    assert!(err.contains("503") && err.contains("after 3 attempts") && err.contains("/schemas/ids/7"), "{err}");
    assert_eq!(s.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let s = serve(Script::Always(404)).await;
    let r = SchemaRegistry::with_options(&format!("http://127.0.0.1:{}", s.port), options(3)).unwrap();
    let err = r.schema_by_id(1).await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    assert_eq!(s.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    let port = vigil_testkit::free_port();
    let r = SchemaRegistry::with_options(&format!("http://127.0.0.1:{port}"), options(2)).unwrap();
    let err = r.schema_by_id(1).await.unwrap_err().to_string();
    assert!(err.contains("after 3 attempts"), "{err}");
}

#[tokio::test]
async fn a_registry_that_does_not_answer_in_time_costs_the_timeout_per_attempt() {
    let s = serve(Script::Slow(Duration::from_secs(30))).await;
    let opts = RegistryOptions { timeout: Duration::from_millis(300), ..options(1) };
    let r = SchemaRegistry::with_options(&format!("http://127.0.0.1:{}", s.port), opts).unwrap();
    let started = Instant::now();
    let err = r.schema_by_id(1).await.unwrap_err().to_string();
    let took = started.elapsed();
    assert!(err.contains("timed out") && err.contains("after 2 attempts"), "{err}");
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn basic_auth_is_sent_from_the_options_or_the_url_and_never_printed() {
    let s = serve(Script::RequireAuth).await;
    let explicit = RegistryOptions { basic_auth: Some((USER.into(), PASSWORD.into())), ..options(0) };
    let r = SchemaRegistry::with_options(&format!("http://127.0.0.1:{}", s.port), explicit).unwrap();
    r.schema_by_id(1).await.unwrap();
    assert!(!format!("{r:?}").contains(PASSWORD));

    // Credentials in the URL, percent-encoded as URLs carry them; dropped from the URL itself.
    let from_url = SchemaRegistry::new(&format!("http://{USER}:reg-p%40ss%2F1@127.0.0.1:{}/", s.port));
    from_url.schema_by_id(1).await.unwrap();
    assert_eq!(from_url.url(), format!("http://127.0.0.1:{}", s.port));

    // Without them: 401, not retried (a refusal), and the error names no secret.
    let wrong = RegistryOptions { basic_auth: Some((USER.into(), "not-it".into())), ..options(3) };
    let r = SchemaRegistry::with_options(&format!("http://127.0.0.1:{}", s.port), wrong).unwrap();
    let err = r.schema_by_id(1).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let seen = s.authorizations.lock().unwrap().clone();
    assert_eq!(seen, vec![Some(AUTHORIZATION.to_owned()), Some(AUTHORIZATION.to_owned()), seen[2].clone()]);
    assert_ne!(seen[2].as_deref(), Some(AUTHORIZATION));
    let leaky = SchemaRegistry::new(&format!("http://{USER}:reg-p%40ss%2F1@127.0.0.1:{}", vigil_testkit::free_port()));
    let err = leaky.schema_by_id(1).await.unwrap_err().to_string();
    assert!(!err.contains("reg-p") && !format!("{leaky:?}").contains("reg-p"), "{err}");
}

#[tokio::test]
async fn https_is_verified_against_the_configured_ca() {
    let pki = TestPki::generate();
    let other = TestPki::generate();
    let s = serve(Script::Always(200)).await;
    let tls = TlsTerminator::start(&pki, s.port, false);
    let url = format!("https://127.0.0.1:{}", tls.port);

    let trusted = RegistryOptions { ca_pem: Some(std::fs::read(&pki.ca).unwrap()), ..options(0) };
    let r = SchemaRegistry::with_options(&url, trusted).unwrap();
    r.schema_by_id(1).await.unwrap_or_else(|e| panic!("{e}\n{}", tls.log()));

    // The built-in roots do not know the test's CA; another CA does not sign the server.
    let err = SchemaRegistry::with_options(&url, options(0)).unwrap().schema_by_id(1).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let wrong = RegistryOptions { ca_pem: Some(std::fs::read(&other.ca).unwrap()), ..options(0) };
    let err = SchemaRegistry::with_options(&url, wrong).unwrap().schema_by_id(1).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(s.requests.load(Ordering::SeqCst), 1, "only the verified connection reached the registry");

    let not_pem = RegistryOptions { ca_pem: Some(b"not a certificate".to_vec()), ..options(0) };
    assert!(SchemaRegistry::with_options(&url, not_pem).is_err());
}
