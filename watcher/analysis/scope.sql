-- Which jobs an analysis looks at, and the facts known about each.
-- Inputs (temp tables made by engine.py): tw_params (one row), tw_scope_sessions, tw_scope_jobs.
-- Period mode leaves out the distributor's own scrape jobs (tw_params.scrape_job_name).
-- A job comes from accounting when Slurm knows it, else from the watcher's sessions rows
-- (a run outside Slurm, or accounting not imported yet), so a sampled job never vanishes and an
-- accounted job without samples is still judged from accounting alone.

-- name: session_keys
-- Every candidate session with the key of the job it belongs to.
CREATE OR REPLACE TEMP TABLE tw_session_keys AS
SELECT s.session_id,
       CASE
           WHEN j.job_id IS NOT NULL THEN j.cluster || ':' || j.job_id
           WHEN s.job_id IS NOT NULL THEN coalesce(s.cluster, '') || ':' || s.job_id
           ELSE 'local:' || s.session_id
       END AS job_key,
       j.job_id IS NOT NULL AS accounted
FROM sessions s
CROSS JOIN tw_params p
LEFT JOIN jobs j ON j.job_id = s.job_id AND (j.cluster = s.cluster OR s.cluster IS NULL)
WHERE NOT p.session_mode OR s.session_id IN (SELECT session_id FROM tw_scope_sessions)
QUALIFY row_number() OVER (PARTITION BY s.session_id ORDER BY j.cluster) = 1;

-- name: in_job_sessions_win
-- A job sampled on a node both by an in-job watcher (run, attach) and by the node scraper
-- (mode 'node', docs/scrape.md) is counted once: the in-job sessions win for that job and
-- node, and the scraper's are left out there. On nodes no in-job watcher sampled, the
-- scraper's sessions are the job's samples.
DELETE FROM tw_session_keys
WHERE session_id IN (
    SELECT s.session_id
    FROM sessions s JOIN tw_session_keys k USING (session_id)
    WHERE s.mode = 'node' AND EXISTS (
        SELECT 1
        FROM sessions o JOIN tw_session_keys ko USING (session_id)
        WHERE ko.job_key = k.job_key AND o.node = s.node AND o.mode <> 'node'));

