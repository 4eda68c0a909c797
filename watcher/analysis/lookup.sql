-- Read-only queries of `turingwatch job` and `turingwatch jobs` (watcher/analysis/lookup.py).
-- Nothing here writes: the store may be the server's published snapshot, opened read-only.
-- Parameters are named ($job_id, …) and every one is given, NULL meaning "any".
-- Waste as every reader says it: idle core-hours = (elapsed × cores − CPU time) / 3600, never
-- below 0; idle GPU-hours = elapsed × GPUs × (1 − mean GPU utilization) / 3600, where sampled.

-- name: find_job
-- $text: the id as Slurm prints it (123, 123_4, 123+1) or the raw id; $cluster: NULL for any.
SELECT cluster, job_id, job_id_display, job_name, user_name, account, partition, qos, state,
       exit_code, exit_signal, submit_time, start_time, end_time, time_limit_s, elapsed_s,
       nnodes, ncpus, ngpus, req_mem_bytes, alloc_mem_bytes, nodelist, total_cpu_s,
       user_cpu_s, system_cpu_s, max_rss_bytes, work_dir, submit_line
FROM jobs
WHERE (job_id_display = $text OR CAST(job_id AS VARCHAR) = $text)
  AND ($cluster::VARCHAR IS NULL OR cluster = $cluster)
-- the display id first (123_4 is that task, not the job whose raw id is 1234…), then the newest
ORDER BY job_id_display = $text DESC, end_time DESC NULLS FIRST, cluster;

-- name: imported_until
-- Where the accounting imports of a cluster reached, for "not in the store" messages.
SELECT max(window_end) FROM accounting_imports
WHERE $cluster::VARCHAR IS NULL OR cluster = $cluster;

