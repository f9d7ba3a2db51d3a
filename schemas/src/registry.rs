//! A minimal Confluent-compatible schema registry client (Redpanda has one built in).
//! Which subject each schema goes under is [`crate::subjects`]' business.

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    base: String,
    http: reqwest::Client,
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

impl SchemaRegistry {
    pub fn new(base_url: &str) -> Self {
        SchemaRegistry { base: base_url.trim_end_matches('/').to_owned(), http: reqwest::Client::new() }
    }

    /// Registers `schema` under `subject` (idempotent in the registry) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{}/versions", self.base, subject);
        let body = serde_json::json!({ "schema": schema });
        let resp = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Registry(format!("POST {url}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::Registry(format!("POST {url}: {status}: {text}")));
        }
        let parsed: IdResponse = resp.json().await.map_err(|e| Error::Registry(format!("POST {url}: {e}")))?;
        Ok(parsed.id)
    }

    /// Sets `subject`'s compatibility mode (`PUT /config/{subject}`), e.g. `BACKWARD`; the
    /// registry then refuses a new version under it that breaks that rule.
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<()> {
        let url = format!("{}/config/{}", self.base, subject);
        let resp = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await
            .map_err(|e| Error::Registry(format!("PUT {url}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::Registry(format!("PUT {url}: {status}: {text}")));
        }
        Ok(())
    }

    /// Fetches the schema text registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let resp = self.http.get(&url).send().await.map_err(|e| Error::Registry(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Registry(format!("GET {url}: {status}")));
        }
        let parsed: SchemaResponse = resp.json().await.map_err(|e| Error::Registry(format!("GET {url}: {e}")))?;
        Ok(parsed.schema)
    }
}
