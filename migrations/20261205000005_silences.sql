-- Silences and maintenance windows (issue 21, item 2), created through the webhook
-- (POST /silences). A silence matches an anomaly when every matcher it sets equals the
-- anomaly's value (an unset matcher matches anything; `severities` is a list) and the anomaly's
-- first_seen lies in [starts_at, ends_at). A silenced anomaly is still detected and stored; it is
-- marked silenced where anomalies are listed and is not pushed outbound. Silences are never
-- deleted: expiring one ends its window now, and silence_events keeps who created and expired
-- it (append-only, like anomaly_triage_events).
CREATE TABLE silences (
    id               uuid        PRIMARY KEY,
    rule             text,
    dimension        text        CHECK (dimension IN ('global', 'category', 'merchant', 'auth_code')),
    dimension_value  text,
    merchant_id      text,
    category         text,
    severities       text[],
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL CHECK (ends_at >= starts_at),
    comment          text        NOT NULL,
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expired_at       timestamptz,
    expired_by       text
);
CREATE INDEX silences_window ON silences (ends_at, starts_at);

CREATE TABLE silence_events (
    seq         bigserial   PRIMARY KEY,
    silence_id  uuid        NOT NULL REFERENCES silences (id),
    action      text        NOT NULL CHECK (action IN ('create', 'expire')),
    actor       text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    silence     jsonb       NOT NULL
);
CREATE TRIGGER silence_events_append_only BEFORE UPDATE OR DELETE ON silence_events
    FOR EACH ROW EXECUTE FUNCTION anomaly_triage_events_append_only();

-- The one definition of "matches": used by v_silenced_anomalies and by the outbound forwarder
-- (which asks before the sink may have stored the anomaly).
CREATE FUNCTION matching_silences(p_rule text, p_dimension text, p_dimension_value text, p_merchant_id text,
                                  p_category text, p_severity text, p_at timestamptz)
RETURNS SETOF uuid LANGUAGE sql STABLE AS $$
    SELECT s.id FROM silences s
    WHERE p_at >= s.starts_at AND p_at < s.ends_at
      AND (s.rule IS NULL OR s.rule = p_rule)
      AND (s.dimension IS NULL OR s.dimension = p_dimension)
      AND (s.dimension_value IS NULL OR s.dimension_value = p_dimension_value)
      AND (s.merchant_id IS NULL OR s.merchant_id = p_merchant_id)
      AND (s.category IS NULL OR s.category = p_category)
      AND (s.severities IS NULL OR p_severity = ANY (s.severities))
$$;

-- Each silenced anomaly with the silences that match it.
CREATE VIEW v_silenced_anomalies AS
SELECT a.id AS anomaly_id, m.silence_id
FROM anomalies a
CROSS JOIN LATERAL matching_silences(a.rule, a.dimension, a.dimension_value, a.merchant_id, a.category, a.severity,
                                     a.first_seen) AS m(silence_id);
