-- Idempotency keys the producer has seen, shared by every producer instance and kept across
-- restarts (producer/src/idempotency.rs).
--
-- One row per (scope, key): the SHA-256 digest of the request's canonical body, and once the
-- request is answered, the answer (status, content type, other headers such as Location as
-- [name, value] pairs, body) to give again to a retry.
-- A row with completed_at NULL is a claim in progress; claimed_at lets another instance take
-- over a claim whose holder died (only for the same body). Rows older than the window
-- (IDEMPOTENCY_WINDOW, 24 h by default) count as absent and are deleted by the producer.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    body_digest  bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    status       smallint,
    content_type text,
    headers      jsonb,
    response     bytea,
    PRIMARY KEY (scope, key),
    CHECK ((completed_at IS NULL) = (status IS NULL))
);

-- The expiry job deletes by age.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
