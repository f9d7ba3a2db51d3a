use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use vigil_common::metrics::{latency_histogram, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub topic: String,
    pub partition: i32,
}

/// Every database query the sink runs, by name: the `query` label of
/// `vigil_sink_db_query_duration_seconds`. A fixed set, so the label never carries SQL, a table
/// partition's name or anything read from the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbQuery {
    /// Before a batch's transaction: whether a day's `transaction_records` partition exists, and
    /// creating one (its own short transaction: advisory lock, CREATE TABLE, COMMIT).
    PartitionCheck,
    PartitionCreate,
    /// One batch, one transaction: BEGIN (including the wait for a pooled connection), each
    /// table's upsert, the anomalies' opening states, COMMIT.
    BatchBegin,
    TransactionRecordsInsert,
    TransactionVerdictsUpsert,
    StatusesUpsert,
    AuthCodesUpsert,
    CategoriesUpsert,
    VolumeMinutesUpsert,
    LateUpsert,
    MerchantMinutesUpsert,
    AnomaliesUpsert,
    AnomaliesFirstState,
    BatchCommit,
    /// Retention: one batch of up to 10 000 deleted rows of a minute table, of anomalies, of
    /// verdicts; listing, counting and dropping `transaction_records`' day partitions.
    RetentionMinutesDelete,
    RetentionAnomaliesDelete,
    RetentionVerdictsDelete,
    RetentionPartitionsList,
    RetentionPartitionCount,
    RetentionPartitionDrop,
}

impl DbQuery {
    pub const ALL: [DbQuery; 20] = [
        DbQuery::PartitionCheck,
        DbQuery::PartitionCreate,
        DbQuery::BatchBegin,
        DbQuery::TransactionRecordsInsert,
        DbQuery::TransactionVerdictsUpsert,
        DbQuery::StatusesUpsert,
        DbQuery::AuthCodesUpsert,
        DbQuery::CategoriesUpsert,
        DbQuery::VolumeMinutesUpsert,
        DbQuery::LateUpsert,
        DbQuery::MerchantMinutesUpsert,
        DbQuery::AnomaliesUpsert,
        DbQuery::AnomaliesFirstState,
        DbQuery::BatchCommit,
        DbQuery::RetentionMinutesDelete,
        DbQuery::RetentionAnomaliesDelete,
        DbQuery::RetentionVerdictsDelete,
        DbQuery::RetentionPartitionsList,
        DbQuery::RetentionPartitionCount,
        DbQuery::RetentionPartitionDrop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DbQuery::PartitionCheck => "partition_check",
            DbQuery::PartitionCreate => "partition_create",
            DbQuery::BatchBegin => "batch_begin",
            DbQuery::TransactionRecordsInsert => "transaction_records_insert",
            DbQuery::TransactionVerdictsUpsert => "transaction_verdicts_upsert",
            DbQuery::StatusesUpsert => "statuses_upsert",
            DbQuery::AuthCodesUpsert => "auth_codes_upsert",
            DbQuery::CategoriesUpsert => "categories_upsert",
            DbQuery::VolumeMinutesUpsert => "volume_minutes_upsert",
            DbQuery::LateUpsert => "late_upsert",
            DbQuery::MerchantMinutesUpsert => "merchant_minutes_upsert",
            DbQuery::AnomaliesUpsert => "anomalies_upsert",
            DbQuery::AnomaliesFirstState => "anomalies_first_state",
            DbQuery::BatchCommit => "batch_commit",
            DbQuery::RetentionMinutesDelete => "retention_minutes_delete",
            DbQuery::RetentionAnomaliesDelete => "retention_anomalies_delete",
            DbQuery::RetentionVerdictsDelete => "retention_verdicts_delete",
            DbQuery::RetentionPartitionsList => "retention_partitions_list",
            DbQuery::RetentionPartitionCount => "retention_partition_count",
            DbQuery::RetentionPartitionDrop => "retention_partition_drop",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// One of [`DbQuery::as_str`].
    pub query: &'static str,
}

/// `vigil_sink_db_query_duration_seconds{query}`: how long each database query took, failed
/// ones included (from sending it to its answer or error, with any wait for a pooled connection).
#[derive(Clone, Debug)]
pub struct DbMetrics {
    duration: Family<QueryLabels, Histogram>,
}

impl DbMetrics {
    fn new() -> Self {
        let duration = Family::<QueryLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        // Every series exists from the start (count 0), so a rate over a query never run is 0,
        // not absent.
        for q in DbQuery::ALL {
            drop(duration.get_or_create(&QueryLabels { query: q.as_str() }));
        }
        DbMetrics { duration }
    }