-- name: jobs
CREATE OR REPLACE TEMP TABLE tw_jobs AS
WITH p AS (SELECT * FROM tw_params),
in_period AS (
    -- A job belongs to the period in which it ended; a running job to every period since its start.
    SELECT j.cluster || ':' || j.job_id AS job_key
    FROM jobs j, p
    WHERE CASE
        WHEN p.session_mode THEN j.cluster || ':' || j.job_id IN (
            SELECT job_key FROM tw_session_keys WHERE accounted
            UNION ALL SELECT job_key FROM tw_scope_jobs)
        ELSE j.start_time IS NOT NULL AND j.start_time < p.p_end
            AND (j.end_time IS NULL OR (j.end_time >= p.p_start AND j.end_time < p.p_end))
            AND (p.p_user IS NULL OR j.user_name = p.p_user)
            -- The distributor's scrape jobs (distributor.job_name, in distributor.account when
            -- one is set) are the service's, not a user's: no rule judges them, no letter shows them.
            AND NOT (j.job_name IS NOT DISTINCT FROM p.scrape_job_name
                     AND (p.scrape_account IS NULL OR j.account IS NOT DISTINCT FROM p.scrape_account))
    END
),
families AS (
    SELECT DISTINCT j.user_name, j.job_name, j.submit_line
    FROM jobs j JOIN in_period i ON i.job_key = j.cluster || ':' || j.job_id
),
history AS (
    -- Earlier jobs of the same families, for the "across history" tables (period mode only).
    SELECT j.cluster || ':' || j.job_id AS job_key
    FROM jobs j
    JOIN families f ON f.user_name = j.user_name
        AND f.job_name IS NOT DISTINCT FROM j.job_name
        AND f.submit_line IS NOT DISTINCT FROM j.submit_line
    CROSS JOIN p
    WHERE NOT p.session_mode AND j.start_time IS NOT NULL AND j.start_time < p.p_end
),
step_rss AS (
    -- A step's MaxRSS is one task's peak; tasks per node times it estimates the node's peak.
    SELECT cluster, job_id,
           max(max_rss_bytes * ceil(coalesce(ntasks, 1) / greatest(coalesce(nnodes, 1), 1)))::BIGINT
               AS steps_peak_rss_bytes
    FROM job_steps
    GROUP BY ALL
),
accounted AS (
    SELECT j.cluster || ':' || j.job_id AS job_key, j.cluster, j.job_id, j.job_id_display,
           j.array_job_id, j.user_name, j.account, j.partition, j.qos, j.job_name,
           j.submit_line, j.state, j.exit_code, j.exit_signal, j.start_time, j.end_time,
           coalesce(j.elapsed_s, epoch(coalesce(j.end_time, p.analysed_at) - j.start_time))
               AS elapsed_s,
           j.time_limit_s, coalesce(j.nnodes, 1) AS nnodes, j.ncpus, j.ngpus,
           j.req_mem_bytes // greatest(coalesce(j.nnodes, 1), 1) AS req_mem_per_node,
           j.total_cpu_s AS acct_cpu_s,
           greatest(j.max_rss_bytes, r.steps_peak_rss_bytes) AS acct_peak_rss_bytes,
           TRUE AS has_accounting,
           j.cluster || ':' || j.job_id IN (SELECT job_key FROM in_period) AS in_period
    FROM jobs j
    CROSS JOIN p
    LEFT JOIN step_rss r USING (cluster, job_id)
    WHERE j.cluster || ':' || j.job_id IN (SELECT job_key FROM in_period UNION SELECT job_key FROM history)
),
session_nodes AS (
    -- Sessions of jobs Slurm accounting does not know, one row per job and node.
    SELECT k.job_key, s.node, max(s.cores_available) AS cores, max(s.mem_requested_bytes) AS mem
    FROM sessions s JOIN tw_session_keys k USING (session_id)
    WHERE NOT k.accounted
    GROUP BY ALL
),
session_jobs AS (
    SELECT k.job_key, any_value(s.cluster) AS cluster, any_value(s.job_id) AS job_id,
           min(s.user_name) AS user_name, min(s.command) AS job_name,
           min(s.started_at) AS start_time,
           CASE WHEN bool_or(s.ended_at IS NULL) THEN NULL ELSE max(s.ended_at) END AS end_time,
           max(s.time_limit_s) AS time_limit_s,
           max(s.exit_code) AS exit_code, max(s.exit_signal) AS exit_signal
    FROM sessions s JOIN tw_session_keys k USING (session_id)
    WHERE NOT k.accounted
    GROUP BY k.job_key
),
unaccounted AS (
    SELECT sj.job_key, sj.cluster, sj.job_id, coalesce(sj.job_id::VARCHAR, sj.job_key) AS job_id_display,
           NULL::BIGINT AS array_job_id, sj.user_name, NULL AS account, NULL AS partition,
           NULL AS qos, sj.job_name, sj.job_name AS submit_line,
           CASE
               WHEN sj.end_time IS NULL THEN 'RUNNING'
               WHEN sj.exit_signal IS NOT NULL THEN 'SIGNALED'
               WHEN sj.exit_code = 0 THEN 'COMPLETED'
               ELSE 'FAILED'
           END AS state,
           sj.exit_code, sj.exit_signal, sj.start_time, sj.end_time,
           epoch(coalesce(sj.end_time, p.analysed_at) - sj.start_time) AS elapsed_s,
           sj.time_limit_s, n.nnodes, n.ncpus, 0 AS ngpus, n.req_mem_per_node,
           NULL::DOUBLE AS acct_cpu_s, NULL::BIGINT AS acct_peak_rss_bytes,
           FALSE AS has_accounting, TRUE AS in_period
    FROM session_jobs sj
    CROSS JOIN p
    JOIN (
        SELECT job_key, count(*) AS nnodes, sum(cores) AS ncpus, max(mem) AS req_mem_per_node
        FROM session_nodes GROUP BY job_key
    ) n USING (job_key)
    WHERE p.session_mode OR (
        sj.start_time < p.p_end
        AND (sj.end_time IS NULL OR (sj.end_time >= p.p_start AND sj.end_time < p.p_end))
        AND (p.p_user IS NULL OR sj.user_name = p.p_user))
)
SELECT * FROM accounted
UNION ALL BY NAME
SELECT * FROM unaccounted;

-- name: sessions
-- The sessions whose samples feed the analysis.
CREATE OR REPLACE TEMP TABLE tw_sessions AS
SELECT s.session_id, k.job_key, s.node, s.cores_available, s.interval_s
FROM sessions s
JOIN tw_session_keys k USING (session_id)
WHERE k.job_key IN (SELECT job_key FROM tw_jobs);
