//! Wiring: configuration in, a running sink out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_common::http::{ops_router, serve, Dependency, ReadyCheck};
use vigil_common::metrics::Metrics;
use vigil_schemas::{Codec, SchemaRegistry};

use crate::config::Config;
use crate::consumer::Loop;
use crate::metrics::SinkMetrics;
use crate::{retention, retry};

pub struct Application {
    config: Arc<Config>,
    listener: TcpListener,
    pool: PgPool,
    metrics: Metrics,
    sm: SinkMetrics,
}

/// `sink migrate`: apply migrations (under PostgreSQL's advisory lock) and exit.
pub async fn migrate_only(config: &Config) -> anyhow::Result<()> {
    let pool = vigil_common::db::pool_lazy(config.database_url.expose(), 1).context("Invalid DATABASE_URL")?;
    vigil_common::db::migrate(&pool).await.context("Failed to apply migrations")?;
    tracing::info!("Migrations applied.");
    Ok(())
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new("sink");
        let sm = SinkMetrics::new(&metrics);
        let pool = vigil_common::db::pool_lazy(config.database_url.expose(), config.database_max_connections)
            .context("Invalid DATABASE_URL")?;
        let listener =
            TcpListener::bind(config.bind).await.with_context(|| format!("Failed to bind {}", config.bind))?;
        Ok(Application { config: Arc::new(config), listener, pool, metrics, sm })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// What /health checks: the database, the broker, the schema registry when configured.
    fn dependencies(&self) -> Vec<Dependency> {
        let mut deps =
            vec![Dependency::database(&self.pool), Dependency::broker(&self.config.kafka, &self.config.minutes_topic)];
        if let Some(url) = &self.config.schema_registry_url {
            deps.push(Dependency::schema_registry(url));
        }
        deps
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let migrated = Arc::new(AtomicBool::new(false));
        let ready = {
            let (pool, migrated, kafka) = (self.pool.clone(), migrated.clone(), self.config.kafka.clone());
            let topic = self.config.minutes_topic.clone();
            let ready: ReadyCheck = Arc::new(move || {
                let (pool, migrated, kafka, topic) = (pool.clone(), migrated.clone(), kafka.clone(), topic.clone());
                Box::pin(async move {
                    if !migrated.load(Ordering::SeqCst) {
                        return Err("migrations not applied yet".to_string());
                    }
                    sqlx::query("SELECT 1").execute(&pool).await.map_err(|e| format!("database unreachable: {e}"))?;
                    tokio::task::spawn_blocking(move || {
                        let c: rdkafka::consumer::BaseConsumer =
                            kafka.client_config().create().map_err(|e| e.to_string())?;
                        rdkafka::consumer::Consumer::fetch_metadata(&c, Some(&topic), Duration::from_secs(2))
                            .map_err(|e| format!("broker unreachable: {e}"))?;
                        Ok::<(), String>(())
                    })
                    .await
                    .map_err(|e| e.to_string())?
                })
            });
            ready
        };
        let port = self.port();
        let dependencies = self.dependencies();
        let server = tokio::spawn(serve(
            self.listener,
            ops_router(self.metrics.clone(), ready, dependencies).fallback(vigil_common::problem::not_found),
            shutdown.clone(),
        ));
        tracing::info!(port, "Sink ops server started.");

        // Migrations first, retried while the database is coming up.
        let mut attempt = 0;
        loop {
            match vigil_common::db::migrate(&self.pool).await {
                Ok(()) => break,
                Err(sqlx::migrate::MigrateError::Execute(e))
                | Err(sqlx::migrate::MigrateError::ExecuteMigration(e, _))
                    if retry::is_retryable(&e) =>
                {
                    let wait = retry::backoff(attempt, self.config.max_backoff);
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "Database not reachable for migrations; retrying.");
                    attempt += 1;
                    tokio::select! { _ = shutdown.cancelled() => return Ok(()), _ = tokio::time::sleep(wait) => {} }
                }
                Err(e) => return Err(e).context("Failed to apply migrations"),
            }
        }
        migrated.store(true, Ordering::SeqCst);
        tracing::info!("Migrations applied.");

        let mut cc = self.config.kafka.consumer_config(&self.config.consumer_group);
        // A long database outage holds the batch and pauses consumption; stay in the group.
        cc.set("max.poll.interval.ms", "1800000");
        if let Some(id) = &self.config.consumer_instance_id {
            cc.set("group.instance.id", id);
        }
        let consumer: StreamConsumer = cc.create().context("Failed to create the consumer")?;
        let dlq: FutureProducer = self
            .config
            .kafka
            .producer_config(Duration::from_secs(30))
            .create()
            .context("Failed to create the dead-letter producer")?;
        let retention = tokio::spawn(retention::run_periodically(
            self.pool.clone(),
            self.config.retention_minutes,
            self.config.retention_anomalies,
            self.config.retention_interval,
            self.sm.clone(),
            shutdown.clone(),
        ));
        let transaction_retention = tokio::spawn(crate::transactions::run_retention_periodically(
            self.pool.clone(),
            self.config.retention_transactions.filter(|_| self.config.store_transactions),
            self.config.retention_interval,
            self.sm.clone(),
            shutdown.clone(),
        ));
        let codec = match &self.config.schema_registry_url {
            Some(url) => {
                use vigil_schemas::{
                    Anomaly, LateEvents, MerchantMinute, MinuteAggregate, TopicBindings, Transaction,
                    TransactionVerdict,
                };
                let c = &self.config;
                // Subjects follow the topics (vigil_schemas::subjects): the ones it reads.
                let bindings = TopicBindings::new()
                    .bind::<MinuteAggregate>(&c.minutes_topic)
                    .bind::<LateEvents>(&c.minutes_topic)
                    .bind::<MerchantMinute>(&c.minutes_topic)
                    .bind::<Anomaly>(&c.anomalies_topic)
                    .bind::<Transaction>(&c.transactions_topic)
                    .bind::<TransactionVerdict>(&c.verdicts_topic);
                Codec::with_registry_for(SchemaRegistry::new(url), &bindings)
                    .await
                    .with_context(|| format!("Failed to reach the schema registry at {url}"))?
            }
            None => Codec::single_object(),
        };
        let watermarks = self.config.kafka.watermark_client().context("Failed to create the watermark client")?;
        let lp = Loop {
            cfg: self.config.clone(),
            pool: self.pool.clone(),
            consumer,
            watermarks,
            dlq,
            codec: Arc::new(codec),
            metrics: self.sm.clone(),
        };
        let result = lp.run(shutdown.clone()).await;
        shutdown.cancel();
        let _ = retention.await;
        let _ = transaction_retention.await;
        let _ = server.await;
        result.context("The sink loop failed")
    }
}
