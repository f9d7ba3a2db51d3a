-- Dashboards ask for the anomalies still open in their time range ($__timeFilter on
-- last_updated, which moves every minute an incident lasts): index it, so the question is a
-- range scan over the last hours rather than a scan of every anomaly ever recorded.
CREATE INDEX anomalies_last_updated_idx ON anomalies (last_updated DESC);
