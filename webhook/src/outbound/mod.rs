//! The outbound forwarder: detector anomalies from Kafka to external webhooks.
//!
//! `consumer` turns each anomaly state that first reaches a severity at or above the minimum
//! into one pending row per URL in `outbound_deliveries` (then stores its offset); one `worker` per URL delivers its rows, signed
//! (`signature`), retried with backoff and jitter (`retry`) until delivered or given up.

pub mod consumer;
pub mod payload;
pub mod retry;
pub mod signature;
pub mod store;
pub mod worker;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vigil_schemas::Codec;

use self::consumer::AnomalyConsumer;
use self::worker::Worker;
use crate::config::OutboundConfig;
use crate::metrics::WebhookMetrics;
use crate::Config;

/// The consumer and its workers, built but not yet running.
pub struct Outbound {
    consumer: AnomalyConsumer,
    workers: Vec<Worker>,
}

impl Outbound {
    pub fn build(config: &Config, out: &OutboundConfig, pool: PgPool, metrics: WebhookMetrics) -> crate::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("vigil-webhook/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(out.timeout)
            .build()?;
        let workers: Vec<Worker> = out
            .urls
            .iter()
            .map(|url| Worker {
                url: url.clone(),
                pool: pool.clone(),
                client: client.clone(),
                secret: out.hmac_secret.clone(),
                policy: out.retry,
                timeout: out.timeout,
                wake: Arc::new(Notify::new()),
                metrics: metrics.clone(),
            })
            .collect();
        let consumer = AnomalyConsumer {
            consumer: consumer::subscribe(&config.kafka, &config.consumer_group, &config.anomalies_topic)?,
            pool,
            urls: out.urls.iter().map(|u| u.as_str().to_owned()).collect(),
            min_severity: out.min_severity,
            wakes: workers.iter().map(|w| w.wake.clone()).collect(),
            metrics,
            codec: match &config.schema_registry_url {
                Some(url) => Codec::reading_with_registry(vigil_schemas::SchemaRegistry::new(url)),
                None => Codec::single_object(),
            },
        };
        Ok(Outbound { consumer, workers })
    }

    /// Starts the consumer and every worker on `tasks`; all stop when `stop` is cancelled.
    pub fn spawn(self, tasks: &mut JoinSet<crate::Result<()>>, stop: &CancellationToken) {
        for w in self.workers {
            tasks.spawn(w.run(stop.clone()));
        }
        tasks.spawn(self.consumer.run(stop.clone()));
    }
}
