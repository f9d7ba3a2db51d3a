-- Per merchant, category and event-time minute (window start, inclusive; end = minute + 1 min,
-- exclusive), for Grafana's merchant drill-down. Bounded at the source: the detector sends a
-- row only for a merchant with enough volume to have rate series of its own (at most
-- RATE_MAX_KEYED_SERIES per input partition), for each final minute in which it traded; the sink
-- deletes rows older than RETENTION_MINUTES_DATA like the other minute tables. A row is final:
-- the same every time it is delivered, so the sink simply sets it.
CREATE TABLE merchant_minutes (
    minute       timestamptz NOT NULL,
    merchant_id  text        NOT NULL,
    category     text        NOT NULL,
    total        bigint      NOT NULL CHECK (total >= 0),
    approved     bigint      NOT NULL CHECK (approved >= 0),
    denied       bigint      NOT NULL CHECK (denied >= 0),
    failed       bigint      NOT NULL CHECK (failed >= 0),
    reversed     bigint      NOT NULL CHECK (reversed >= 0),
    written_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (minute, merchant_id, category),
    CHECK (approved + denied + failed + reversed = total)
);

-- The drill-down reads one merchant (or a few) over the last hours: a range scan of that
-- merchant's minutes, whatever the number of merchants. The primary key serves the time range
-- over every merchant (the variable listing the busiest merchants, retention).
CREATE INDEX merchant_minutes_merchant_minute_idx ON merchant_minutes (merchant_id, minute);

-- One row per merchant and minute (its categories summed), with the three rates.
CREATE VIEW v_merchant_minute AS
SELECT
    minute,
    merchant_id,
    sum(total)::bigint                                    AS total,
    sum(approved)::bigint                                 AS approved,
    sum(denied)::bigint                                   AS denied,
    sum(failed)::bigint                                   AS failed,
    sum(reversed)::bigint                                 AS reversed,
    sum(denied)::double precision / nullif(sum(total), 0)   AS denied_rate,
    sum(failed)::double precision / nullif(sum(total), 0)   AS failed_rate,
    sum(reversed)::double precision / nullif(sum(total), 0) AS reversed_rate
FROM merchant_minutes
GROUP BY minute, merchant_id;
