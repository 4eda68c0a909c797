-- Load one spool file (watcher/spool.py, format v1) into the store.
-- Parameters: $path (the spool), $session_id, $job_id, $node (from its session line).
-- Run in one transaction by watcher/store/spool_loader.py; re-loading a session replaces it.
-- The array positions below follow watcher/sampling/records.py; the loader checks the spool's
-- own field list against them first. A torn last line (crash) reads as a row of NULLs: skipped.

-- name: read
CREATE OR REPLACE TEMP TABLE spool_lines AS
SELECT * FROM read_json($path, format = 'newline_delimited', ignore_errors = true,
    columns = {k: 'VARCHAR', seq: 'INTEGER', ts: 'DOUBLE', steps: 'JSON[]', procs: 'JSON[]',
               gpus: 'JSON[]', cmd: 'JSON[]', session: 'JSON', "end": 'JSON'})
WHERE k IS NOT NULL;

-- name: forget
DELETE FROM sessions WHERE session_id = $session_id;
DELETE FROM step_samples WHERE session_id = $session_id;
DELETE FROM process_samples WHERE session_id = $session_id;
DELETE FROM gpu_samples WHERE session_id = $session_id;

-- name: session
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
    (SELECT to_timestamp(max(ts)) FROM spool_lines WHERE k = 'end'),
    (s.session->>'interval_s')::DOUBLE,
    (SELECT (max("end"->>'exit_code'))::INTEGER FROM spool_lines WHERE k = 'end'),
    (SELECT (max("end"->>'exit_signal'))::INTEGER FROM spool_lines WHERE k = 'end'),
    (s.session->>'cores_available')::INTEGER,
    (s.session->>'mem_requested_bytes')::BIGINT,
    coalesce((s.session->>'time_limit_s')::BIGINT,
             (SELECT (max("end"->>'time_limit_s'))::BIGINT FROM spool_lines WHERE k = 'end')),
    s.session->>'gpu_status',
    s.session->>'watcher_version',
    json_merge_patch(
        coalesce(s.session->'meta', '{}'::JSON),
        coalesce((SELECT any_value("end") FROM spool_lines WHERE k = 'end'), '{}'::JSON))
FROM spool_lines AS s
WHERE s.k = 'session';

-- name: steps
INSERT INTO step_samples
SELECT
    $session_id, l.seq, to_timestamp(l.ts), $job_id, r->>0, $node,
    (r->>1)::INTEGER, (r->>2)::INTEGER, (r->>3)::DOUBLE, (r->>4)::DOUBLE,
    (r->>5)::BIGINT, (r->>6)::BIGINT, (r->>7)::INTEGER, r->>8,
    (r->>9)::BIGINT, (r->>10)::BIGINT, (r->>11)::BIGINT, (r->>12)::BIGINT,
    (r->>13)::BIGINT, (r->>14)::BIGINT, (r->>15)::INTEGER, r->>16
FROM spool_lines AS l, unnest(l.steps) AS u(r)
WHERE l.k = 'sample';

-- name: processes
INSERT INTO process_samples
SELECT
    $session_id, l.seq, to_timestamp(l.ts), r->>0,
    (r->>1)::INTEGER, (r->>2)::INTEGER, (r->>3)::BIGINT, r->>4,
    NULL,
    (r->>5)::DOUBLE, (r->>6)::DOUBLE, (r->>7)::BIGINT,
    (r->>8)::BIGINT, (r->>9)::BIGINT, (r->>10)::BIGINT, (r->>11)::BIGINT,
    (r->>12)::BIGINT, (r->>13)::BIGINT, (r->>14)::INTEGER
FROM spool_lines AS l, unnest(l.procs) AS u(r)
WHERE l.k = 'sample';

-- name: cmdlines
UPDATE process_samples AS p
SET cmdline = c.cmdline
FROM (
    SELECT l.seq, (r->>0)::INTEGER AS pid, (r->>1)::BIGINT AS start_ticks, r->>2 AS cmdline
    FROM spool_lines AS l, unnest(l.cmd) AS u(r)
    WHERE l.k = 'sample'
) AS c
WHERE p.session_id = $session_id AND p.seq = c.seq AND p.pid = c.pid
  AND p.start_ticks = c.start_ticks;

-- name: gpus
INSERT INTO gpu_samples
SELECT
    $session_id, l.seq, to_timestamp(l.ts), $job_id, $node,
    (r->>0)::INTEGER, r->>1, r->>2,
    (r->>3)::DOUBLE, (r->>4)::DOUBLE, (r->>5)::BIGINT, (r->>6)::BIGINT,
    (r->>7)::DOUBLE, (r->>8)::DOUBLE, (r->>9)::DOUBLE, (r->>10)::DOUBLE,
    (r->>11)::UBIGINT, CAST(r->12 AS INTEGER[]), (r->>13)::INTEGER
FROM spool_lines AS l, unnest(l.gpus) AS u(r)
WHERE l.k = 'sample';
