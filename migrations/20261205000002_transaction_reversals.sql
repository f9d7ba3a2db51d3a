-- Reversals accepted by the producer (POST /transactions/{id}/reversal): each links the
-- `reversed` transaction it published to its original, with the amount it gave back. Written by
-- the producer in the transaction that checked what remains of the original (under an advisory
-- lock on the original's id, so concurrent reversals of one original never over-refund), and
-- committed once the broker acknowledged the reversed transaction.
CREATE TABLE transaction_reversals (
    reversal_id      text        PRIMARY KEY,
    original_id      text        NOT NULL,
    amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
    currency         text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    reason           text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transaction_reversals_original ON transaction_reversals (original_id);
