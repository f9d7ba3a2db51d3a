-- Vigil's public schema: what the sink writes and Grafana, the alert rules and the audit trail
-- read. Every table is keyed by the detector's deterministic keys, so the sink's upserts make
-- at-least-once delivery exactly-once in effect.

-- Per event-time minute (window start, inclusive; end = minute + 1 min, exclusive), per status.
-- Every final minute writes all four statuses, zeros included.
CREATE TABLE transactions (
    minute      timestamptz NOT NULL,
    status      text        NOT NULL CHECK (status IN ('approved', 'denied', 'failed', 'reversed')),
    count       bigint      NOT NULL CHECK (count >= 0),
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (minute, status)
);

CREATE TABLE transactions_auth_codes (
    minute      timestamptz NOT NULL,
    auth_code   text        NOT NULL,
    count       bigint      NOT NULL CHECK (count >= 0),
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (minute, auth_code)
);

CREATE TABLE transactions_categories (
    minute      timestamptz NOT NULL,
    category    text        NOT NULL,
    currency    text        NOT NULL,
    count       bigint      NOT NULL CHECK (count >= 0),
    amount_sum  bigint      NOT NULL,
    amount_min  bigint      NOT NULL,
    amount_max  bigint      NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (minute, category, currency)
);

-- Events that arrived after their minute was final: booked here, never added to the minute.
-- late_count is cumulative per (minute, source); the sink keeps the greatest value.
CREATE TABLE transactions_late (
    minute      timestamptz NOT NULL,
    source      text        NOT NULL,
    late_count  bigint      NOT NULL CHECK (late_count >= 0),
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (minute, source)
);

-- One row per anomaly id; its latest state (highest sequence) wins.
CREATE TABLE anomalies (
    id               text             PRIMARY KEY,
    row_id           bigserial        NOT NULL UNIQUE,
    sequence         bigint           NOT NULL,
    rule             text             NOT NULL,
    dimension        text             NOT NULL CHECK (dimension IN ('global', 'category', 'merchant', 'auth_code')),
    dimension_value  text             NOT NULL,
    window_start     timestamptz,
    window_end       timestamptz,
    transaction_id   text,
    category         text,
    merchant_id      text,
    observed         double precision NOT NULL,
    observed_count   bigint           NOT NULL,
    observed_total   bigint           NOT NULL,
    baseline_mean    double precision NOT NULL,
    baseline_stddev  double precision NOT NULL,
    baseline_n       bigint           NOT NULL,
    scored_on        text             NOT NULL,
    score            double precision NOT NULL,
    p_value          double precision,
    threshold        double precision NOT NULL,
    severity         text             NOT NULL CHECK (severity IN ('medium', 'high', 'critical')),
    state            text             NOT NULL CHECK (state IN ('firing', 'updated', 'resolved')),
    message          text             NOT NULL,
    first_seen       timestamptz      NOT NULL,
    last_updated     timestamptz      NOT NULL,
    resolved_at      timestamptz,
    created_at       timestamptz      NOT NULL DEFAULT now(),
    updated_at       timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX anomalies_first_seen_idx ON anomalies (first_seen DESC);
CREATE INDEX anomalies_created_idx ON anomalies (created_at DESC, row_id DESC);
CREATE INDEX anomalies_severity_first_seen_idx ON anomalies (severity, first_seen DESC);

-- One row per minute, the older design's shape.
CREATE VIEW v_tx_minute AS
SELECT
    t.minute,
    sum(t.count)::bigint                                                    AS total,
    coalesce(sum(t.count) FILTER (WHERE t.status = 'approved'), 0)::bigint AS approved,
    coalesce(sum(t.count) FILTER (WHERE t.status = 'denied'), 0)::bigint   AS denied,
    coalesce(sum(t.count) FILTER (WHERE t.status = 'failed'), 0)::bigint   AS failed,
    coalesce(sum(t.count) FILTER (WHERE t.status = 'reversed'), 0)::bigint AS reversed,
    coalesce(sum(t.count) FILTER (WHERE t.status = 'denied'), 0)::double precision
        / nullif(sum(t.count), 0)                                           AS denied_rate,
    coalesce(sum(t.count) FILTER (WHERE t.status = 'failed'), 0)::double precision
        / nullif(sum(t.count), 0)                                           AS failed_rate,
    coalesce(sum(t.count) FILTER (WHERE t.status = 'reversed'), 0)::double precision
        / nullif(sum(t.count), 0)                                           AS reversed_rate
FROM transactions t
GROUP BY t.minute;

-- Grafana and Alertmanager notifications as received (the raw payload, kept whole).
CREATE TABLE alert_notifications (
    id            bigserial   PRIMARY KEY,
    source        text        NOT NULL CHECK (source IN ('grafana', 'alertmanager')),
    receiver      text,
    status        text,
    group_key     text,
    title         text,
    payload       jsonb       NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_notifications_received_idx ON alert_notifications (received_at DESC);

-- One row per alert instance state change. dedup_key = source + fingerprint + startsAt + status,
-- so a notification re-sent by Grafana or retried by Alertmanager is stored once.
CREATE TABLE received_alerts (
    id               bigserial   PRIMARY KEY,
    dedup_key        text        NOT NULL UNIQUE,
    source           text        NOT NULL CHECK (source IN ('grafana', 'alertmanager')),
    notification_id  bigint      NOT NULL REFERENCES alert_notifications (id),
    fingerprint      text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('firing', 'resolved')),
    alertname        text,
    severity         text,
    labels           jsonb       NOT NULL DEFAULT '{}',
    annotations      jsonb       NOT NULL DEFAULT '{}',
    "values"         jsonb,
    value_string     text,
    starts_at        timestamptz,
    ends_at          timestamptz,
    generator_url    text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz
);
CREATE INDEX received_alerts_received_idx ON received_alerts (received_at DESC, id DESC);
CREATE INDEX received_alerts_fingerprint_idx ON received_alerts (source, fingerprint, starts_at);
