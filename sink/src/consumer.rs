//! The consume loop: decode, batch, write in one transaction, then commit offsets.
//!
//! * Offsets are committed only after the transaction that wrote their messages committed.
//! * A message that does not decode, belongs on another topic, names a time more than a day
//!   after its record timestamp, or that the database refuses as data, goes to the dead-letter
//!   topic with the reason in its headers, and the loop goes on.
//! * When the database is unreachable the partitions are paused (the consumer keeps polling,
//!   so it stays in its group), the batch is retried with backoff until it lands, and
//!   consumption resumes by itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use vigil_schemas::{Codec, Decoded};

use crate::config::Config;
use crate::metrics::{KindLabels, LagLabels, SinkMetrics};
use crate::writer::{write_batch_timed, Row};
use crate::{retry, Error, Result};

/// One consumed message awaiting its batch.
struct Item {
    topic: String,
    partition: i32,
    offset: i64,
    row: Row,
}

/// How far a row's time may lie after its record's timestamp. The detector writes a minute or
/// an anomaly after the events it covers, and refuses events more than `MAX_FUTURE_SKEW`
/// (minutes) ahead of theirs; a row a day ahead is a poison message, and stored it would stand
/// in every table and dashboard as the newest minute until the year it names.
const MAX_AHEAD_MS: i64 = 24 * 3_600_000;

/// The latest time a row names.
fn newest_time(row: &Row) -> Option<i64> {
    match row {
        Row::Aggregate(a) => Some(a.minute_start),
        Row::Late(l) => Some(l.minute_start),
        Row::MerchantMinute(m) => Some(m.minute_start),
        Row::Transaction(t) => Some(t.occurred_at),
        Row::Verdict(v) => Some(v.occurred_at),
        Row::Anomaly(a) => {
            [Some(a.first_seen), Some(a.last_updated), a.window_end, a.resolved_at].into_iter().flatten().max()
        }
    }
}

pub struct Loop {
    pub cfg: Arc<Config>,
    pub pool: PgPool,
    pub consumer: StreamConsumer,
    /// For the lag gauge's high-watermark queries (`KafkaConfig::watermark_client`).
    pub watermarks: BaseConsumer,
    pub dlq: FutureProducer,
    pub codec: Arc<Codec>,
    pub metrics: SinkMetrics,
}

