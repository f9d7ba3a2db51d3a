-- Transactions per event-time minute (window start, inclusive; end = minute + 1 min, exclusive)
-- against the detector's global volume expectation, for Grafana's volume panel.
--
-- One row for every final minute the detector closes, a minute without any transaction too
-- (total 0): a traffic stop is a run of zeros here, not a gap. expected is the count the global
-- volume baseline expected, expected_low .. expected_high its normal range; all three are NULL
-- while the baseline warms up, with the volume rules off, and for the minutes stored before
-- this table (copied below from transactions, without an expectation). The sink writes the row
-- from the minute aggregate in the transaction that writes the aggregate's other rows, so a
-- minute is in both or in neither; a final minute is the same every time it is delivered, so
-- the row is simply set. Deleted after RETENTION_MINUTES_DATA like the other minute tables.
--
-- A final minute without transactions also writes its four statuses with count 0 in
-- transactions, so v_tx_minute lists it (total 0, rates NULL) and v_tx_anomaly's baseline
-- reads the 30 preceding clock minutes, of which those with traffic count (the view skips
-- minutes with total 0, and so does the evaluation's re-implementation of it).
CREATE TABLE volume_minutes (
    minute         timestamptz      PRIMARY KEY,
    total          bigint           NOT NULL CHECK (total >= 0),
    expected       double precision,
    expected_low   double precision,
    expected_high  double precision,
    written_at     timestamptz      NOT NULL DEFAULT now()
);

INSERT INTO volume_minutes (minute, total)
SELECT minute, sum(count)::bigint FROM transactions GROUP BY minute;
