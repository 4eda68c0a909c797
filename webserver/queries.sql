-- What the web site reads from a published generation (webserver/data.py), one statement per
-- name, on cursors of the generation's snapshot.duckdb opened read-only. Each cursor of the
-- generation's small pool holds TEMP tables tw_jobs and tw_periods with what the pages need
-- per job and per period (prepare_*, built when the cursor is made), so that a request reads a
-- few hundred rows, never a sample table whole.
--
-- Parameters are named. $user is the viewer's user name, or NULL for an admin who sees
-- everyone: every statement that returns a user's data filters on it, so a page cannot forget.

-- name: prepare_jobs
-- One row per job: its end, requests, efficiencies and waste (common.md: idle core-hours =
-- (elapsed × cores − CPU time)/3600, never below 0; idle GPU-hours = elapsed × GPUs × (1 −
-- mean GPU utilization)/3600), whether it was sampled, and the rules found on it. Accounting
-- says who a job is; a job that was sampled but is not in accounting (yet: it is running, or
-- the next import has not come) is shown to the user its sessions name, only when they all
-- name the same one, with what its sessions say (no CPU time: unknown until accounting).
CREATE TEMP TABLE tw_jobs AS
WITH unaccounted AS (
    SELECT s.cluster, s.job_id, CAST(s.job_id AS VARCHAR) AS job_id_display,
           min(s.user_name) AS user_name, split_part(min(s.command), ' ', 1) AS job_name,
           CASE WHEN bool_or(s.ended_at IS NULL) THEN 'RUNNING' END AS state,
           max(s.exit_code) AS exit_code, max(s.exit_signal) AS exit_signal,
           min(s.started_at) AS start_time,
           CASE WHEN NOT bool_or(s.ended_at IS NULL) THEN max(s.ended_at) END AS end_time,
           max(s.time_limit_s) AS time_limit_s,
           CAST(CASE WHEN NOT bool_or(s.ended_at IS NULL)
                THEN epoch(max(s.ended_at)) - epoch(min(s.started_at)) END AS BIGINT) AS elapsed_s,
           CAST(count(DISTINCT s.node) AS INTEGER) AS nnodes,
           CAST(sum(s.cores_available) AS INTEGER) AS ncpus, 0 AS ngpus,
           CAST(sum(s.mem_requested_bytes) AS BIGINT) AS req_mem_bytes
    FROM sessions AS s ANTI JOIN jobs AS a ON a.cluster = s.cluster AND a.job_id = s.job_id
    WHERE s.job_id IS NOT NULL AND s.cluster IS NOT NULL
    GROUP BY s.cluster, s.job_id
    HAVING count(DISTINCT s.user_name) = 1 AND count(s.user_name) = count(*)
),
all_jobs AS (
    SELECT *, TRUE AS has_accounting FROM jobs
    UNION ALL BY NAME
    SELECT *, FALSE AS has_accounting FROM unaccounted
),
sampled AS (
    SELECT cluster, job_id, count(*) AS sessions, list(DISTINCT node ORDER BY node) AS nodes
    FROM sessions WHERE job_id IS NOT NULL GROUP BY ALL
),
gpu AS (
    SELECT s.cluster, s.job_id, avg(g.util_pct) AS gpu_util_pct,
           count(DISTINCT g.gpu_uuid) AS gpus_seen
    FROM gpu_samples AS g JOIN sessions AS s USING (session_id)
    WHERE s.job_id IS NOT NULL GROUP BY ALL
),
found AS (
    SELECT cluster, job_id, list(DISTINCT rule ORDER BY rule) AS rules,
           count(DISTINCT rule) FILTER (WHERE severity = 'serious') AS serious,
           count(DISTINCT rule) FILTER (WHERE severity = 'medium') AS medium,
           count(DISTINCT rule) FILTER (WHERE severity = 'info') AS info
    FROM analysis_findings WHERE job_id IS NOT NULL GROUP BY ALL
)
SELECT j.cluster, j.job_id, j.job_id_display, j.user_name, j.account, j.partition, j.job_name,
       j.state, j.exit_code, j.exit_signal, j.submit_time, j.start_time, j.end_time,
       j.time_limit_s, j.elapsed_s, j.nnodes, j.ncpus, j.ngpus, j.req_mem_bytes,
       j.max_rss_bytes, j.total_cpu_s, j.nodelist, j.has_accounting,
       j.total_cpu_s / nullif(j.elapsed_s * j.ncpus, 0) AS cpu_efficiency,
       -- greatest() skips NULLs: unknown CPU time or elapsed must stay unknown, not 0
       CASE WHEN j.elapsed_s IS NOT NULL AND j.ncpus IS NOT NULL AND j.total_cpu_s IS NOT NULL
            THEN greatest(j.elapsed_s * j.ncpus - j.total_cpu_s, 0) / 3600 END AS idle_core_hours,
       j.elapsed_s * j.ncpus / 3600 AS core_hours,
       gpu.gpu_util_pct,
       -- the GPUs the job held: accounting's count, else those its samples saw
       greatest(j.ngpus, coalesce(gpu.gpus_seen, 0)) AS gpus,
       CASE WHEN gpu.gpu_util_pct IS NOT NULL
            THEN j.elapsed_s * greatest(j.ngpus, gpu.gpus_seen)
                 * greatest(1 - gpu.gpu_util_pct / 100, 0) / 3600 END AS idle_gpu_hours,
       coalesce(sampled.sessions, 0) AS sessions, sampled.nodes,
       coalesce(found.rules, []) AS rules, coalesce(found.serious, 0) AS serious,
       coalesce(found.medium, 0) AS medium, coalesce(found.info, 0) AS info,
       coalesce(j.end_time, j.start_time, j.submit_time) AS sort_time
