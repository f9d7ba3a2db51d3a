-- The audit trail of the detector's rule settings changed at run time (issue 21, item 3): one
-- row per record the webhook published on `detector-settings` (who, when, the record), written
-- in the transaction that publishing it completes. Append-only, like the triage trail.
CREATE TABLE settings_events (
    seq             bigserial   PRIMARY KEY,
    record_key      text        NOT NULL,
    scope           text        NOT NULL,
    effective_from  timestamptz NOT NULL,
    record          jsonb       NOT NULL,
    actor           text        NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settings_events_scope ON settings_events (scope, effective_from DESC);
CREATE TRIGGER settings_events_append_only BEFORE UPDATE OR DELETE ON settings_events
    FOR EACH ROW EXECUTE FUNCTION anomaly_triage_events_append_only();
