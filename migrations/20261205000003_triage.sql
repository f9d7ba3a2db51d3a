-- Triage of detector anomalies (webhook: POST /alerts/{id}/triage), issue 21.
--
-- anomaly_triage_events is the audit trail: append-only, one row per action (who, when, what,
-- the triage state before and after, the note), numbered per anomaly from 1. anomaly_triage
-- holds each anomaly's current state, which is the `after` of its latest event: both are written
-- in one transaction, under a row lock on the anomaly's current state, so concurrent actions are
-- serialised and none is lost; one made against a version that is no longer current is refused
-- (412) when the client sent If-Match. An anomaly without a row is `open`, unassigned.
CREATE TABLE anomaly_triage_events (
    seq          bigserial   PRIMARY KEY,
    anomaly_id   text        NOT NULL,
    version      integer     NOT NULL CHECK (version >= 1),
    action       text        NOT NULL CHECK (action IN ('acknowledge', 'assign', 'close', 'reopen')),
    actor        text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    before       jsonb       NOT NULL,
    after        jsonb       NOT NULL,
    note         text,
    UNIQUE (anomaly_id, version)
);

-- No updates or deletes of the audit trail, whoever asks.
CREATE FUNCTION anomaly_triage_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'anomaly_triage_events is append-only';
END $$;
CREATE TRIGGER anomaly_triage_events_append_only BEFORE UPDATE OR DELETE ON anomaly_triage_events
    FOR EACH ROW EXECUTE FUNCTION anomaly_triage_events_append_only();

CREATE TABLE anomaly_triage (
    anomaly_id   text        PRIMARY KEY,
    version      integer     NOT NULL,
    state        text        NOT NULL CHECK (state IN ('open', 'acknowledged', 'closed')),
    assignee     text,
    disposition  text        CHECK (disposition IN ('true_positive', 'false_positive', 'benign', 'duplicate')),
    note         text,
    acknowledged_at timestamptz,
    closed_at    timestamptz,
    updated_at   timestamptz NOT NULL,
    updated_by   text        NOT NULL
);
CREATE INDEX anomaly_triage_state ON anomaly_triage (state);
CREATE INDEX anomaly_triage_assignee ON anomaly_triage (assignee) WHERE assignee IS NOT NULL;
