-- The sent-ledger: one row per (period, user) letter, in its own SQLite file.
-- 'sending' is written (and synced) once the server has accepted MAIL FROM and RCPT TO, just
-- before DATA hands it the letter; 'sent' after the server answered 250 to the letter.
-- A 'sending' row that outlives its run is "unconfirmed": the run stopped inside DATA, so
-- nobody knows whether the server took the letter; it is not sent again until an admin says
-- so (mail --mark-sent USER or --resend USER). 'failed' rows (a refusal, or a connection
-- that broke before DATA) are tried again by the next run.
--
-- The file is read by watcher/mailer/ledger.py: the part before the first "-- name:" line
-- is the schema, run on every open; each "-- name: <statement>" part is one statement,
-- with ? parameters in the order its comment gives.

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

-- name: entry
-- One letter's row. Parameters: period, user.
SELECT period, user_name, state, message_id, recipients, attempts, last_error, updated_at,
       sent_at
FROM deliveries
WHERE period = ? AND user_name = ?;

-- name: entries
-- Every row of one period. Parameters: period.
SELECT period, user_name, state, message_id, recipients, attempts, last_error, updated_at,
       sent_at
FROM deliveries
WHERE period = ?
ORDER BY user_name;

-- name: unconfirmed
-- Every letter of every period that a run left in 'sending'. No parameters.
SELECT period, user_name, state, message_id, recipients, attempts, last_error, updated_at,
       sent_at
FROM deliveries
WHERE state = 'sending'
ORDER BY period, user_name;

-- name: mark_sending
-- This try hands the letter over now: it counts as one more attempt.
-- Parameters: period, user, message_id, recipients, claimed_by, updated_at.
INSERT INTO deliveries (period, user_name, state, message_id, recipients, attempts, claimed_by,
                        updated_at)
VALUES (?, ?, 'sending', ?, ?, 1, ?, ?)
ON CONFLICT (period, user_name) DO UPDATE SET
    state = 'sending',
    message_id = excluded.message_id,
    recipients = excluded.recipients,
    attempts = deliveries.attempts + 1,
    claimed_by = excluded.claimed_by,
    updated_at = excluded.updated_at;

-- name: mark_failed_before_data
-- A try that ended before DATA (a refusal, a broken connection): one more attempt, failed.
-- Parameters: period, user, message_id, recipients, last_error, claimed_by, updated_at.
INSERT INTO deliveries (period, user_name, state, message_id, recipients, attempts, last_error,
                        claimed_by, updated_at)
VALUES (?, ?, 'failed', ?, ?, 1, ?, ?, ?)
ON CONFLICT (period, user_name) DO UPDATE SET
    state = 'failed',
    message_id = excluded.message_id,
    recipients = excluded.recipients,
    attempts = deliveries.attempts + 1,
    last_error = excluded.last_error,
    claimed_by = excluded.claimed_by,
    updated_at = excluded.updated_at;

-- name: mark_failed
-- The try marked 'sending' was refused after all (an answer to DATA other than 250).
-- Parameters: last_error, updated_at, period, user.
UPDATE deliveries
SET state = 'failed', last_error = ?, updated_at = ?
WHERE period = ? AND user_name = ?;

-- name: mark_sent
-- The server answered 250 to the letter. Parameters: note, updated_at, sent_at, period, user.
UPDATE deliveries
SET state = 'sent', last_error = ?, updated_at = ?, sent_at = ?
WHERE period = ? AND user_name = ?;

-- name: resolve_sent
-- An admin found an unconfirmed letter in the mail server's log: it counts as sent.
-- Parameters: note, claimed_by, updated_at, sent_at, period, user.
UPDATE deliveries
SET state = 'sent', last_error = ?, claimed_by = ?, updated_at = ?, sent_at = ?
WHERE period = ? AND user_name = ? AND state = 'sending';
