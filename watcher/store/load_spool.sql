-- Apply spool lines (watcher/spool.py, format v1) of one session to the store: the one SQL path
-- of both loaders in watcher/store/spool_loader.py, the whole file (load_spool) and a batch of a
-- running session's lines (apply_lines). Run in one transaction, on one cursor.
-- Parameters: $path (the spool, "read" only), $session_id, $job_id, $node (from its session line).
--
-- The lines are first put one a row into TEMP spool_source (line JSON), in their order: "read"
-- does so for a file, apply_lines registers a batch under that name. Everything after is shared.
-- (session_id, seq) identifies a sample: a sample already stored (sample_rounds), or a second
-- line with the same seq, is skipped, so applying lines twice, or in overlapping batches, stores
-- each sample once. The array positions below follow watcher/records.py; the loaders check the
-- spool's own field list against them first. A torn last line (crash) reads as NULL: skipped.

-- name: read
CREATE OR REPLACE TEMP TABLE spool_source AS
SELECT json AS line
FROM read_json_objects($path, format = 'newline_delimited', ignore_errors = true);

-- name: batch
CREATE OR REPLACE TEMP TABLE spool_source AS
SELECT line::JSON AS line
FROM spool_batch
ORDER BY n;

-- name: parse
CREATE OR REPLACE TEMP TABLE spool_lines AS
SELECT *
FROM (
    SELECT unnest(json_transform(line, '{"k": "VARCHAR", "v": "INTEGER", "seq": "INTEGER",
        "ts": "DOUBLE", "steps": ["JSON"], "procs": ["JSON"], "gpus": ["JSON"], "cmd": ["JSON"],
        "session": "JSON", "fields": "JSON", "end": "JSON"}'))
    FROM spool_source
)
WHERE k IS NOT NULL;

-- name: forget
DELETE FROM sessions WHERE session_id = $session_id;
DELETE FROM sample_rounds WHERE session_id = $session_id;
DELETE FROM step_samples WHERE session_id = $session_id;
DELETE FROM process_samples WHERE session_id = $session_id;
DELETE FROM gpu_samples WHERE session_id = $session_id;

-- name: session
-- The session's row from its first session line, unless it is stored already (the end comes
-- with the end line, below). No semicolons in these comments: the loader splits on them.
INSERT INTO sessions
SELECT
    $session_id,
    $job_id,
    s.session->>'cluster',
    $node,
    s.session->>'mode',
    s.session->>'user_name',
    s.session->>'command',
    to_timestamp((s.session->>'started_at')::DOUBLE),
    NULL,
    (s.session->>'interval_s')::DOUBLE,
    NULL,
    NULL,
    (s.session->>'cores_available')::INTEGER,
    (s.session->>'mem_requested_bytes')::BIGINT,
    (s.session->>'time_limit_s')::BIGINT,
    s.session->>'gpu_status',
    s.session->>'watcher_version',
    json_merge_patch(coalesce(s.session->'meta', '{}'::JSON), '{}'::JSON)
FROM spool_lines AS s
WHERE s.k = 'session'
  AND NOT EXISTS (SELECT 1 FROM sessions WHERE session_id = $session_id)
QUALIFY row_number() OVER (ORDER BY s.rowid) = 1;

-- name: end
-- The end line records the end of a session not ended yet, and the end record joins its meta.
UPDATE sessions AS s
SET ended_at = e.ended_at,
    exit_code = e.exit_code,
    exit_signal = e.exit_signal,
    time_limit_s = coalesce(s.time_limit_s, e.time_limit_s),
    meta = json_merge_patch(s.meta, coalesce(e."end", '{}'::JSON))
FROM (
    SELECT
        to_timestamp(max(ts)) AS ended_at,
        (max("end"->>'exit_code'))::INTEGER AS exit_code,
        (max("end"->>'exit_signal'))::INTEGER AS exit_signal,
        (max("end"->>'time_limit_s'))::BIGINT AS time_limit_s,
        any_value("end") AS "end"
    FROM spool_lines
    WHERE k = 'end'
    HAVING count(*) > 0
) AS e
WHERE s.session_id = $session_id AND s.ended_at IS NULL;

-- name: new_samples
-- The sample lines not stored yet, the first of each seq, and their rounds in sample_rounds.
CREATE OR REPLACE TEMP TABLE spool_samples AS
SELECT l.*
FROM spool_lines AS l
WHERE l.k = 'sample'
  AND NOT EXISTS (
      SELECT 1 FROM sample_rounds AS r WHERE r.session_id = $session_id AND r.seq = l.seq)
QUALIFY row_number() OVER (PARTITION BY l.seq ORDER BY l.rowid) = 1;
INSERT INTO sample_rounds
SELECT $session_id, seq, to_timestamp(ts)
FROM spool_samples;

-- name: steps
INSERT INTO step_samples
SELECT
    $session_id, l.seq, to_timestamp(l.ts), $job_id, r->>0, $node,
    (r->>1)::INTEGER, (r->>2)::INTEGER, (r->>3)::DOUBLE, (r->>4)::DOUBLE,
    (r->>5)::BIGINT, (r->>6)::BIGINT, (r->>7)::INTEGER, r->>8,
    (r->>9)::BIGINT, (r->>10)::BIGINT, (r->>11)::BIGINT, (r->>12)::BIGINT,
    (r->>13)::BIGINT, (r->>14)::BIGINT, (r->>15)::INTEGER, r->>16
FROM spool_samples AS l, unnest(l.steps) AS u(r);

-- name: processes
-- A process's command line comes in the "cmd" of the sample that first saw it.
INSERT INTO process_samples
SELECT
    $session_id, p.seq, to_timestamp(p.ts), p.r->>0,
    (p.r->>1)::INTEGER, (p.r->>2)::INTEGER, (p.r->>3)::BIGINT, p.r->>4,
    c.cmdline,
    (p.r->>5)::DOUBLE, (p.r->>6)::DOUBLE, (p.r->>7)::BIGINT,
    (p.r->>8)::BIGINT, (p.r->>9)::BIGINT, (p.r->>10)::BIGINT, (p.r->>11)::BIGINT,
    (p.r->>12)::BIGINT, (p.r->>13)::BIGINT, (p.r->>14)::INTEGER
FROM (
    SELECT l.seq, l.ts, u.r
    FROM spool_samples AS l, unnest(l.procs) AS u(r)
) AS p
LEFT JOIN (
    SELECT l.seq, (u.r->>0)::INTEGER AS pid, (u.r->>1)::BIGINT AS start_ticks,
           min(u.r->>2) AS cmdline
    FROM spool_samples AS l, unnest(l.cmd) AS u(r)
    GROUP BY ALL
) AS c
    ON c.seq = p.seq AND c.pid = (p.r->>1)::INTEGER AND c.start_ticks = (p.r->>3)::BIGINT;

-- name: gpus
INSERT INTO gpu_samples
SELECT
    $session_id, l.seq, to_timestamp(l.ts), $job_id, $node,
    (r->>0)::INTEGER, r->>1, r->>2,
    (r->>3)::DOUBLE, (r->>4)::DOUBLE, (r->>5)::BIGINT, (r->>6)::BIGINT,
    (r->>7)::DOUBLE, (r->>8)::DOUBLE, (r->>9)::DOUBLE, (r->>10)::DOUBLE,
    (r->>11)::UBIGINT, CAST(r->12 AS INTEGER[]), (r->>13)::INTEGER
FROM spool_samples AS l, unnest(l.gpus) AS u(r);
