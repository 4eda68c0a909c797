-- The sent-ledger: one row per (period, user) letter, in its own SQLite file.
-- 'sending' is written (and synced) before the letter is handed to the SMTP server, 'sent'
-- after the server accepted it. A 'sending' row that outlives its run is "unconfirmed": the
-- run stopped inside the SMTP exchange, so nobody knows whether the server took the letter.
-- 'failed' rows are tried again by the next run.

CREATE TABLE IF NOT EXISTS deliveries (
    period      TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    message_id  TEXT NOT NULL,         -- the same for every try of one letter
    recipients  TEXT NOT NULL,         -- envelope recipients, comma separated
    attempts    INTEGER NOT NULL,      -- SMTP tries over all runs
    last_error  TEXT,
    claimed_by  TEXT NOT NULL,         -- host:pid of the run that wrote the row last
    updated_at  TEXT NOT NULL,         -- ISO 8601, UTC
    sent_at     TEXT,
    PRIMARY KEY (period, user_name)
);
