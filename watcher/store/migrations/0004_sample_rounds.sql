-- The sample rounds stored: one row per (session, seq), whatever the round held (a round with no
-- process of the job has no row elsewhere). (session_id, seq) identifies a sample, so the spool
-- loaders (watcher/store/load_spool.sql) store each sample once, however often its line arrives:
-- a retried post of a running session's lines, or overlapping batches.

CREATE TABLE sample_rounds (
    session_id          VARCHAR NOT NULL,
    seq                 INTEGER NOT NULL,      -- sample round within the session, from 0
    ts                  TIMESTAMPTZ NOT NULL,  -- when it was read, as in its sample rows
    PRIMARY KEY (session_id, seq)
);

-- Stores loaded before this migration: the rounds their sample rows show.
INSERT INTO sample_rounds
SELECT session_id, seq, min(ts)
FROM (
    SELECT session_id, seq, ts FROM step_samples
    UNION ALL
    SELECT session_id, seq, ts FROM process_samples
    UNION ALL
    SELECT session_id, seq, ts FROM gpu_samples
)
GROUP BY session_id, seq;
