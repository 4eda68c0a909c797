-- Apply spool lines (watcher/spool.py, format v1) of one session to the store: the one SQL path
-- of both loaders in watcher/store/spool_loader.py, the whole file (load_spool) and a batch of a
-- running session's lines (apply_lines). Run in one transaction, on one cursor.
-- Parameters: $path (the spool, "read" only: its open file as /dev/fd/N, so that DuckDB never
-- reads its name as a glob and reads the very file the loader checked), $session_id, $job_id,
-- $node (from its session line), $steps, $procs, $gpus ("check": the fields of each row) and
-- $sessions_only ("check": the session lines alone).
--
-- The lines are first put one a row into TEMP spool_source (line), in their order: "read" does
-- so for a file, "batch" for a batch (apply_ndjson). Everything after is shared.
-- (session_id, seq) identifies a sample: a sample already stored (sample_rounds), or a second
-- line with the same seq, is skipped, so applying lines twice, or in overlapping batches, stores
-- each sample once. The array positions below follow watcher/records.py. A spool names its own
-- fields in its session line: rows of a spool whose fields differ are rebuilt in this order
-- by name as they are read (spool_row, "values"), so spools written before a field was added
-- still load (the field is NULL). A torn last line (crash) reads as NULL: skipped.

-- name: read
CREATE OR REPLACE TEMP TABLE spool_source AS
SELECT json AS line
FROM read_json_objects($path, format = 'newline_delimited', ignore_errors = true);

-- name: batch
-- A batch's lines, from the memory file that holds them ($path), one a row in their order, with
-- n: a line's place in the batch, blank lines included, for the message about one not JSON.
-- (trim copies each line: only a line that begins with a space needs it, and AND and OR would
-- run it on every line, CASE only on those.)
CREATE OR REPLACE TEMP TABLE spool_source AS
SELECT n, line
FROM (
    SELECT generate_subscripts(l, 1) - 1 AS n, unnest(l) AS line
    FROM (SELECT string_split(content, chr(10)) AS l FROM read_text($path))
)
WHERE CASE WHEN starts_with(line, ' ') THEN trim(line) <> '' ELSE line <> '' END;

-- name: not_json
SELECT n, left(line, 80) FROM spool_source WHERE NOT json_valid(line) ORDER BY n LIMIT 1;

-- name: parse
-- Each line's fields, and n: its place among the lines (blank lines aside), for messages. The
-- parts of a sample (steps, procs, gpus, cmd) stay JSON text, each read again alone (a part
-- is cheaper to parse again than a list of lists is to keep).
CREATE OR REPLACE TEMP TABLE spool_lines AS
SELECT n, k, v, json_transform(seq, '"INTEGER"') AS seq, json_type(seq) AS seq_type, ts,
       steps, procs, gpus, cmd, session, fields, "end"
