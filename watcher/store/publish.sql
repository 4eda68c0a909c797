-- What `publish` (watcher/store/publish.py) writes for readers, one statement per name. All of
-- them run in one transaction, so the snapshot, the Parquet and the data version are one view.
--
-- Every Parquet table is partitioned by (cluster, day), Hive style: cluster=<key>/day=<date>/.
-- <key> is the cluster's name when it is a plain one (letters, digits, '.', '_', '-', up to 64,
-- starting with a letter or digit), else a sanitised form of it plus '~' and 12 hex digits of
-- its SHA-256, so no name can make a path ('/', '..', '='), nothing else has to decode it
-- (Spark and Trino unescape '%XX' byte by byte and would garble UTF-8; DuckDB reads a key
-- 'NULL' as NULL) and two names never share a key. The true name is the column cluster_name;
-- the key is not written into the files. NULL (a run outside Slurm) is Hive's default
-- partition. day is the UTC date of the row's own time, a hint for pruning, not a key.

-- name: cluster_key
CREATE OR REPLACE TEMP MACRO tw_cluster_key(c) AS CASE
    WHEN c IS NULL THEN NULL
    WHEN regexp_full_match(c, '[A-Za-z0-9][A-Za-z0-9._-]{0,63}')
         AND lower(c) NOT IN ('null', '__hive_default_partition__') THEN c
    ELSE left(regexp_replace(c, '[^A-Za-z0-9._-]', '_', 'g'), 40) || '~' || left(sha256(c), 12)
END

-- name: data_version
-- Cheap enough to run every minute: sample tables only grow (a reloaded session is deleted and
-- appended again, so its rowids move on), so their count and largest rowid say whether they
-- changed; the small tables that are updated in place (a session's end, a job re-imported, an
-- analysis re-run) are summed over a hash of every row.
SELECT [
    (SELECT count(*) FROM sample_rounds), (SELECT coalesce(max(rowid), -1) FROM sample_rounds),
    (SELECT count(*) FROM step_samples), (SELECT coalesce(max(rowid), -1) FROM step_samples),
    (SELECT count(*) FROM process_samples), (SELECT coalesce(max(rowid), -1) FROM process_samples),
    (SELECT count(*) FROM gpu_samples), (SELECT coalesce(max(rowid), -1) FROM gpu_samples),
    (SELECT count(*) FROM schema_migrations)
]::HUGEINT[] AS grows, [
    (SELECT coalesce(sum(hash(t)::HUGEINT), 0) FROM sessions AS t),
    (SELECT coalesce(sum(hash(t)::HUGEINT), 0) FROM session_owners AS t),
    (SELECT coalesce(sum(hash(t)::HUGEINT), 0) FROM jobs AS t),
    (SELECT coalesce(sum(hash(t)::HUGEINT), 0) FROM job_steps AS t),
    (SELECT coalesce(sum(hash(t)::HUGEINT), 0) FROM accounting_imports AS t),
    (SELECT coalesce(sum(hash(t)::HUGEINT), 0) FROM analysis_runs AS t)
]::HUGEINT[] AS hashes

-- name: sessions
SELECT * EXCLUDE (cluster), cluster AS cluster_name, tw_cluster_key(cluster) AS cluster,
       (started_at AT TIME ZONE 'UTC')::DATE AS day
FROM sessions

-- name: sample_rounds
SELECT r.*, s.cluster AS cluster_name, tw_cluster_key(s.cluster) AS cluster,
       (r.ts AT TIME ZONE 'UTC')::DATE AS day
FROM sample_rounds AS r LEFT JOIN sessions AS s USING (session_id)

-- name: step_samples
SELECT x.*, s.cluster AS cluster_name, tw_cluster_key(s.cluster) AS cluster,
       (x.ts AT TIME ZONE 'UTC')::DATE AS day
FROM step_samples AS x LEFT JOIN sessions AS s USING (session_id)

-- name: process_samples
SELECT x.*, s.cluster AS cluster_name, tw_cluster_key(s.cluster) AS cluster,
       (x.ts AT TIME ZONE 'UTC')::DATE AS day
FROM process_samples AS x LEFT JOIN sessions AS s USING (session_id)

-- name: gpu_samples
SELECT x.*, s.cluster AS cluster_name, tw_cluster_key(s.cluster) AS cluster,
       (x.ts AT TIME ZONE 'UTC')::DATE AS day
FROM gpu_samples AS x LEFT JOIN sessions AS s USING (session_id)

-- name: jobs
-- By the day it was submitted, which a re-import does not change (its end does).
SELECT * EXCLUDE (cluster), cluster AS cluster_name, tw_cluster_key(cluster) AS cluster,
       (coalesce(submit_time, start_time, end_time, imported_at) AT TIME ZONE 'UTC')::DATE AS day
FROM jobs

-- name: job_steps
-- In the day of their job, so a job and its steps are read together.
SELECT st.* EXCLUDE (cluster), st.cluster AS cluster_name, tw_cluster_key(st.cluster) AS cluster,
       (coalesce(j.submit_time, j.start_time, st.start_time, st.imported_at)
        AT TIME ZONE 'UTC')::DATE AS day
FROM job_steps AS st LEFT JOIN jobs AS j USING (cluster, job_id)

-- Reading several publications back into one store (watcher/store/published.py). tw_src_<table>
-- is every given generation's Parquet of the table, with tw_source the generation's place in
-- the list; a site that runs a server per group of nodes has each session in one of them, and
-- may have the same job in several (each server imports its cluster's accounting).

-- name: chosen_sessions
-- One copy of each session: an ended one before a running one, else the first generation's.
CREATE TEMP TABLE tw_pub_sessions AS
SELECT session_id, tw_source FROM tw_src_sessions
QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY ended_at IS NULL, tw_source) = 1

-- name: load_sessions
INSERT INTO sessions BY NAME
SELECT x.* EXCLUDE (cluster_name, tw_source), x.cluster_name AS cluster
FROM tw_src_sessions AS x SEMI JOIN tw_pub_sessions USING (session_id, tw_source)

-- name: load_samples
-- The samples of the copy of their session that was kept (or of no session at all, as stored).
INSERT INTO {table} BY NAME
SELECT x.* EXCLUDE (cluster_name, tw_source)
FROM tw_src_{table} AS x LEFT JOIN tw_pub_sessions AS p USING (session_id)
WHERE p.tw_source IS NULL OR p.tw_source = x.tw_source

-- name: load_jobs
-- A job each server imported: the newest import counts, once.
INSERT INTO jobs BY NAME
SELECT * EXCLUDE (cluster_name, tw_source), cluster_name AS cluster FROM tw_src_jobs
QUALIFY row_number() OVER (
    PARTITION BY cluster_name, job_id ORDER BY imported_at DESC, tw_source) = 1

-- name: load_job_steps
INSERT INTO job_steps BY NAME
SELECT * EXCLUDE (cluster_name, tw_source), cluster_name AS cluster FROM tw_src_job_steps
QUALIFY row_number() OVER (
    PARTITION BY cluster_name, job_id, step ORDER BY imported_at DESC, tw_source) = 1
