-- v_tx_anomaly: the older design's anomaly view, kept as an independent SQL cross-check of the
-- detector and for Grafana rules that want it.
--
-- Per minute: the rates, the baseline of the previous 30 minutes with traffic (mean and sample
-- standard deviation of the per-minute rates, and the pooled rate), and flags.
-- A minute is flagged when the baseline has at least 10 minutes, the minute has at least 5
-- matching transactions, and
--     rate >= mean + 4 * greatest(stddev, 0.005, sqrt(pooled * (1 - pooled) / total))
-- which is the detector's z >= 4 rule with the same spread floors.
--
-- Documented differences from the detector (see detector/README.md): the view's baseline
-- includes earlier anomalous minutes (the detector excludes them, so during a long incident
-- the view stops flagging first), it has no binomial p-value test and no hysteresis (it flags
-- minutes, the detector opens and resolves incidents).
--
-- The baseline is a LATERAL subquery over the 30 preceding minutes rather than a window
-- function, so a filter on minute (a dashboard's time range) is pushed down to an index scan
-- and each baseline is a short backward index scan, instead of a window over the whole history.
CREATE VIEW v_tx_anomaly AS
SELECT
    m.minute,
    m.total,
    m.denied,
    m.failed,
    m.reversed,
    m.denied_rate,
    m.failed_rate,
    m.reversed_rate,
    b.baseline_n,
    b.denied_mean,
    b.denied_stddev,
    b.failed_mean,
    b.failed_stddev,
    b.reversed_mean,
    b.reversed_stddev,
    coalesce(b.baseline_n >= 10 AND m.denied >= 5 AND m.denied_rate >= b.denied_mean + 4 * greatest(
        coalesce(b.denied_stddev, 0), 0.005, sqrt(b.denied_pooled * (1 - b.denied_pooled) / m.total)), false)
        AS denied_above_normal,
    coalesce(b.baseline_n >= 10 AND m.failed >= 5 AND m.failed_rate >= b.failed_mean + 4 * greatest(
        coalesce(b.failed_stddev, 0), 0.005, sqrt(b.failed_pooled * (1 - b.failed_pooled) / m.total)), false)
        AS failed_above_normal,
    coalesce(b.baseline_n >= 10 AND m.reversed >= 5 AND m.reversed_rate >= b.reversed_mean + 4 * greatest(
        coalesce(b.reversed_stddev, 0), 0.005, sqrt(b.reversed_pooled * (1 - b.reversed_pooled) / m.total)), false)
        AS reversed_above_normal
FROM v_tx_minute m
CROSS JOIN LATERAL (
    SELECT
        count(*)::bigint                                        AS baseline_n,
        avg(p.denied_rate)                                      AS denied_mean,
        stddev_samp(p.denied_rate)                              AS denied_stddev,
        sum(p.denied)::double precision / nullif(sum(p.total), 0)   AS denied_pooled,
        avg(p.failed_rate)                                      AS failed_mean,
        stddev_samp(p.failed_rate)                              AS failed_stddev,
        sum(p.failed)::double precision / nullif(sum(p.total), 0)   AS failed_pooled,
        avg(p.reversed_rate)                                    AS reversed_mean,
        stddev_samp(p.reversed_rate)                            AS reversed_stddev,
        sum(p.reversed)::double precision / nullif(sum(p.total), 0) AS reversed_pooled
    FROM (
        -- The 30 preceding minutes: the sink writes all four statuses of every final minute,
        -- so they are the newest 120 rows before this minute, read backwards on the primary
        -- key; then pivoted per minute.
        SELECT
            r.minute,
            sum(r.count)                                               AS total,
            coalesce(sum(r.count) FILTER (WHERE r.status = 'denied'), 0)   AS denied,
            coalesce(sum(r.count) FILTER (WHERE r.status = 'failed'), 0)   AS failed,
            coalesce(sum(r.count) FILTER (WHERE r.status = 'reversed'), 0) AS reversed,
            coalesce(sum(r.count) FILTER (WHERE r.status = 'denied'), 0)::double precision / sum(r.count)   AS denied_rate,
            coalesce(sum(r.count) FILTER (WHERE r.status = 'failed'), 0)::double precision / sum(r.count)   AS failed_rate,
            coalesce(sum(r.count) FILTER (WHERE r.status = 'reversed'), 0)::double precision / sum(r.count) AS reversed_rate
        FROM (
            SELECT t.minute, t.status, t.count
            FROM transactions t
            WHERE t.minute < m.minute
            ORDER BY t.minute DESC
            LIMIT 120
        ) r
        GROUP BY r.minute
        HAVING sum(r.count) > 0
    ) p
) b
WHERE m.total > 0;
