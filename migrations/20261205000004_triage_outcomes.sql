-- What triage says about the rules (issue 21, item 4), from the dispositions people gave.
--
-- v_triage_precision, per rule and severity:
--   closed             anomalies closed (any disposition);
--   true_positives     closed as true_positive;
--   judged             closed as true_positive, false_positive or benign (a duplicate says
--                      nothing about the rule's judgement and is left out);
--   precision          true_positives / judged (NULL before any judged closure);
--   median_seconds_to_acknowledge / _to_close: from the anomaly's first_seen to its first
--                      acknowledgement (closing an open anomaly acknowledges it) / its closure;
--   unacknowledged     never acknowledged (triage open) and not resolved by the detector.
-- One row per anomaly with its triage outcome; filter it on created_at (indexed) to judge a
-- period, as the Triage dashboard does.
CREATE VIEW v_anomaly_outcomes AS
SELECT a.id, a.rule, a.severity, a.state, a.first_seen, a.created_at,
       COALESCE(t.state, 'open') AS triage_state, t.disposition, t.assignee,
       extract(epoch FROM t.acknowledged_at - a.first_seen) AS seconds_to_acknowledge,
       CASE WHEN t.state = 'closed' THEN extract(epoch FROM t.closed_at - a.first_seen) END AS seconds_to_close
FROM anomalies a
LEFT JOIN anomaly_triage t ON t.anomaly_id = a.id;

CREATE VIEW v_triage_precision AS
SELECT rule,
       severity,
       count(*) AS anomalies,
       count(*) FILTER (WHERE triage_state = 'closed') AS closed,
       count(*) FILTER (WHERE disposition = 'true_positive' AND triage_state = 'closed') AS true_positives,
       count(*) FILTER (WHERE triage_state = 'closed' AND disposition <> 'duplicate') AS judged,
       (count(*) FILTER (WHERE disposition = 'true_positive' AND triage_state = 'closed'))::float8
           / NULLIF(count(*) FILTER (WHERE triage_state = 'closed' AND disposition <> 'duplicate'), 0) AS precision,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_to_acknowledge) AS median_seconds_to_acknowledge,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_to_close) AS median_seconds_to_close,
       count(*) FILTER (WHERE triage_state = 'open' AND state <> 'resolved') AS unacknowledged
FROM v_anomaly_outcomes
GROUP BY rule, severity;

-- The queue nobody has looked at: critical anomalies never acknowledged, oldest first. An
-- amount anomaly is complete when emitted (stored resolved), so resolution does not take one off
-- the queue: only triage does.
CREATE VIEW v_unacknowledged_critical AS
SELECT a.id, a.rule, a.dimension, a.dimension_value, a.merchant_id, a.category, a.transaction_id, a.state,
       a.message, a.first_seen, t.assignee,
       extract(epoch FROM now() - a.first_seen) AS age_seconds
FROM anomalies a
LEFT JOIN anomaly_triage t ON t.anomaly_id = a.id
WHERE a.severity = 'critical' AND COALESCE(t.state, 'open') = 'open';

CREATE INDEX anomalies_critical_first_seen ON anomalies (first_seen) WHERE severity = 'critical';
