-- The request that would have fitted: what each judged job and its family needed, with the
-- [advice] margins (tw_params) applied. advice.py turns these numbers into sbatch options.
-- A family is what report.sql's history groups: one user, job name and submit line, over
-- every job the analysis holds (the period's and, in period mode, their earlier runs).
--
-- `families` runs before the rules (memory_underuse reads it); `core_demand` and `advice`
-- run after findings.sql, for the jobs that have findings only.

-- name: families
-- at_limit is memory_oversubscription's own test, so that a family in which any job reached
-- its memory limit (or was killed for it) is never told to ask for less (rules.sql).
-- Such a job needed at least what it had: its request counts as its peak.
CREATE OR REPLACE TEMP TABLE tw_family_advice AS
WITH j AS (
    SELECT m.user_name, m.job_name, m.submit_line, m.state, m.elapsed_s, m.req_mem_per_node,
           m.peak_memory_bytes,
           coalesce(m.state = 'OUT_OF_MEMORY'
               OR (m.req_mem_per_node > 0 AND m.peak_memory_bytes
                   >= th.memory_oversubscription__min_peak_fraction * m.req_mem_per_node)
               OR (m.req_mem_per_node > 0 AND m.end_time IS NOT NULL AND m.state <> 'COMPLETED'
                   AND m.peak_rss_bytes >= m.req_mem_per_node), FALSE) AS at_limit
    FROM tw_job_metrics m, tw_th th
),
f AS (
    SELECT user_name, job_name, submit_line,
           count(*) AS family_jobs,
           bool_or(at_limit) AS family_at_limit,
           max(CASE WHEN at_limit THEN greatest(peak_memory_bytes, req_mem_per_node)
                    ELSE peak_memory_bytes END) AS mem_needed_bytes,
           max(req_mem_per_node) FILTER (at_limit) AS at_limit_request_bytes,
           count(*) FILTER (state = 'COMPLETED') AS completed_jobs,
           max(elapsed_s) FILTER (state = 'COMPLETED') AS longest_completed_s,
           -- A run that hit its limit needed more than it had: it may not set the limit lower.
           max(elapsed_s) FILTER (state IN ('TIMEOUT', 'DEADLINE')) AS longest_timeout_s
    FROM j GROUP BY ALL
)
SELECT f.*,
       -- round(…, 6) before ceil: 2.5 GiB × 1.2 is 3 GiB, not a hair above it.
       CASE WHEN f.mem_needed_bytes > 0 THEN greatest(
           ceil(round(f.mem_needed_bytes * p.mem_margin / p.mem_step_bytes, 6)) * p.mem_step_bytes,
           -- Above the largest request that was reached, even with a margin of 1.
           (floor(f.at_limit_request_bytes / p.mem_step_bytes) + 1) * p.mem_step_bytes)::BIGINT
       END AS mem_advice_bytes,
       CASE WHEN f.longest_completed_s > 0 THEN greatest(
           p.min_time_s,
           ceil(round(f.longest_completed_s * p.time_margin / p.time_step_s, 6)) * p.time_step_s)
       END AS time_advice_s
FROM f CROSS JOIN tw_params p;

-- name: core_demand
-- Per job: the cpu_percentile quantile, over its sample intervals, of the cores its steps kept
-- busy plus the cores' worth of threads that waited for a CPU (what they wanted; waiting is 0
-- where it was not measured). usage.sql measures it per step in its one pass over the samples;
-- the steps of a node are summed (exact for the usual one working step; for steps that ran
-- side by side, a figure at or a little above the quantile of their sum) and the job takes its
-- highest node.
CREATE OR REPLACE TEMP TABLE tw_core_demand AS
SELECT job_key, max(demand_cores) AS demand_cores, min(rounds) AS rounds
FROM (
    SELECT job_key, node, sum(demand_quantile) AS demand_cores, max(demand_samples) AS rounds
    FROM tw_step_usage
    WHERE demand_samples > 0
    GROUP BY job_key, node
)
GROUP BY job_key;

-- name: advice
-- Per job with a finding: its own numbers, its family's, and the tasks it ran per node (the
-- largest task count of a step other than the batch script and the extern step).
CREATE OR REPLACE TEMP TABLE tw_advice AS
WITH judged AS (SELECT DISTINCT job_key FROM tw_findings),
tasks AS (
    SELECT s.cluster || ':' || s.job_id AS job_key, max(s.ntasks) AS ntasks
    FROM job_steps s
    WHERE s.step NOT IN ('batch', 'extern', 'interactive')
      AND s.cluster || ':' || s.job_id IN (SELECT job_key FROM judged)
    GROUP BY ALL
),
gpus AS (
    SELECT job_key, max(max_in_use) AS gpus_used_per_node
    FROM tw_gpu_levels WHERE job_key IN (SELECT job_key FROM judged)
    GROUP BY job_key
)
SELECT j.job_key, j.nnodes, j.ncpus, j.gpus, j.req_mem_per_node, j.time_limit_s, j.state,
       j.core_hours, j.busy_core_hours, j.gpu_hours, j.gpu_avg_util_pct, j.peak_memory_bytes,
       d.demand_cores, d.rounds AS demand_rounds, j.mean_busy_cores, t.ntasks,
       g.gpus_used_per_node,
       f.family_jobs, f.family_at_limit, f.mem_needed_bytes, f.mem_advice_bytes,
       f.completed_jobs, f.longest_completed_s, f.longest_timeout_s, f.time_advice_s
FROM tw_job_metrics j
JOIN judged USING (job_key)
LEFT JOIN tw_core_demand d USING (job_key)
LEFT JOIN tasks t USING (job_key)
LEFT JOIN gpus g USING (job_key)
LEFT JOIN tw_family_advice f ON f.user_name IS NOT DISTINCT FROM j.user_name
    AND f.job_name IS NOT DISTINCT FROM j.job_name
    AND f.submit_line IS NOT DISTINCT FROM j.submit_line;
