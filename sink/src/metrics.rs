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
