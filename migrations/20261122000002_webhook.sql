-- The webhook service's outbound forwarder: one row per (anomaly, receiver URL). Written
-- 'pending' before the anomaly's Kafka offset is committed, so a restart resumes every
-- delivery, and unique per (anomaly_id, url), so a message consumed twice adds no row.
-- status: pending (to attempt at next_attempt_at), delivered (2xx), failed (refused for good,
-- or still failing after OUTBOUND_GIVE_UP_AFTER).
CREATE TABLE outbound_deliveries (
    id                bigserial   PRIMARY KEY,
    anomaly_id        text        NOT NULL,
    url               text        NOT NULL,
    severity          text        NOT NULL CHECK (severity IN ('medium', 'high', 'critical')),
    payload           jsonb       NOT NULL,
    status            text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status_code  integer,
    last_error        text,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    UNIQUE (anomaly_id, url)
);
CREATE INDEX outbound_deliveries_due_idx ON outbound_deliveries (url, next_attempt_at) WHERE status = 'pending';

-- GET /grafana/alerts?status=... walks received_alerts newest first within one status.
CREATE INDEX received_alerts_status_received_idx ON received_alerts (status, received_at DESC, id DESC);
