-- Every accepted transaction, for lookups (GET /transactions/{id}), reversals and Grafana's
-- drill-downs, written by the sink from the transactions topic.
--
-- Partitioned by UTC day of event time: retention drops a whole day at once (TRANSACTION_RETENTION),
-- with no long DELETE. The sink creates each day's partition before it writes the day's first
-- row (`sink/src/partitions.rs`); there is no default partition, so a day is always a partition
-- of its own and can be dropped alone. Rows for a day older than the retention are not stored.
--
-- Keyed by (transaction_id, occurred_at): a redelivered record is the same row (first write
-- wins, every write of it is identical). The same id sent again with another event time is a
-- second row; the detector counts only the first it sees, and a lookup returns the earliest
-- received.
CREATE TABLE transaction_records (
    transaction_id  text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    status          text        NOT NULL,
    auth_code       text        NOT NULL,
    amount_minor    bigint      NOT NULL,
    currency        text        NOT NULL,
    category        text        NOT NULL,
    merchant_id     text        NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

-- Drill-downs: a merchant's or a category's recent transactions.
CREATE INDEX transaction_records_merchant ON transaction_records (merchant_id, occurred_at DESC);
CREATE INDEX transaction_records_category ON transaction_records (category, occurred_at DESC);

-- The detector's verdict on each transaction whose producer asked for one (topic
-- transaction-verdicts), so a poll after a 202 finds it on any producer instance. A duplicate's
-- verdict never replaces the first one's.
CREATE TABLE transaction_verdicts (
    transaction_id  text        PRIMARY KEY,
    occurred_at     timestamptz NOT NULL,
    decision        text        NOT NULL CHECK (decision IN ('counted', 'late', 'duplicate', 'refused')),
    anomaly         boolean     NOT NULL,
    severity        text        CHECK (severity IN ('medium', 'high', 'critical')),
    anomaly_ids     text[]      NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transaction_verdicts_occurred_at ON transaction_verdicts (occurred_at);