    /// Runs `fut` (one query) and records its duration under `query`.
    pub async fn time<T, E>(&self, query: DbQuery, fut: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let started = Instant::now();
        let result = fut.await;
        self.duration.get_or_create(&QueryLabels { query: query.as_str() }).observe(started.elapsed().as_secs_f64());
        result
    }
}

/// Runs `fut` (one query), timed under `query` when there are metrics to record it in (the
/// writer's and retention's functions are also called without, by tests and tools).
pub async fn timed<T, E>(
    metrics: Option<&DbMetrics>,
    query: DbQuery,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match metrics {
        Some(m) => m.time(query, fut).await,
        None => fut.await,
    }
}

/// The sink's metrics (`vigil_sink_*`).
#[derive(Clone)]
pub struct SinkMetrics {
    pub rows: Family<TableLabels, Counter>,
    pub messages: Family<KindLabels, Counter>,
    pub batch_duration: Histogram,
    pub batch_messages: Histogram,
    pub db_errors: Family<KindLabels, Counter>,
    pub dead_letters: Family<KindLabels, Counter>,
    pub lag: Family<LagLabels, Gauge>,
    pub retention_deleted: Family<TableLabels, Counter>,
    pub db: DbMetrics,
}

impl SinkMetrics {
    pub fn new(m: &Metrics) -> Self {
        let s = SinkMetrics {
            rows: Family::default(),
            messages: Family::default(),
            batch_duration: latency_histogram(),
            batch_messages: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            db_errors: Family::default(),
            dead_letters: Family::default(),
            lag: Family::default(),
            retention_deleted: Family::default(),
            db: DbMetrics::new(),
        };
        for kind in ["io", "pool_timeout", "database_unavailable", "rejected", "connection", "other"] {
            let _ = s.db_errors.get_or_create(&KindLabels { kind });
        }
        for kind in ["undecodable", "wrong_type", "rejected"] {
            let _ = s.dead_letters.get_or_create(&KindLabels { kind });
        }
        m.register("rows_written", "Rows inserted or changed, by table", s.rows.clone());
        m.register("messages", "Messages consumed, by type", s.messages.clone());
        m.register("batch_duration_seconds", "Time to write one batch (one transaction)", s.batch_duration.clone());
        m.register("batch_messages", "Messages per written batch", s.batch_messages.clone());
        m.register("db_errors", "Database errors, by kind", s.db_errors.clone());
        m.register("dead_letters", "Messages sent to the dead-letter topic, by reason", s.dead_letters.clone());
        m.register("consumer_lag_messages", "Messages behind the log end, per partition", s.lag.clone());
        m.register("retention_deleted_rows", "Rows removed by retention, by table", s.retention_deleted.clone());
        m.register(
            "db_query_duration_seconds",
            "Time each database query took (failed ones included, with any wait for a pooled connection), by query",
            s.db.duration.clone(),
        );
        s
    }

    pub fn written(&self, w: &crate::writer::Written) {
        for (table, n) in [
            ("transactions", w.transactions),
            ("transactions_auth_codes", w.auth_codes),
            ("transactions_categories", w.categories),
            ("transactions_late", w.late),
            ("merchant_minutes", w.merchant_minutes),
            ("volume_minutes", w.volume_minutes),
            ("anomalies", w.anomalies),
            ("transaction_records", w.transaction_records),
            ("transaction_verdicts", w.transaction_verdicts),
        ] {
            if n > 0 {
                self.rows.get_or_create(&TableLabels { table }).inc_by(n);
            }
        }
    }
}
