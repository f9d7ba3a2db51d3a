-- The outbound forwarder pushes an anomaly each time it first reaches a severity at or above
-- OUTBOUND_MIN_SEVERITY, whatever its state (firing, or an update that escalates it): one row
-- per (anomaly, severity, receiver URL). An anomaly that opens at high and escalates to critical
-- has two rows per URL; a redelivered record, or another update at a severity already pushed,
-- adds none (the unique key below, and the forwarder's check that no row of the anomaly has a
-- severity at least as high, so a de-escalation is not pushed either).
--
-- Existing rows keep their severity: each was the anomaly's severity when it fired, so it counts
-- as that severity pushed.
ALTER TABLE outbound_deliveries DROP CONSTRAINT outbound_deliveries_anomaly_id_url_key;
ALTER TABLE outbound_deliveries
    ADD CONSTRAINT outbound_deliveries_anomaly_severity_url_key UNIQUE (anomaly_id, severity, url);