impl Loop {
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut topics = vec![self.cfg.minutes_topic.as_str(), self.cfg.anomalies_topic.as_str()];
        if self.cfg.store_transactions {
            topics.extend([self.cfg.transactions_topic.as_str(), self.cfg.verdicts_topic.as_str()]);
        }
        self.consumer.subscribe(&topics)?;
        tracing::info!(group = %self.cfg.consumer_group, "Sink consuming {}.", topics.join(", "));
        let mut batch: Vec<Item> = Vec::new();
        // Highest offset seen per partition, including dead-lettered ones.
        let mut seen: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut first_at: Option<Instant> = None;
        let mut last_lag = Instant::now();
        loop {
            let wait = first_at.map(|t| self.cfg.linger.saturating_sub(t.elapsed())).unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout(wait, self.consumer.recv()) => match r {
                    Ok(Ok(m)) => {
                        seen.insert((m.topic().to_owned(), m.partition()), m.offset());
                        if let Some(item) = self.decode(&m).await? {
                            batch.push(item);
                            first_at.get_or_insert_with(Instant::now);
                        } else if batch.is_empty() {
                            // Only dead letters since the last write: commit past them now.
                            self.commit(&seen, CommitMode::Async);
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "Consumer error."),
                    Err(_) => {}
                }
            }
            let due = first_at.is_some_and(|t| t.elapsed() >= self.cfg.linger);
            if batch.len() >= self.cfg.batch_size || (due && !batch.is_empty()) {
                self.write(&mut batch, &shutdown).await?;
                self.commit(&seen, CommitMode::Async);
                first_at = None;
            }
            if last_lag.elapsed() >= Duration::from_secs(5) {
                self.update_lag(&seen);
                last_lag = Instant::now();
            }
        }
        // Named for the shutdown watchdog, which reports it if the database or the broker is gone.
        vigil_common::shutdown::holding(
            "sink",
            format!(
                "{} rows not yet written to PostgreSQL, then the offset commit of {} partitions (the broker \
                 redelivers what is not committed)",
                batch.len(),
                seen.len()
            ),
        );
        if !batch.is_empty() {
            self.write(&mut batch, &CancellationToken::new()).await?;
        }
        // What is written but not committed is redelivered and upserted again: nothing is lost,
        // but the stop was not clean, so say so with the exit status.
        self.try_commit(&seen, CommitMode::Sync).inspect_err(|e| {
            tracing::warn!(error = %e, "The final offset commit failed; what was written is redelivered and upserted again.");
        })?;
        vigil_common::shutdown::released("sink");
        tracing::info!("Sink stopped after writing and committing what it held.");
        Ok(())
    }

    async fn decode(&self, m: &BorrowedMessage<'_>) -> Result<Option<Item>> {
        let payload = m.payload().unwrap_or_default();
        let expected_minutes = m.topic() == self.cfg.minutes_topic;
        let on_transactions = m.topic() == self.cfg.transactions_topic;
        let on_verdicts = m.topic() == self.cfg.verdicts_topic;
        let on_anomalies = m.topic() == self.cfg.anomalies_topic;
        let mut decoded = self.codec.decode_any(payload);
        if let Err(vigil_schemas::Error::UnknownSchemaId(id)) = decoded {
            // A Confluent-framed message from a writer whose schema id we have not seen yet.
            if self.codec.learn_schema_id(id).await.is_ok() {
                decoded = self.codec.decode_any(payload);
            }
        }
        let row = match decoded {
            Ok(Decoded::MinuteAggregate(a)) if expected_minutes => Row::Aggregate(a),
            Ok(Decoded::LateEvents(l)) if expected_minutes => Row::Late(l),
            Ok(Decoded::MerchantMinute(m)) if expected_minutes => Row::MerchantMinute(m),
            Ok(Decoded::Anomaly(a)) if on_anomalies => Row::Anomaly(a),
            Ok(Decoded::Transaction(t)) if on_transactions => Row::Transaction(t),
            Ok(Decoded::TransactionVerdict(v)) if on_verdicts => Row::Verdict(v),
            Ok(other) => {
                self.dead_letter(m, "wrong_type", &format!("a {} does not belong on {}", other.label(), m.topic()))
                    .await?;
                return Ok(None);
            }
            Err(e) => {
                self.dead_letter(m, "undecodable", &format!("undecodable: {e}")).await?;
                return Ok(None);
            }
        };
        if let (Some(ts), Some(at)) = (m.timestamp().to_millis(), newest_time(&row)) {
            if at > ts.saturating_add(MAX_AHEAD_MS) {
                self.dead_letter(m, "refused_future", "its time is more than a day after the record's timestamp")
                    .await?;
                return Ok(None);
            }
        }
        let kind = match &row {
            Row::Aggregate(_) => "minute_aggregate",
            Row::Late(_) => "late_events",
            Row::MerchantMinute(_) => "merchant_minute",
            Row::Anomaly(_) => "anomaly",
            Row::Transaction(_) => "transaction",
            Row::Verdict(_) => "transaction_verdict",
        };
        self.metrics.messages.get_or_create(&KindLabels { kind }).inc();
        Ok(Some(Item { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset(), row }))
    }

    /// The first day transaction retention keeps, by the wall clock now.
    fn keep_from(&self) -> Option<chrono::NaiveDate> {
        self.cfg.retention_transactions.map(|r| crate::transactions::first_kept_day(r, chrono::Utc::now()))
    }

    async fn dead_letter(&self, m: &BorrowedMessage<'_>, kind: &'static str, reason: &str) -> Result<()> {
        self.dead_letter_raw(
            m.topic(),
            m.partition(),
            m.offset(),
            m.key(),
            m.payload().unwrap_or_default(),
            kind,
            reason,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter_raw(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        kind: &'static str,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(topic, partition, offset, reason, "Message dead-lettered.");
        self.metrics.dead_letters.get_or_create(&KindLabels { kind }).inc();
        let (p, o) = (partition.to_string(), offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header { key: "vigil.error", value: Some(reason) })
            .insert(Header { key: "vigil.stage", value: Some("sink") })
            .insert(Header { key: "vigil.source.topic", value: Some(topic) })
            .insert(Header { key: "vigil.source.partition", value: Some(&p) })
            .insert(Header { key: "vigil.source.offset", value: Some(&o) });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.cfg.dead_letter_topic).payload(payload).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.dlq
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| Error::DeadLetter(e.to_string()))?;
        Ok(())
    }

    /// Writes the batch, retrying what is retryable until it lands (or shutdown); rows the
    /// database refuses as data are dead-lettered one by one.
    async fn write(&self, batch: &mut Vec<Item>, shutdown: &CancellationToken) -> Result<()> {
        let rows: Vec<Row> = batch.iter().map(|i| i.row.clone()).collect();
        let mut attempt = 0u32;
        let mut paused = false;
        let result = loop {
            let start = Instant::now();
            match write_batch_timed(&self.pool, &rows, self.keep_from(), Some(&self.metrics.db)).await {
                Ok(w) => {
                    self.metrics.batch_duration.observe(start.elapsed().as_secs_f64());
                    self.metrics.batch_messages.observe(rows.len() as f64);
                    self.metrics.written(&w);
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, "The database is back; the held batch is written.");
                    }
                    break Ok(());
                }
                Err(e) if retry::is_retryable(&e) => {
                    self.metrics.db_errors.get_or_create(&KindLabels { kind: retry::kind(&e) }).inc();
                    if !paused {
                        if let Ok(a) = self.consumer.assignment() {
                            let _ = self.consumer.pause(&a);
                        }
                        paused = true;
                    }
                    let wait = retry::backoff(attempt, self.cfg.max_backoff);
                    tracing::warn!(error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "Database write failed; holding the batch and retrying.");
                    attempt += 1;
                    if shutdown.is_cancelled() && attempt > 3 {
                        break Err(Error::Db(e));
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    self.metrics.db_errors.get_or_create(&KindLabels { kind: retry::kind(&e) }).inc();
                    tracing::warn!(error = %e, "The database refused a batch; writing its rows one by one.");
                    break self.isolate(batch).await;
                }
            }
        };
        if paused {
            if let Ok(a) = self.consumer.assignment() {
                let _ = self.consumer.resume(&a);
            }
        }
        if result.is_ok() {
            batch.clear();
        }
        result
    }

    async fn isolate(&self, batch: &[Item]) -> Result<()> {
        for item in batch {
            let mut attempt = 0;
            loop {
                match write_batch_timed(
                    &self.pool,
                    std::slice::from_ref(&item.row),
                    self.keep_from(),
                    Some(&self.metrics.db),
                )
                .await
                {
                    Ok(w) => {
                        self.metrics.written(&w);
                        break;
                    }
                    Err(e) if retry::is_retryable(&e) => {
                        tokio::time::sleep(retry::backoff(attempt, self.cfg.max_backoff)).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        let payload = match &item.row {
                            Row::Aggregate(a) => self.codec.encode(a),
                            Row::Late(l) => self.codec.encode(l),
                            Row::MerchantMinute(m) => self.codec.encode(m),
                            Row::Anomaly(a) => self.codec.encode(a),
                            Row::Transaction(t) => self.codec.encode(t),
                            Row::Verdict(v) => self.codec.encode(v),
                        }
                        .unwrap_or_default();
                        self.dead_letter_raw(
                            &item.topic,
                            item.partition,
                            item.offset,
                            None,
                            &payload,
                            "rejected",
                            &format!("database refused the row: {e}"),
                        )
                        .await?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Commits past every message seen; a failure is retried with the next batch.
    fn commit(&self, seen: &BTreeMap<(String, i32), i64>, mode: CommitMode) {
        if let Err(e) = self.try_commit(seen, mode) {
            tracing::debug!(error = %e, "Offset commit failed (will be retried with the next batch).");
        }
    }

    fn try_commit(&self, seen: &BTreeMap<(String, i32), i64>, mode: CommitMode) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), offset) in seen {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(offset + 1));
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        Ok(self.consumer.commit(&tpl, mode)?)
    }

    fn update_lag(&self, seen: &BTreeMap<(String, i32), i64>) {
        let watermarks = &self.watermarks;
        tokio::task::block_in_place(|| {
            for ((topic, p), offset) in seen {
                if let Ok((_, high)) = watermarks.fetch_watermarks(topic, *p, Duration::from_millis(500)) {
                    self.metrics
                        .lag
                        .get_or_create(&LagLabels { topic: topic.clone(), partition: *p })
                        .set((high - offset - 1).max(0));
                }
            }
        });
    }
}
