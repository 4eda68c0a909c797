-- What the jobs in scope used, from their samples (tw_sessions) and accounting (tw_jobs).
-- Rates come from deltas between consecutive samples of one (session, step) ordered by their
-- real timestamps; idle samples count like any other. Thresholds come from tw_th (one row).

-- name: session_steps
-- Per session and step: CPU work, busy cores per sample interval, memory peak, system-time
-- profile. Only the columns the sums need travel through the window's sort.
-- Demand is what the step's threads wanted of the CPUs: busy cores plus the cores' worth of
-- threads that waited for one (schedstat run-queue time; NULL, read as 0, when not measured).
-- Memory is the RSS sum (peak_rss_bytes) and what the kernel charges (peak_memory_bytes, from
-- mem_bytes: the step's cgroup or its PSS, else the RSS sum; memory_source says which). A sample
-- with no process of the job in it (nprocs = 0: the watcher or a slurmstepd alone) measured no
-- memory, and a step none of whose samples had one measured nothing (max_processes = 0).
-- demand_quantile is the [advice] cpu_percentile quantile of the demand over the intervals
-- (the cores to advise, advice.sql); the fraction is a session variable set by engine.py,
-- because DuckDB's quantile wants a constant, not a column.
CREATE OR REPLACE TEMP TABLE tw_session_steps AS
WITH deltas AS (
    SELECT session_id, step, ts, rss_bytes, cpus_available, cpu_user_s, cpu_system_s,
           nprocs, coalesce(mem_bytes, rss_bytes) AS mem_bytes, mem_source,
           epoch(ts - lag(ts) OVER w) AS dt,
           -- Counters only grow; a drop means a process left without being reaped in the tree.
           greatest(cpu_user_s - lag(cpu_user_s) OVER w, 0) AS d_user,
           greatest(cpu_system_s - lag(cpu_system_s) OVER w, 0) AS d_sys,
           greatest(cpu_wait_s - lag(cpu_wait_s) OVER w, 0) AS d_wait
    FROM step_samples
    WHERE session_id IN (SELECT session_id FROM tw_sessions)
    -- seq orders a session's rounds as ts does; it is the cheaper sort key.
    WINDOW w AS (PARTITION BY session_id, step ORDER BY seq)
),
judged AS (
    SELECT d.*,
           (d.d_user + d.d_sys) / d.dt AS busy_cores,
           (d.d_user + d.d_sys + coalesce(d.d_wait, 0)) / nullif(d.dt, 0) AS demand,
           d.d_sys / nullif(d.d_user, 0) AS sys_ratio,
           d.d_sys / d.dt >= th.high_system_time__min_system_cores AND d.d_user > 0 AS sys_counted,
           -- Concurrency is what the threads wanted: two processes that shared one core with
           -- other work ran in parallel as far as the program goes.
           (d.d_user + d.d_sys + coalesce(d.d_wait, 0)) / d.dt > th.low_concurrency__max_busy_cores
               AS parallel,
           (d.d_user + d.d_sys + coalesce(d.d_wait, 0)) / d.dt >= th.cpu_idle__max_busy_cores
               AS active
    FROM deltas d CROSS JOIN tw_th th
)
SELECT session_id, step,
       count(*) AS samples,
       coalesce(sum(dt), 0) AS span_s,
       min(ts) AS first_ts,
       max(ts) AS last_ts,
       -- Work before the first sample is in the first cumulative reading.
       sum(CASE WHEN dt IS NULL THEN cpu_user_s + cpu_system_s ELSE d_user + d_sys END) AS cpu_s,
       sum(CASE WHEN dt IS NULL THEN cpu_system_s ELSE d_sys END) AS system_s,
       coalesce(sum(d_user + d_sys), 0) AS sampled_cpu_s,
       sum(d_wait) AS sampled_wait_s,
       max(busy_cores) AS max_busy_cores,
       quantile_cont(demand, getvariable('tw_cpu_percentile')) AS demand_quantile,
       count(demand) AS demand_samples,
       coalesce(sum(dt) FILTER (parallel), 0) AS parallel_s,
       coalesce(sum(dt) FILTER (active), 0) AS active_s,
       max(cpus_available) AS cpus_available,
       max(rss_bytes) FILTER (nprocs > 0) AS peak_rss_bytes,
       max(mem_bytes) FILTER (nprocs > 0) AS peak_memory_bytes,
       arg_max(coalesce(mem_source, 'rss'), mem_bytes) FILTER (nprocs > 0) AS memory_source,
       max(nprocs) AS max_processes,
       count(*) FILTER (sys_counted) AS sys_samples,
       count(*) FILTER (sys_counted AND sys_ratio > 0.1 AND sys_ratio <= 1 / 3) AS sys_10_33,
       count(*) FILTER (sys_counted AND sys_ratio > 1 / 3 AND sys_ratio <= 2 / 3) AS sys_33_67,
       count(*) FILTER (sys_counted AND sys_ratio > 2 / 3 AND sys_ratio <= 1) AS sys_67_100,
       coalesce(sum(sys_ratio) FILTER (sys_counted AND sys_ratio > 1), 0) AS sys_over_100
FROM judged
GROUP BY session_id, step;

-- name: step_usage
-- Per job, step and node (a node may have had more than one session, e.g. run and attach).
-- Only steps whose samples found a process of the job: rounds that saw none measured nothing,
-- and a job with no such step is judged as one without samples (from accounting alone).
CREATE OR REPLACE TEMP TABLE tw_step_usage AS
SELECT s.job_key, u.step, s.node,
       sum(u.samples) AS samples,
       sum(u.span_s) AS span_s,
       min(u.first_ts) AS first_ts,
       max(u.last_ts) AS last_ts,
       sum(u.cpu_s) AS cpu_s,
       sum(u.system_s) AS system_s,
       sum(u.sampled_cpu_s) AS sampled_cpu_s,
       sum(u.sampled_wait_s) AS sampled_wait_s,
       sum(u.sampled_cpu_s) / nullif(sum(u.span_s), 0) AS mean_busy_cores,
       sum(u.sampled_wait_s) / nullif(sum(u.span_s), 0) AS mean_waiting_cores,
       max(u.max_busy_cores) AS max_busy_cores,
       max(u.demand_quantile) AS demand_quantile,
       max(u.demand_samples) AS demand_samples,
       sum(u.parallel_s) AS parallel_s,
       sum(u.active_s) AS active_s,
       coalesce(max(u.cpus_available), max(s.cores_available)) AS cpus_available,
       max(u.peak_rss_bytes) AS peak_rss_bytes,
       max(u.peak_memory_bytes) AS peak_memory_bytes,
       arg_max(u.memory_source, u.peak_memory_bytes) AS memory_source,
       sum(u.sys_samples) AS sys_samples,
       sum(u.sys_10_33) AS sys_10_33,
       sum(u.sys_33_67) AS sys_33_67,
       sum(u.sys_67_100) AS sys_67_100,
       sum(u.sys_over_100) AS sys_over_100,
       -- The old tool's weighting: 1 for (1/3, 2/3], 2 for (2/3, 1], 3 × ratio above 1.
       sum(u.sys_33_67) + 2 * sum(u.sys_67_100) + 3 * sum(u.sys_over_100) AS sys_score
FROM tw_session_steps u
JOIN tw_sessions s USING (session_id)
WHERE u.max_processes > 0
GROUP BY s.job_key, u.step, s.node;

-- name: node_memory
-- Per job and node: the peak of the memory all its steps held at the same sample round, as the
-- RSS sum and as the kernel charges it, with the source of the round at the charged peak (one
-- word, or two joined by '+' when its steps differ: a one-process step's 'rss' beside a 'pss').
-- A session with one step needs no per-round sum: its step's peak is the node's.
CREATE OR REPLACE TEMP TABLE tw_node_memory AS
WITH multi AS (
    SELECT session_id FROM tw_session_steps GROUP BY session_id HAVING count(*) > 1
),
peaks AS (
    SELECT session_id, max(rss_bytes) AS peak_rss_bytes, max(memory_bytes) AS peak_memory_bytes,
           arg_max(memory_source, memory_bytes) AS memory_source
    FROM (
        SELECT session_id, seq, sum(rss_bytes) AS rss_bytes,
               sum(coalesce(mem_bytes, rss_bytes)) AS memory_bytes,
               CASE WHEN min(coalesce(mem_source, 'rss')) = max(coalesce(mem_source, 'rss'))
                    THEN min(coalesce(mem_source, 'rss'))
                    ELSE min(coalesce(mem_source, 'rss')) || '+' || max(coalesce(mem_source, 'rss'))
               END AS memory_source
        FROM step_samples
        WHERE session_id IN (SELECT session_id FROM multi) AND nprocs > 0
        GROUP BY session_id, seq
    )
    GROUP BY session_id
    UNION ALL
    SELECT session_id, max(peak_rss_bytes), max(peak_memory_bytes),
           arg_max(memory_source, peak_memory_bytes)
    FROM tw_session_steps
    WHERE session_id NOT IN (SELECT session_id FROM multi)
    GROUP BY session_id
)
SELECT s.job_key, s.node, max(p.peak_rss_bytes) AS peak_rss_bytes,
       max(p.peak_memory_bytes) AS peak_memory_bytes,
       arg_max(p.memory_source, p.peak_memory_bytes) AS memory_source
FROM peaks p JOIN tw_sessions s USING (session_id)
GROUP BY s.job_key, s.node;

-- name: gpu_usage
-- Per job, node and GPU: utilization over time, idle stretches, processes, power and energy.
CREATE OR REPLACE TEMP TABLE tw_gpu_usage AS
WITH g AS MATERIALIZED (
    SELECT x.session_id, x.gpu_index, x.util_pct, x.power_w, x.sm_clock_mhz,
           coalesce(len(x.job_pids), 0) > 0 AS has_job_process,
           -- A sample stands for the time since the previous one (the first: one interval).
           coalesce(epoch(x.ts - lag(x.ts) OVER w), s.interval_s) AS dt,
           x.energy_j,
           x.energy_j - lag(x.energy_j) OVER w AS d_energy_j,
           -- Runs of idle samples share the count of busy samples seen before them.
           sum((coalesce(x.util_pct, 0) > 0)::INTEGER) OVER w AS busy_before
    FROM gpu_samples x
    JOIN tw_sessions s USING (session_id)
    WINDOW w AS (PARTITION BY x.session_id, x.gpu_index ORDER BY x.seq)
),
idle_runs AS (
    SELECT session_id, gpu_index, max(idle_s) AS longest_idle_s
    FROM (
        SELECT session_id, gpu_index, busy_before, sum(dt) AS idle_s
        FROM g WHERE util_pct = 0 GROUP BY ALL
    )
    GROUP BY ALL
),
per_session AS (
    SELECT g.session_id, g.gpu_index,
           count(*) AS samples,
           count(g.util_pct) AS util_samples,
           sum(g.dt) AS span_s,
           sum(g.dt) FILTER (g.util_pct IS NOT NULL) AS util_span_s,
           sum(g.util_pct * g.dt) AS util_s,
           max(g.util_pct) AS max_util_pct,
           coalesce(sum(g.dt) FILTER (g.util_pct = 0), 0) AS idle_s,
           coalesce(sum(g.dt) FILTER (g.util_pct < th.investigate_gpu_usage__low_util_pct), 0) AS low_s,
           count(*) FILTER (g.has_job_process) AS samples_with_process,
           avg(g.sm_clock_mhz) AS avg_sm_clock_mhz,
           avg(g.power_w) AS avg_power_w,
           -- The NVML energy counter when it is read, else power integrated over time.
           CASE WHEN count(g.energy_j) >= 2 THEN sum(greatest(g.d_energy_j, 0))
                ELSE sum(g.power_w * g.dt) END AS energy_j
    FROM g CROSS JOIN tw_th th
    GROUP BY g.session_id, g.gpu_index
)
SELECT s.job_key, s.node, d.gpu_uuid, p.gpu_index, d.gpu_name, p.samples, p.util_samples,
       p.span_s, p.util_s / nullif(p.util_span_s, 0) AS avg_util_pct, p.max_util_pct, p.idle_s,
       p.low_s, coalesce(r.longest_idle_s, 0) AS longest_idle_s, p.samples_with_process,
       p.avg_sm_clock_mhz, p.avg_power_w, p.energy_j
FROM per_session p
JOIN tw_sessions s USING (session_id)
LEFT JOIN idle_runs r USING (session_id, gpu_index)
LEFT JOIN (
    SELECT session_id, gpu_index, min(gpu_uuid) AS gpu_uuid, min(gpu_name) AS gpu_name
    FROM gpu_samples WHERE session_id IN (SELECT session_id FROM tw_sessions)
    GROUP BY ALL
) d USING (session_id, gpu_index);

-- name: gpu_levels
-- Per job and node: how long 0, 1, 2 … of its GPUs were in use at once. A GPU is in use at a
-- sample when a job process runs on it or its utilization is above zero.
CREATE OR REPLACE TEMP TABLE tw_gpu_levels AS
WITH rounds AS (
    SELECT s.job_key, x.node, x.session_id, x.seq, min(x.ts) AS ts, any_value(s.interval_s) AS interval_s,
           count(*) FILTER (coalesce(len(x.job_pids), 0) > 0 OR x.util_pct > 0) AS in_use,
           count(*) AS visible
    FROM gpu_samples x JOIN tw_sessions s USING (session_id)
    GROUP BY ALL
),
timed AS (
    SELECT *, coalesce(epoch(ts - lag(ts) OVER (PARTITION BY session_id ORDER BY ts, seq)), interval_s) AS dt
    FROM rounds
),
levels AS (
    SELECT job_key, node, in_use, sum(dt) AS level_s, count(*) AS level_rounds, max(visible) AS visible
    FROM timed GROUP BY ALL
)
SELECT job_key, node,
       sum(level_rounds) AS rounds,
       max(visible) AS gpus_visible,
       max(in_use) AS max_in_use,
       arg_max(level_s, in_use) AS max_in_use_s,
       max(level_s) AS longest_level_s,
       arg_max(in_use, level_s) AS most_common_in_use,
       list({'in_use': in_use, 'seconds': round(level_s, 1)} ORDER BY in_use) AS histogram
FROM levels
GROUP BY job_key, node;

-- name: jupyter
-- The pattern is matched against the distinct process names only (few), not every row.
CREATE OR REPLACE TEMP TABLE tw_jupyter AS
WITH names AS (
    SELECT comm FROM (SELECT DISTINCT comm FROM process_samples) CROSS JOIN tw_th th
    WHERE regexp_matches(comm, th.jupyter_on_compute__comm_pattern)
)
SELECT s.job_key, p.step, s.node, min(p.comm) AS comm,
       count(DISTINCT (p.pid, p.start_ticks)) AS processes, min(p.ts) AS first_seen
FROM process_samples p
JOIN names USING (comm)
JOIN tw_sessions s USING (session_id)
GROUP BY ALL;

-- name: job_metrics
-- One row per job: the numbers reports show and rules judge, from the best source for each.
CREATE OR REPLACE TEMP TABLE tw_job_metrics AS
WITH sampled AS (
    SELECT job_key, sum(cpu_s) AS cpu_s, sum(system_s) AS system_s,
           max(samples) AS samples, min(first_ts) AS first_ts, max(last_ts) AS last_ts
    FROM tw_step_usage GROUP BY job_key
),
node_cpu AS (
    -- Per node, over its longest-observed step (the batch or extern step spans the job there):
    -- the CPU work and the waiting of all its steps, and how long any of them was active.
    SELECT job_key, node, max(span_s) AS span_s, max(samples) AS samples,
           sum(sampled_cpu_s) AS busy_s, sum(sampled_wait_s) AS wait_s, sum(active_s) AS active_s
    FROM tw_step_usage GROUP BY job_key, node
),
sampled_cpu AS (
    -- Idle time is counted conservatively: a moment any step was active counts as active for
    -- its node, and overlapping activity of two steps is subtracted twice.
    SELECT job_key,
           sum(busy_s / span_s) AS sampled_busy_cores,
           sum(wait_s / span_s) AS sampled_waiting_cores,
           min(samples) AS cpu_samples,
           sum(greatest(span_s - active_s, 0)) / sum(span_s) AS idle_fraction
    FROM node_cpu WHERE span_s > 0 GROUP BY job_key
),
memory AS (
    SELECT job_key, max(peak_rss_bytes) AS peak_rss_bytes,
           max(peak_memory_bytes) AS peak_memory_bytes,
           arg_max(node, peak_memory_bytes) AS peak_node,
           arg_max(memory_source, peak_memory_bytes) AS sampled_memory_source
    FROM tw_node_memory GROUP BY job_key
),
gpus AS (
    SELECT job_key, count(*) AS gpus_seen, sum(energy_j) AS energy_j,
           sum(avg_util_pct * span_s) / nullif(sum(span_s), 0) AS avg_util_pct,
           bool_or(samples_with_process > 0 OR max_util_pct > 0) AS active
    FROM tw_gpu_usage GROUP BY job_key
),
merged AS (
    SELECT j.*,
           coalesce(sp.samples, 0) AS samples,
           -- Accounting has the whole run of a job that has ended. While a job runs, sacct's
           -- TotalCPU counts only the steps that have ended (0 before the first): the job is
           -- judged from its samples then, over the time they cover, or not at all.
           CASE WHEN j.end_time IS NOT NULL AND j.has_accounting AND j.acct_cpu_s IS NOT NULL
                THEN j.acct_cpu_s ELSE sp.cpu_s END AS cpu_s,
           CASE WHEN j.end_time IS NOT NULL AND j.has_accounting AND j.acct_cpu_s IS NOT NULL
                THEN 'accounting' WHEN sp.cpu_s IS NOT NULL THEN 'samples' END AS cpu_source,
           -- The time that CPU time covers: the run, or from the start to the last sample (the
           -- cumulative counters hold the work done before the first one).
           CASE WHEN j.end_time IS NOT NULL AND j.has_accounting AND j.acct_cpu_s IS NOT NULL
                THEN j.elapsed_s
                WHEN sp.cpu_s IS NOT NULL
                THEN greatest(epoch(sp.last_ts - j.start_time), 0) END AS cpu_span_s,
           sc.sampled_busy_cores, sc.sampled_waiting_cores, sc.cpu_samples,
           sc.idle_fraction,
           -- RSS sums, both (sacct's MaxRSS sums RSS over a step's processes, jobacct_gather/
           -- linux): the larger. A running step's MaxRSS is NULL: the sampled peak still counts.
           greatest(m.peak_rss_bytes, j.acct_peak_rss_bytes) AS peak_rss_bytes,
           -- Memory as the kernel charges it, what the memory rules judge: the samples' cgroup
           -- or PSS figure where they measured one (MaxRSS would count shared pages again),
           -- else the larger of the sampled RSS sum and MaxRSS (accounting alone: MaxRSS).
           CASE WHEN coalesce(m.sampled_memory_source, 'rss') <> 'rss' THEN m.peak_memory_bytes
                ELSE greatest(m.peak_memory_bytes, j.acct_peak_rss_bytes) END AS peak_memory_bytes,
           CASE WHEN coalesce(m.sampled_memory_source, 'rss') <> 'rss' THEN m.sampled_memory_source
                WHEN m.peak_memory_bytes >= coalesce(j.acct_peak_rss_bytes, -1) THEN 'rss'
                WHEN j.acct_peak_rss_bytes IS NOT NULL THEN 'accounting' END AS memory_source,
           m.peak_node,
           greatest(j.ngpus, coalesce(g.gpus_seen, 0)) AS gpus,
           coalesce(g.active, FALSE) AS gpu_active,
           g.avg_util_pct AS gpu_avg_util_pct,
           coalesce(g.energy_j, 0) AS gpu_energy_j
    FROM tw_jobs j
    LEFT JOIN sampled sp USING (job_key)
    LEFT JOIN sampled_cpu sc USING (job_key)
    LEFT JOIN memory m USING (job_key)
    LEFT JOIN gpus g USING (job_key)
)
SELECT m.*,
       m.cpu_s / nullif(m.cpu_span_s * m.ncpus, 0) AS cpu_efficiency,
       m.cpu_s / nullif(m.cpu_span_s, 0) AS mean_busy_cores,
       m.peak_memory_bytes / nullif(m.req_mem_per_node, 0) AS memory_fraction,
       m.elapsed_s / nullif(m.time_limit_s, 0) AS time_limit_fraction,
       m.elapsed_s * m.ncpus / 3600 AS core_hours,
       m.cpu_s / 3600 AS busy_core_hours,
       m.elapsed_s * m.gpus / 3600 AS gpu_hours,
       coalesce(m.cpu_s, 0) * p.cpu_watts_per_core / 3600 AS cpu_energy_wh,
       m.gpu_energy_j / 3600 AS gpu_energy_wh,
       (coalesce(m.cpu_s, 0) * p.cpu_watts_per_core + m.gpu_energy_j) / 3600 AS energy_wh,
       CASE WHEN p.grid_co2_g_per_kwh > 0 THEN
           (coalesce(m.cpu_s, 0) * p.cpu_watts_per_core + m.gpu_energy_j) / 3.6e6 * p.grid_co2_g_per_kwh
       END AS co2_g
FROM merged m CROSS JOIN tw_params p;
