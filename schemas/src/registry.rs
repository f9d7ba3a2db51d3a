//! A minimal Confluent-compatible schema registry client (Redpanda has one built in).
//! Which subject each schema goes under is [`crate::subjects`]' business.
//!
//! Managed registries (Confluent Cloud, Aiven) want HTTPS with basic auth: [`RegistryOptions`]
//! gives each request a timeout, retries on what may pass (a connection refused or timed out, 429,
//! 5xx), credentials (also taken from the URL's `user:password@`, which is then dropped from every
//! message) and a CA of the operator's own.

use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Clone)]
pub struct SchemaRegistry {
    /// Without credentials: safe to print.
    base: String,
    http: reqwest::Client,
    basic_auth: Option<(String, String)>,
    retries: u32,
    retry_initial: Duration,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("base", &self.base)
            .field("basic_auth_user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("retries", &self.retries)
            .finish()
    }
}

/// How the client talks to the registry.
#[derive(Clone)]
pub struct RegistryOptions {
    /// Each request's whole time, connection included.
    pub timeout: Duration,
    /// Further attempts after a failure that may pass; 0: one attempt.
    pub retries: u32,
    /// The wait before the first retry, doubled before each next one.
    pub retry_initial: Duration,
    /// User name and password for HTTP basic auth (Confluent Cloud: the API key and secret).
    pub basic_auth: Option<(String, String)>,
    /// PEM CA certificates trusted besides the built-in roots (a private registry's CA).
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            timeout: Duration::from_secs(10),
            retries: 3,
            retry_initial: Duration::from_millis(200),
            basic_auth: None,
            ca_pem: None,
        }
    }
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("basic_auth_user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// An error with its causes ("operation timed out", "invalid peer certificate: UnknownIssuer").
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `url` without its `user:password@`, and those credentials.
fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let trimmed = url.trim().trim_end_matches('/');
    let Some((scheme, rest)) = trimmed.split_once("://") else { return (trimmed.to_owned(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let path = &rest[authority_end..];
            (format!("{scheme}://{host}{path}"), Some((percent_decode(user), percent_decode(password))))
        }
        None => (trimmed.to_owned(), None),
    }
}

/// `%XX` escapes decoded (credentials in a URL are percent-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SchemaRegistry {
    /// The registry at `base_url` with the default options (10 s timeout, 3 retries); basic-auth
    /// credentials may be given in the URL (`https://key:secret@host`).
    pub fn new(base_url: &str) -> Self {
        // The default options hold no CA, so building the client cannot fail on them.
        Self::with_options(base_url, RegistryOptions::default()).unwrap_or_else(|_| SchemaRegistry {
            base: split_credentials(base_url).0,
            http: reqwest::Client::new(),
            basic_auth: split_credentials(base_url).1,
            retries: 0,
            retry_initial: Duration::ZERO,
        })
    }

    /// The registry at `base_url` with `options`; explicit credentials win over the URL's. Fails
    /// on a CA that is not PEM.
    pub fn with_options(base_url: &str, options: RegistryOptions) -> Result<Self> {
        let (base, from_url) = split_credentials(base_url);
        let mut builder = reqwest::Client::builder().timeout(options.timeout).connect_timeout(options.timeout);
        if let Some(pem) = &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Registry(format!("the schema registry CA is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Registry("the schema registry CA holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| Error::Registry(format!("cannot create the HTTP client: {e}")))?;
        Ok(SchemaRegistry {
            base,
            http,
            basic_auth: options.basic_auth.or(from_url),
            retries: options.retries,
            retry_initial: options.retry_initial,
        })
    }

    /// The registry's URL, without credentials.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends the request `make` builds (with the credentials), retrying what may pass (no
    /// answer in time, no connection, 429, 5xx) after 1, 2, 4… times `retry_initial`; a success
    /// or the last failure, named `what` (the method and URL, never the credentials).
    async fn send(&self, what: &str, make: impl Fn() -> reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let mut wait = self.retry_initial;
        let mut attempt = 0;
        loop {
            let mut req = make();
            if let Some((user, password)) = &self.basic_auth {
                req = req.basic_auth(user, Some(password));
            }
            let outcome = req.send().await;
            let again = attempt < self.retries
                && match &outcome {
                    Ok(r) => r.status().is_server_error() || r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS,
                    Err(e) => e.is_timeout() || e.is_connect(),
                };
            if !again {
                let tries = if attempt == 0 { String::new() } else { format!(" (after {} attempts)", attempt + 1) };
                return match outcome {
                    Ok(r) if r.status().is_success() => Ok(r),
                    Ok(r) => {
                        let status = r.status();
                        let text: String = r.text().await.unwrap_or_default().chars().take(300).collect();
                        Err(Error::Registry(format!("{what}: {status}{tries}: {text}")))
                    }
                    Err(e) => Err(Error::Registry(format!("{what}: {}{tries}", chain(&e)))),
                };
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }

    /// Registers `schema` under `subject` (idempotent in the registry) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{}/versions", self.base, subject);
        let body = serde_json::json!({ "schema": schema });
        let resp = self
            .send(&format!("POST {url}"), || {
                self.http.post(&url).header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE).json(&body)
            })
            .await?;
        let parsed: IdResponse = resp.json().await.map_err(|e| Error::Registry(format!("POST {url}: {e}")))?;
        Ok(parsed.id)
    }

    /// Sets `subject`'s compatibility mode (`PUT /config/{subject}`), e.g. `BACKWARD`; the
    /// registry then refuses a new version under it that breaks that rule.
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<()> {
        let url = format!("{}/config/{}", self.base, subject);
        let body = serde_json::json!({ "compatibility": level });
        self.send(&format!("PUT {url}"), || {
            self.http.put(&url).header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE).json(&body)
        })
        .await?;
        Ok(())
    }

    /// Fetches the schema text registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let resp = self.send(&format!("GET {url}"), || self.http.get(&url)).await?;
        let parsed: SchemaResponse = resp.json().await.map_err(|e| Error::Registry(format!("GET {url}: {e}")))?;
        Ok(parsed.schema)
    }
}