FROM all_jobs AS j
LEFT JOIN sampled USING (cluster, job_id)
LEFT JOIN gpu USING (cluster, job_id)
LEFT JOIN found USING (cluster, job_id)
ORDER BY j.user_name, sort_time DESC NULLS LAST

-- name: prepare_periods
-- Each analysed period per user: one line of the home page.
CREATE TEMP TABLE tw_periods AS
WITH runs AS (
    SELECT period_id, min(period_start) AS period_start, max(period_end) AS period_end,
           max(analysed_at) AS analysed_at
    FROM analysis_runs GROUP BY period_id
),
per_user AS (
    SELECT period_id, user_name, count(*) AS jobs,
           sum((metrics->>'$.core_hours')::DOUBLE) AS core_hours,
           sum((metrics->>'$.busy_core_hours')::DOUBLE) AS busy_core_hours,
           sum((metrics->>'$.gpu_hours')::DOUBLE) AS gpu_hours,
           sum((metrics->>'$.gpu_hours')::DOUBLE
               * greatest(1 - (metrics->>'$.gpu_avg_util_pct')::DOUBLE / 100, 0))
               AS idle_gpu_hours
    FROM analysis_jobs GROUP BY ALL
),
found AS (
    SELECT period_id, user_name,
           count(*) FILTER (WHERE severity = 'serious') AS serious,
           count(*) FILTER (WHERE severity = 'medium') AS medium,
           count(*) FILTER (WHERE severity = 'info') AS info
    FROM analysis_findings GROUP BY ALL
)
SELECT per_user.*, runs.period_start, runs.period_end, runs.analysed_at,
       coalesce(found.serious, 0) AS serious, coalesce(found.medium, 0) AS medium,
       coalesce(found.info, 0) AS info
FROM per_user JOIN runs USING (period_id) LEFT JOIN found USING (period_id, user_name)
ORDER BY user_name, period_start DESC

-- name: periods
SELECT * FROM tw_periods
WHERE $user IS NULL OR user_name = $user
ORDER BY period_start DESC, user_name

-- name: period
SELECT period_id, period_start, period_end FROM tw_periods
WHERE period_id = $period AND ($user IS NULL OR user_name = $user)
LIMIT 1

-- name: job_filters
-- The choices the job list offers: the viewer's states, rules and periods.
SELECT 'state' AS kind, state AS value FROM tw_jobs
WHERE $user IS NULL OR user_name = $user GROUP BY ALL
UNION ALL
SELECT DISTINCT 'rule', unnest(rules) FROM tw_jobs
WHERE $user IS NULL OR user_name = $user
UNION ALL
SELECT 'period', period_id FROM tw_periods
WHERE $user IS NULL OR user_name = $user GROUP BY ALL
ORDER BY 1, 2

-- name: jobs_where
-- The job list's filter, shared by the page and its count. $start/$end: a period's bounds.
WHERE ($user IS NULL OR user_name = $user)
  AND ($state IS NULL OR state = $state)
  AND ($rule IS NULL OR list_contains(rules, $rule))
  AND ($name IS NULL OR contains(lower(job_name), lower($name)))
  AND ($start IS NULL OR coalesce(end_time, start_time, submit_time) >= $start)
  AND ($end IS NULL OR coalesce(start_time, submit_time) < $end)

-- name: job
SELECT * FROM tw_jobs
WHERE cluster = $cluster AND job_id = $job_id AND ($user IS NULL OR user_name = $user)

-- name: job_clusters
-- The clusters where the viewer has a job of this id: /jobs/<job_id> (a site.job_url without
-- {cluster}) goes to the one there is.
SELECT DISTINCT cluster FROM tw_jobs
WHERE job_id = $job_id AND ($user IS NULL OR user_name = $user)
ORDER BY cluster
LIMIT 2

-- name: job_by_display
-- A job by the id Slurm shows (an array task's 123_4, a het job's 123+1), as letters link
-- it; $cluster NULL: any cluster of the viewer's.
SELECT cluster, job_id FROM tw_jobs
WHERE job_id_display = $display AND ($cluster IS NULL OR cluster = $cluster)
  AND ($user IS NULL OR user_name = $user)
ORDER BY cluster
LIMIT 2

-- name: job_sessions
-- The sampled sessions of one job (the sessions table is small: one row per job and node).
SELECT session_id, node, user_name, started_at, ended_at, interval_s, cores_available,
       mem_requested_bytes, gpu_status, exit_code, exit_signal