FROM (
    SELECT n, unnest(json_transform(line, '{"k": "VARCHAR", "v": "INTEGER", "seq": "JSON",
        "ts": "DOUBLE", "steps": "JSON", "procs": "JSON", "gpus": "JSON", "cmd": "JSON",
        "session": "JSON", "fields": "JSON", "end": "JSON"}'))
    FROM (SELECT row_number() OVER (ORDER BY rowid) AS n, line FROM spool_source)
)
WHERE k IS NOT NULL;

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
-- Of a line's problems, the first below. (json_type of a missing key is NULL, of a JSON null
-- 'NULL'. A part is JSON text, NULL for a JSON null: its first character says its type.
-- json_array_length of a row that is not a list is 0: only a width of 0 needs the rows' types.)
WITH sample_parts AS (
    SELECT n,
        json_array_length(steps, '$[*]') AS steps_widths,
        json_array_length(procs, '$[*]') AS procs_widths,
        json_array_length(gpus, '$[*]') AS gpus_widths,
        json_array_length(cmd, '$[*]') AS cmd_widths,
        CASE WHEN $steps = 0 THEN json_type(steps, '$[*]') END AS steps_types,
        CASE WHEN $procs = 0 THEN json_type(procs, '$[*]') END AS procs_types,
        CASE WHEN $gpus = 0 THEN json_type(gpus, '$[*]') END AS gpus_types
    FROM spool_lines
    WHERE k = 'sample' AND NOT $sessions_only
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
        -- The parse reads a seq of 1.5 or true as 2 or 1, and a part that is not a list as none.
        WHEN k = 'sample' AND coalesce(seq_type, '') NOT IN ('BIGINT', 'UBIGINT')
            THEN 'a sample line without a whole-number seq'
        WHEN k = 'sample' AND NOT (coalesce(starts_with(steps, '['), true) AND coalesce(starts_with(procs, '['), true)
                AND coalesce(starts_with(gpus, '['), true) AND coalesce(starts_with(cmd, '['), true))
            THEN 'a sample line whose steps, procs, gpus or cmd is not a list'
        WHEN k = 'sample' AND (list_bool_or(list_transform(steps_widths, w -> w <> $steps))
                OR list_bool_or(list_transform(steps_types, x -> x <> 'ARRAY')))
            THEN 'a steps row that is not a list of ' || $steps || ' values'
        WHEN k = 'sample' AND (list_bool_or(list_transform(procs_widths, w -> w <> $procs))
                OR list_bool_or(list_transform(procs_types, x -> x <> 'ARRAY')))
            THEN 'a procs row that is not a list of ' || $procs || ' values'
        WHEN k = 'sample' AND (list_bool_or(list_transform(gpus_widths, w -> w <> $gpus))
                OR list_bool_or(list_transform(gpus_types, x -> x <> 'ARRAY')))
            THEN 'a gpus row that is not a list of ' || $gpus || ' values'
        WHEN k = 'sample' AND list_bool_or(list_transform(cmd_widths, w -> w <> 3))
            THEN 'a cmd row that is not a list of 3 values'
    END AS problem
    FROM spool_lines
    LEFT JOIN sample_parts USING (n)
    WHERE k = 'session' OR (k IN ('sample', 'end') AND NOT $sessions_only)
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
QUALIFY row_number() OVER (ORDER BY s.n) = 1;

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
-- Only their n is kept: a copy of their parts would cost more than reading them from spool_lines.
CREATE OR REPLACE TEMP TABLE spool_new AS
SELECT l.n
FROM spool_lines AS l
WHERE l.k = 'sample'
  AND NOT EXISTS (
      SELECT 1 FROM sample_rounds AS r WHERE r.session_id = $session_id AND r.seq = l.seq)
QUALIFY row_number() OVER (PARTITION BY l.seq ORDER BY l.n) = 1;
CREATE OR REPLACE TEMP VIEW spool_samples AS
SELECT n, seq, ts, steps, procs, gpus, cmd
FROM spool_lines
WHERE n IN (SELECT n FROM spool_new);
INSERT INTO sample_rounds
SELECT $session_id, seq, to_timestamp(ts)
FROM spool_samples;

-- name: values
-- A row's values are read from its part as JSON values (json_transform, one parse a part),
-- and spool_value is what r->>i would give of the row: text unquoted, anything else as
-- written (a number as the JSON has it, a list as JSON), NULL for null. Only text with an
-- escape in it needs parsing again.
-- A spool whose session line names other fields than this turingwatch writes (an older watcher,
-- before fields were added at the end, or a newer one) has each row rebuilt in this version's
-- field order, by name: spool_row, given for each field of ours its position in the spool's rows
-- (the parameters steps_map, procs_map, gpus_map), NULL where the spool has no such field: its value is then
-- NULL, and a field the schema requires is refused by the schema. Fields this version does not
-- know are left out.
CREATE OR REPLACE TEMP MACRO spool_value(e) AS
    CASE WHEN starts_with(e, '"')
        THEN CASE WHEN contains(e, '\') THEN json_extract_string(e, '$') ELSE (e::VARCHAR)[2:-2] END
        ELSE e::VARCHAR END;
CREATE OR REPLACE TEMP MACRO spool_row(r, map) AS
    CASE WHEN map IS NULL THEN r ELSE list_transform(map, i -> r[i + 1]) END;

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
    $session_id, seq, to_timestamp(ts), $job_id, spool_value(r[1]), $node,
    spool_value(r[2])::INTEGER, spool_value(r[3])::INTEGER, spool_value(r[4])::DOUBLE, spool_value(r[5])::DOUBLE,
    spool_value(r[6])::BIGINT, spool_value(r[7])::BIGINT, spool_value(r[8])::INTEGER, spool_value(r[9]),
    spool_value(r[10])::BIGINT, spool_value(r[11])::BIGINT, spool_value(r[12])::BIGINT, spool_value(r[13])::BIGINT,
    spool_value(r[14])::BIGINT, spool_value(r[15])::BIGINT, spool_value(r[16])::INTEGER, spool_value(r[17]),
    spool_value(r[18])::DOUBLE, spool_value(r[19])::BIGINT, spool_value(r[20]), spool_value(r[21])::BIGINT
FROM (
    SELECT seq, ts, spool_row(r, $steps_map::INTEGER[]) AS r
    FROM (SELECT seq, ts, unnest(json_transform(steps, '[["JSON"]]')) AS r FROM spool_samples)
);

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
    $session_id, p.seq, to_timestamp(p.ts), spool_value(p.r[1]),
    p.pid, spool_value(p.r[3])::INTEGER, p.start_ticks, spool_value(p.r[5]),
    c.cmdline,
    spool_value(p.r[6])::DOUBLE, spool_value(p.r[7])::DOUBLE, spool_value(p.r[8])::BIGINT,
    spool_value(p.r[9])::BIGINT, spool_value(p.r[10])::BIGINT, spool_value(p.r[11])::BIGINT, spool_value(p.r[12])::BIGINT,
    spool_value(p.r[13])::BIGINT, spool_value(p.r[14])::BIGINT, spool_value(p.r[15])::INTEGER,
    spool_value(p.r[16])::DOUBLE, spool_value(p.r[17])::BIGINT
FROM (
    SELECT seq, ts, r, spool_value(r[2])::INTEGER AS pid, spool_value(r[4])::BIGINT AS start_ticks
    FROM (
        SELECT seq, ts, spool_row(r, $procs_map::INTEGER[]) AS r
        FROM (SELECT seq, ts, unnest(json_transform(procs, '[["JSON"]]')) AS r FROM spool_samples)
    )
) AS p
LEFT JOIN (
    SELECT seq, spool_value(r[1])::INTEGER AS pid, spool_value(r[2])::BIGINT AS start_ticks,
           min(spool_value(r[3])) AS cmdline
    FROM (SELECT seq, unnest(json_transform(cmd, '[["JSON"]]')) AS r FROM spool_samples)
    GROUP BY ALL
) AS c
    ON c.seq = p.seq AND c.pid = p.pid AND c.start_ticks = p.start_ticks;

-- name: gpus
INSERT INTO gpu_samples
SELECT
    $session_id, seq, to_timestamp(ts), $job_id, $node,
    spool_value(r[1])::INTEGER, spool_value(r[2]), spool_value(r[3]),
    spool_value(r[4])::DOUBLE, spool_value(r[5])::DOUBLE, spool_value(r[6])::BIGINT, spool_value(r[7])::BIGINT,
    spool_value(r[8])::DOUBLE, spool_value(r[9])::DOUBLE, spool_value(r[10])::DOUBLE, spool_value(r[11])::DOUBLE,
    spool_value(r[12])::UBIGINT, CAST(r[13] AS INTEGER[]), spool_value(r[14])::INTEGER
FROM (
    SELECT seq, ts, spool_row(r, $gpus_map::INTEGER[]) AS r
    FROM (SELECT seq, ts, unnest(json_transform(gpus, '[["JSON"]]')) AS r FROM spool_samples)
);

-- name: owner
-- The user that owned the spool file, when the loader was told (ingest): migration 0007.
INSERT INTO session_owners (session_id, owner, trusted, spool)
VALUES ($session_id, $owner, $trusted, $spool);
