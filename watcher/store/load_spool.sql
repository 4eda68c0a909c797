-- Apply spool lines (watcher/spool.py, format v1) of one session to the store: the one SQL path
-- of both loaders in watcher/store/spool_loader.py, the whole file (load_spool) and a batch of a
-- running session's lines (apply_lines). Run in one transaction, on one cursor.
-- Parameters: $path (the spool, "read" only: its open file as /dev/fd/N, so that DuckDB never
-- reads its name as a glob and reads the very file the loader checked), $session_id, $job_id,
-- $node (from its session line), $steps, $procs, $gpus ("check": the fields of each row) and
-- $sessions_only ("check": the session lines alone).
--
-- The lines are first put one a row into TEMP spool_source (line JSON), in their order: "read"
-- does so for a file, apply_lines registers a batch under that name. Everything after is shared.
-- (session_id, seq) identifies a sample: a sample already stored (sample_rounds), or a second
-- line with the same seq, is skipped, so applying lines twice, or in overlapping batches, stores
-- each sample once. The array positions below follow watcher/records.py. A spool names its own
-- fields in its session line: rows of a spool whose fields differ are first rebuilt in this
-- order by name ("remap"), so spools written before a field was added still load (the field is
-- NULL). A torn last line (crash) reads as NULL: skipped.

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
-- Each line's fields, and n: its place among the lines (blank lines aside), for messages.
CREATE OR REPLACE TEMP TABLE spool_lines AS
SELECT *
FROM (
    SELECT n, unnest(json_transform(line, '{"k": "VARCHAR", "v": "INTEGER", "seq": "INTEGER",
        "ts": "DOUBLE", "steps": ["JSON"], "procs": ["JSON"], "gpus": ["JSON"], "cmd": ["JSON"],
        "session": "JSON", "fields": "JSON", "end": "JSON"}'))
    FROM (SELECT row_number() OVER (ORDER BY rowid) AS n, line FROM spool_source)
)
WHERE k IS NOT NULL
ORDER BY n;

-- name: skipped
-- How many lines are not spool lines: not JSON (a torn last line reads as NULL), not an object,
-- or of a kind this turingwatch does not know. Both loaders leave them out, and say how many.
SELECT (SELECT count(*) FROM spool_source)
     - (SELECT count(*) FROM spool_lines WHERE k IN ('session', 'sample', 'end'));

-- name: check
-- The first line of a known kind that the statements below could not store as its writer meant
-- it, and why: the loaders refuse the whole session for it rather than keep a part or a guess.
-- The rows of a sample hold as many values as the session line names fields. A value of the
-- wrong type inside a row is refused by the casts below, a missing required one by the schema.
-- The loaders first check the session lines alone, to know the session before anything else.
-- (json_type of a missing key is NULL, of a JSON null 'NULL'.)
WITH sample_rows AS (
    SELECT n, 'steps' AS part, $steps AS width, unnest(steps) AS r
    FROM spool_lines WHERE k = 'sample' AND NOT $sessions_only
    UNION ALL
    SELECT n, 'procs', $procs, unnest(procs) FROM spool_lines WHERE k = 'sample' AND NOT $sessions_only
    UNION ALL
    SELECT n, 'gpus', $gpus, unnest(gpus) FROM spool_lines WHERE k = 'sample' AND NOT $sessions_only
    UNION ALL
    SELECT n, 'cmd', 3, unnest(cmd) FROM spool_lines WHERE k = 'sample' AND NOT $sessions_only
),
sample_types AS (
    -- What the sample lines hold as JSON, read once a line: the parse above reads a seq of 1.5
    -- or true as 2 or 1, and a list that is not one as none.
    SELECT l.n, json_type(s.line, ['$.seq', '$.steps', '$.procs', '$.gpus', '$.cmd']) AS t
    FROM spool_lines AS l
    JOIN (SELECT row_number() OVER (ORDER BY rowid) AS n, line FROM spool_source) AS s USING (n)
    WHERE l.k = 'sample' AND NOT $sessions_only
),
problems AS (
    SELECT n, CASE
        WHEN k = 'session' AND coalesce(json_type(session), '') <> 'OBJECT'
            THEN 'a session line without its session'
        WHEN k = 'session' AND (coalesce(json_type(session, '$.session_id'), '') <> 'VARCHAR'
                OR json_extract_string(session, '$.session_id') = '')
            THEN 'a session line without a session_id'
        WHEN k = 'session' AND (coalesce(json_type(session, '$.node'), '') <> 'VARCHAR'
                OR json_extract_string(session, '$.node') = '')
            THEN 'a session line without a node'
        WHEN k = 'session' AND coalesce(json_type(session, '$.mode'), '') <> 'VARCHAR'
            THEN 'a session line without a mode'
        WHEN k = 'session'
                AND coalesce(json_type(session, '$.started_at'), '') NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE')
            THEN 'a session line without its start time'
        WHEN k = 'session'
                AND coalesce(json_type(session, '$.interval_s'), '') NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE')
            THEN 'a session line without its interval'
        WHEN k = 'session'
                AND coalesce(json_type(session, '$.job_id'), 'NULL') NOT IN ('NULL', 'BIGINT', 'UBIGINT')
            THEN 'a session line whose job_id is not a whole number'
        WHEN k = 'session' AND coalesce(json_type(session, '$.user_name'), 'NULL') NOT IN ('NULL', 'VARCHAR')
            THEN 'a session line whose user_name is not text'
        WHEN k = 'sample' AND (seq IS NULL OR seq < 0)
            THEN 'a sample line without a whole-number seq'
        WHEN k IN ('sample', 'end') AND ts IS NULL
            THEN 'a ' || k || ' line without its time'
        WHEN k = 'end' AND coalesce(json_type("end"), 'NULL') NOT IN ('NULL', 'OBJECT')
            THEN 'an end line whose end is not an object'
    END AS problem
    FROM spool_lines
    WHERE k = 'session' OR (k IN ('sample', 'end') AND NOT $sessions_only)
    UNION ALL
    SELECT n, CASE
        WHEN coalesce(t[1], '') NOT IN ('BIGINT', 'UBIGINT')
            THEN 'a sample line without a whole-number seq'
        WHEN coalesce(t[2], 'NULL') NOT IN ('NULL', 'ARRAY') OR coalesce(t[3], 'NULL') NOT IN ('NULL', 'ARRAY')
                OR coalesce(t[4], 'NULL') NOT IN ('NULL', 'ARRAY') OR coalesce(t[5], 'NULL') NOT IN ('NULL', 'ARRAY')
            THEN 'a sample line whose steps, procs, gpus or cmd is not a list'
    END
    FROM sample_types
    UNION ALL
    SELECT n, 'a ' || part || ' row that is not a list of ' || width || ' values'
    FROM sample_rows
    WHERE coalesce(json_type(r), '') <> 'ARRAY' OR json_array_length(r) <> width
)
SELECT n, problem
FROM problems
WHERE problem IS NOT NULL
ORDER BY n
LIMIT 1;

-- name: forget
DELETE FROM sessions WHERE session_id = $session_id;
DELETE FROM sample_rounds WHERE session_id = $session_id;
DELETE FROM step_samples WHERE session_id = $session_id;
DELETE FROM process_samples WHERE session_id = $session_id;
DELETE FROM gpu_samples WHERE session_id = $session_id;
DELETE FROM session_owners WHERE session_id = $session_id;

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
    -- A spool of other fields than ours keeps them (spool_fields): its later lines are read
    -- by them, also when they come in batches without the session line.
    json_merge_patch(coalesce(s.session->'meta', '{}'::JSON),
                     CASE WHEN $remap THEN json_object('spool_fields', s.fields) ELSE '{}'::JSON END)
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

-- name: remap
-- A spool whose session line names other fields than this turingwatch writes (an older watcher,
-- before fields were added at the end, or a newer one): each row is rebuilt in this version's
-- field order, by name. $steps_map, $procs_map, $gpus_map give, for each field of ours, its
-- position in the spool's rows, NULL where the spool has no such field: its value is then NULL,
-- and a field the schema requires is refused by the schema. Fields this version does not know
-- are left out. Run only when the fields differ. (The lambdas use json_extract, not the arrow
-- operator, which would read as a lambda arrow.)
UPDATE spool_samples SET
    steps = list_transform(steps, r -> to_json(list_transform($steps_map::INTEGER[], i -> json_extract(r, i)))),
    procs = list_transform(procs, r -> to_json(list_transform($procs_map::INTEGER[], i -> json_extract(r, i)))),
    gpus = list_transform(gpus, r -> to_json(list_transform($gpus_map::INTEGER[], i -> json_extract(r, i))));

-- name: steps
-- Columns by name: migrations add them at the end of the table in their own order.
INSERT INTO step_samples (
    session_id, seq, ts, job_id, step, node,
    nprocs, nthreads, cpu_user_s, cpu_system_s,
    rss_bytes, largest_rss_bytes, largest_pid, largest_comm,
    read_bytes, write_bytes, rchar, wchar,
    minor_faults, major_faults, cpus_available, cpus_source,
    cpu_wait_s, mem_bytes, mem_source, mem_peak_bytes)
SELECT
    $session_id, l.seq, to_timestamp(l.ts), $job_id, r->>0, $node,
    (r->>1)::INTEGER, (r->>2)::INTEGER, (r->>3)::DOUBLE, (r->>4)::DOUBLE,
    (r->>5)::BIGINT, (r->>6)::BIGINT, (r->>7)::INTEGER, r->>8,
    (r->>9)::BIGINT, (r->>10)::BIGINT, (r->>11)::BIGINT, (r->>12)::BIGINT,
    (r->>13)::BIGINT, (r->>14)::BIGINT, (r->>15)::INTEGER, r->>16,
    (r->>17)::DOUBLE, (r->>18)::BIGINT, r->>19, (r->>20)::BIGINT
FROM spool_samples AS l, unnest(l.steps) AS u(r);

-- name: processes
-- A process's command line comes in the "cmd" of the sample that first saw it.
INSERT INTO process_samples (
    session_id, seq, ts, step,
    pid, ppid, start_ticks, comm,
    cmdline,
    cpu_user_s, cpu_system_s, rss_bytes,
    read_bytes, write_bytes, rchar, wchar,
    minor_faults, major_faults, nthreads,
    cpu_wait_s, pss_bytes)
SELECT
    $session_id, p.seq, to_timestamp(p.ts), p.r->>0,
    (p.r->>1)::INTEGER, (p.r->>2)::INTEGER, (p.r->>3)::BIGINT, p.r->>4,
    c.cmdline,
    (p.r->>5)::DOUBLE, (p.r->>6)::DOUBLE, (p.r->>7)::BIGINT,
    (p.r->>8)::BIGINT, (p.r->>9)::BIGINT, (p.r->>10)::BIGINT, (p.r->>11)::BIGINT,
    (p.r->>12)::BIGINT, (p.r->>13)::BIGINT, (p.r->>14)::INTEGER,
    (p.r->>15)::DOUBLE, (p.r->>16)::BIGINT
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

-- name: owner
-- The user that owned the spool file, when the loader was told (ingest): migration 0007.
INSERT INTO session_owners (session_id, owner, trusted, spool)
VALUES ($session_id, $owner, $trusted, $spool);