FROM sessions WHERE cluster = $cluster AND job_id = $job_id
ORDER BY node, started_at

-- name: job_steps
SELECT step, step_name, state, exit_code, exit_signal, start_time, end_time, elapsed_s, nnodes,
       ntasks, ncpus, ngpus, total_cpu_s, max_rss_bytes, max_rss_node
FROM job_steps WHERE cluster = $cluster AND job_id = $job_id
ORDER BY try_cast(step AS INTEGER) NULLS FIRST, step

-- name: job_findings
SELECT rule, severity, step, node, gpu, metrics FROM analysis_findings
WHERE cluster = $cluster AND job_id = $job_id
QUALIFY row_number() OVER (PARTITION BY rule, step, node, gpu ORDER BY period_id DESC) = 1
ORDER BY CASE severity WHEN 'serious' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, rule, step, node

-- name: step_series
-- Per node and step: cores in use and I/O rate from the deltas of the cumulative counters,
-- memory as charged (the RSS sum for spools from before mem_bytes). {sessions}: the job's
-- session ids as parameters (data.py writes $s0, $s1, …): a list of constants DuckDB pushes
-- into the scan, so only the row groups of those sessions are read, not the whole table.
SELECT node, step, epoch(ts) AS t,
       (cpu_user_s + cpu_system_s - lag(cpu_user_s + cpu_system_s) OVER w)
           / nullif(epoch(ts) - epoch(lag(ts) OVER w), 0) AS cores,
       coalesce(mem_bytes, rss_bytes) AS mem_bytes,
       (read_bytes + write_bytes - lag(read_bytes + write_bytes) OVER w)
           / nullif(epoch(ts) - epoch(lag(ts) OVER w), 0) AS io_bytes_s
FROM step_samples WHERE session_id IN ({sessions})
WINDOW w AS (PARTITION BY session_id, step ORDER BY ts)
ORDER BY node, step, ts

-- name: gpu_series
SELECT node, gpu_index, epoch(ts) AS t, util_pct, mem_used_bytes, mem_total_bytes, power_w
FROM gpu_samples WHERE session_id IN ({sessions})
ORDER BY node, gpu_index, ts

-- name: top_processes
-- The job's processes that used the most CPU: their own CPU time, largest RSS, last seen.
SELECT x.node, p.comm, p.pid, max(p.cpu_user_s + p.cpu_system_s) AS cpu_s,
       max(p.rss_bytes) AS rss_bytes, max(p.nthreads) AS threads, any_value(p.step) AS step
FROM process_samples AS p JOIN (
    SELECT session_id, node FROM sessions WHERE session_id IN ({sessions})
) AS x USING (session_id)
WHERE p.session_id IN ({sessions})
GROUP BY x.node, p.comm, p.pid, p.start_ticks
ORDER BY cpu_s DESC
LIMIT 10

-- name: findings_per_rule
SELECT period_id, rule, severity, count(*) AS findings, count(DISTINCT user_name) AS users
FROM analysis_findings GROUP BY ALL ORDER BY period_id DESC, findings DESC, rule

-- name: findings_per_user
SELECT period_id, user_name,
       count(*) FILTER (WHERE severity = 'serious') AS serious,
       count(*) FILTER (WHERE severity = 'medium') AS medium,
       count(*) FILTER (WHERE severity = 'info') AS info
FROM analysis_findings GROUP BY ALL
ORDER BY period_id DESC, serious DESC, medium DESC, user_name
LIMIT 200

-- name: top_wasters
SELECT user_name, count(*) AS jobs, sum(core_hours) AS core_hours,
       sum(idle_core_hours) AS idle_core_hours, sum(idle_gpu_hours) AS idle_gpu_hours
FROM tw_jobs GROUP BY user_name
ORDER BY idle_core_hours DESC NULLS LAST, idle_gpu_hours DESC NULLS LAST, user_name
LIMIT 20

-- name: utilization
-- Per day the jobs ran in (by their start): core-hours reserved and busy, GPU-hours.
SELECT (start_time AT TIME ZONE 'UTC')::DATE AS day, sum(core_hours) AS core_hours,
       sum(core_hours - coalesce(idle_core_hours, 0)) AS busy_core_hours,
       sum(elapsed_s * gpus) / 3600 AS gpu_hours,
       sum(idle_gpu_hours) AS idle_gpu_hours
FROM tw_jobs WHERE start_time IS NOT NULL GROUP BY ALL ORDER BY day

-- name: freshness
SELECT (SELECT max(finished_at) FROM accounting_imports) AS last_import,
       (SELECT max(analysed_at) FROM analysis_runs) AS last_analysis,
       (SELECT max(ts) FROM sample_rounds) AS last_sample,
       (SELECT max(imported_at) FROM jobs) AS last_job_import,
       (SELECT count(*) FROM tw_jobs) AS jobs,
       (SELECT count(DISTINCT user_name) FROM tw_jobs) AS users

-- name: users
SELECT DISTINCT user_name FROM tw_jobs ORDER BY 1
