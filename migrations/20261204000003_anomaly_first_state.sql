-- The message an anomaly opened with: the state with the lowest sequence the sink stored
-- (sequence 0, firing, unless it was never delivered). The sink sets both columns from the
-- lowest sequence it has seen for the id, in any delivery order, and never from a later state,
-- so they stay put while message follows the latest state.
--
-- Why: Grafana identifies an alert instance by its labels, and the "Traffic stopped" rule
-- names the anomaly's opening message in its summary through a label. The latest message
-- changes with every minute an incident lasts; as a label it would open a new alert instance
-- each minute and resolve the previous one. The opening message does not change.
ALTER TABLE anomalies
    ADD COLUMN first_sequence bigint,
    ADD COLUMN first_message  text;

-- The alert rules ask which anomalies of a rule and severity are open now, whatever their
-- age: a small partial index (open anomalies are few) answers without reading the history.
CREATE INDEX anomalies_open_rule_idx ON anomalies (rule, severity) WHERE state <> 'resolved';

-- Anomalies still open when this runs: their latest state is the earliest the database knows,
-- so it counts as their opening (an earlier state delivered again later still replaces it).
-- Resolved ones keep NULL: no alert rule reads them, and rewriting a year of history here would
-- hold the migration for nothing.
UPDATE anomalies SET first_sequence = sequence, first_message = message WHERE state <> 'resolved';