-- name: node_usage
-- One row per node the watcher sampled the job on: cores it could use, CPU seconds used over
-- the sampled span (the rise of the cumulative counters, per step, summed), peak memory of one
-- sample round (the kernel's charge where known, else the RSS sum).
WITH chosen AS (
    SELECT session_id, node FROM sessions
    WHERE job_id = $job_id AND ($cluster::VARCHAR IS NULL OR cluster IS NULL OR cluster = $cluster)
),
per_step AS (
    SELECT s.session_id, c.node, s.step,
           max(s.cpu_user_s + s.cpu_system_s) - min(s.cpu_user_s + s.cpu_system_s) AS cpu_s
    FROM step_samples s JOIN chosen c USING (session_id)
    GROUP BY ALL
),
rounds AS (
    SELECT s.session_id, c.node, s.seq, min(s.ts) AS ts,
           sum(coalesce(s.mem_bytes, s.rss_bytes)) AS mem_bytes,
           max(s.cpus_available) AS cpus
    FROM step_samples s JOIN chosen c USING (session_id)
    GROUP BY ALL
)
SELECT r.node,
       count(*) AS samples,
       epoch(max(r.ts) - min(r.ts)) AS span_s,
       max(r.cpus) AS cores,
       (SELECT sum(p.cpu_s) FROM per_step p WHERE p.node = r.node) AS cpu_s,
       max(r.mem_bytes) AS mem_peak_bytes
FROM rounds r
GROUP BY r.node
ORDER BY r.node;

-- name: gpu_usage
-- One row per GPU the job could use, as NVML saw it at each sample.
SELECT g.node, g.gpu_index, any_value(g.gpu_uuid) AS gpu_uuid, any_value(g.gpu_name) AS gpu_name,
       count(*) AS samples, avg(g.util_pct) AS util_pct, max(g.mem_used_bytes) AS mem_used_bytes,
       max(g.mem_total_bytes) AS mem_total_bytes
FROM gpu_samples g JOIN sessions s USING (session_id)
WHERE s.job_id = $job_id AND ($cluster::VARCHAR IS NULL OR s.cluster IS NULL OR s.cluster = $cluster)
GROUP BY g.node, g.gpu_index
ORDER BY g.node, g.gpu_index;

-- name: analysed_period
-- The period whose analysis judged the job last (analysis_jobs lists every job judged, with
-- findings or without); NULL: never analysed.
SELECT j.period_id
FROM analysis_jobs j LEFT JOIN analysis_runs r ON r.period_id = j.period_id
WHERE j.job_key = $job_key
ORDER BY r.analysed_at DESC NULLS LAST, j.period_id DESC
LIMIT 1;

-- name: stored_findings
SELECT rule, severity, step, node, gpu, metrics
FROM analysis_findings
WHERE job_key = $job_key AND period_id = $period_id
ORDER BY CASE severity WHEN 'serious' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, rule,
         step NULLS FIRST, node, gpu;

-- name: job_list
-- One row per job like reportseff. $sort: 'end' (the newest $limit jobs, oldest first, running
-- jobs last) or 'waste' (most idle core-hours and GPU-hours first). The GPU means are read only
-- for the jobs the filters keep that hold GPUs.
WITH picked AS (
    SELECT * FROM jobs
    WHERE ($user::VARCHAR IS NULL OR user_name = $user)
      AND ($states::VARCHAR[] IS NULL OR list_contains($states, upper(split_part(state, ' ', 1))))
      AND ($name::VARCHAR IS NULL OR job_name GLOB $name)
      AND ($since::TIMESTAMPTZ IS NULL OR coalesce(end_time, now()) >= $since)
      AND ($until::TIMESTAMPTZ IS NULL OR coalesce(start_time, submit_time) < $until)
      AND ($cluster::VARCHAR IS NULL OR cluster = $cluster)
),
gpu AS (
    -- keyed by the job's own cluster, so that the join below is on equal keys only (an OR in a
    -- join condition makes DuckDB compare every pair: seconds on a week of jobs)
    SELECT p.cluster, p.job_id, avg(g.util_pct) AS util_pct
    FROM picked p
    JOIN sessions s ON s.job_id = p.job_id
    JOIN gpu_samples g ON g.session_id = s.session_id
    WHERE p.ngpus > 0 AND (s.cluster IS NULL OR s.cluster = p.cluster)
    GROUP BY p.cluster, p.job_id
),
measured AS (
    SELECT p.cluster, p.job_id, p.job_id_display, p.job_name, p.user_name, p.account,
           p.partition, p.state, p.exit_code, p.exit_signal, p.start_time, p.end_time,
           p.elapsed_s, p.time_limit_s, p.ncpus, p.ngpus, p.nnodes, p.total_cpu_s,
           p.max_rss_bytes, p.req_mem_bytes,
           p.elapsed_s / nullif(p.time_limit_s, 0) AS time_eff,
           p.total_cpu_s / nullif(p.elapsed_s * p.ncpus, 0) AS cpu_eff,
           p.max_rss_bytes / nullif(p.req_mem_bytes, 0) AS mem_eff,
           g.util_pct / 100 AS gpu_eff,
           CASE WHEN p.total_cpu_s IS NOT NULL AND p.elapsed_s IS NOT NULL AND p.ncpus IS NOT NULL
                THEN greatest(p.elapsed_s * p.ncpus - p.total_cpu_s, 0) / 3600 END
               AS idle_core_hours,
           CASE WHEN g.util_pct IS NOT NULL
                THEN p.elapsed_s * p.ngpus * greatest(1 - g.util_pct / 100, 0) / 3600 END
               AS idle_gpu_hours
    FROM picked p
    LEFT JOIN gpu g ON g.job_id = p.job_id AND g.cluster = p.cluster
),
limited AS (
    SELECT * FROM measured
    ORDER BY
        CASE WHEN $sort = 'waste'
             THEN coalesce(idle_core_hours, 0) + coalesce(idle_gpu_hours, 0) END DESC NULLS LAST,
        end_time DESC NULLS FIRST, job_id DESC
    LIMIT $limit
)
SELECT * FROM limited
ORDER BY
    CASE WHEN $sort = 'waste'
         THEN coalesce(idle_core_hours, 0) + coalesce(idle_gpu_hours, 0) END DESC NULLS LAST,
    end_time ASC NULLS LAST, job_id;

-- The rows of one job a private in-memory store needs to judge it (lookup.py judge_alone):
-- copied from the store attached read-only as tw_src, so that the engine's pipeline scans one
-- job's samples instead of the whole store's.

-- name: copy_jobs
INSERT INTO jobs BY NAME SELECT * FROM tw_src.jobs WHERE cluster = $cluster AND job_id = $job_id;

-- name: copy_job_steps
INSERT INTO job_steps BY NAME
SELECT * FROM tw_src.job_steps WHERE cluster = $cluster AND job_id = $job_id;

-- name: copy_sessions
INSERT INTO sessions BY NAME
SELECT * FROM tw_src.sessions
WHERE job_id = $job_id AND (cluster IS NULL OR cluster = $cluster);

-- name: copy_samples
-- {table}: sample_rounds, step_samples, process_samples or gpu_samples
INSERT INTO {table} BY NAME
SELECT * FROM tw_src.{table} WHERE session_id IN (SELECT session_id FROM sessions);
