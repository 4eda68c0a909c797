-- The numbers of one job's report card, from the samples of its watch sessions.
-- Every query takes $sessions: the session ids of the job (one per node).
-- Counters are cumulative: a step's totals are its last sample; rates come from deltas
-- between consecutive samples of the same (session, step), ordered by time.
-- Memory: rss_bytes is the RSS sum (a shared page counted once per process), mem_bytes what the
-- kernel charges (mem_source: cgroup, pss or rss; NULL in spools from before it: the RSS sum).
-- A step sample with no process of the job in it (nprocs = 0: only the watcher, or a step's
-- slurmstepd) measured no memory: it is left out of the peaks.

-- name: steps
WITH per_node AS (
    SELECT session_id, node, step,
        arg_max(cpu_user_s, seq) AS cpu_user_s,
        arg_max(cpu_system_s, seq) AS cpu_system_s,
        -- run-queue wait, cumulative; NULL when the watcher could not measure it
        arg_max(cpu_wait_s, seq) AS cpu_wait_s,
        max(rss_bytes) FILTER (nprocs > 0) AS peak_rss_bytes,
        max(coalesce(mem_bytes, rss_bytes)) FILTER (nprocs > 0) AS peak_memory_bytes,
        arg_max(coalesce(mem_source, 'rss'), coalesce(mem_bytes, rss_bytes)) FILTER (nprocs > 0)
            AS memory_source,
        max(mem_peak_bytes) AS cgroup_peak_bytes,
        max(largest_rss_bytes) FILTER (nprocs > 0) AS largest_process_rss_bytes,
        arg_max(read_bytes, seq) AS read_bytes,
        arg_max(write_bytes, seq) AS write_bytes,
        arg_max(minor_faults, seq) AS minor_faults,
        arg_max(major_faults, seq) AS major_faults,
        max(nprocs) AS max_processes,
        max(cpus_available) AS cpus_available,
        min(ts) AS first_ts,
        max(ts) AS last_ts,
        count(*) AS samples
    FROM step_samples
    WHERE session_id IN (SELECT unnest($sessions))
    GROUP BY session_id, node, step
)
SELECT step,
    sum(cpu_user_s) AS cpu_user_s,
    sum(cpu_system_s) AS cpu_system_s,
    sum(cpu_wait_s) AS cpu_wait_s,
    max(peak_rss_bytes) AS peak_rss_bytes,
    max(peak_memory_bytes) AS peak_memory_bytes,
    arg_max(memory_source, peak_memory_bytes) AS memory_source,
    max(cgroup_peak_bytes) AS cgroup_peak_bytes,
    max(largest_process_rss_bytes) AS largest_process_rss_bytes,
    sum(read_bytes) AS read_bytes,
    sum(write_bytes) AS write_bytes,
    sum(minor_faults) AS minor_faults,
    sum(major_faults) AS major_faults,
    max(max_processes) AS max_processes,
    sum(cpus_available) AS cpus_available,
    epoch(max(last_ts)) - epoch(min(first_ts)) AS observed_s,
    sum(samples) AS samples,
    list(DISTINCT node ORDER BY node) AS nodes
FROM per_node
GROUP BY step
ORDER BY CASE step WHEN 'batch' THEN 0 WHEN 'local' THEN 0 WHEN 'extern' THEN 2 ELSE 1 END,
    try_cast(step AS INTEGER) NULLS LAST, step;

-- name: nodes
-- Per node: memory is the sum over steps at one sample; the peak is over samples. Its source is
-- that of the round at the peak: one word when all steps had the same, else e.g. "cgroup+rss".
-- measured_samples: the rounds that found a process of the job.
WITH per_seq AS (
    SELECT session_id, node, seq,
        sum(rss_bytes) AS rss_bytes,
        sum(coalesce(mem_bytes, rss_bytes)) AS memory_bytes,
        string_agg(DISTINCT coalesce(mem_source, 'rss'), '+' ORDER BY coalesce(mem_source, 'rss'))
            AS memory_source,
        sum(nprocs) > 0 AS measured
    FROM step_samples
    WHERE session_id IN (SELECT unnest($sessions))
    GROUP BY session_id, node, seq
)
SELECT s.node, s.session_id, s.mode, s.cores_available, s.mem_requested_bytes, s.interval_s,
    max(p.rss_bytes) FILTER (p.measured) AS peak_rss_bytes,
    max(p.memory_bytes) FILTER (p.measured) AS peak_memory_bytes,
    arg_max(p.memory_source, p.memory_bytes) FILTER (p.measured) AS memory_source,
    count(p.seq) AS samples,
    count(p.seq) FILTER (p.measured) AS measured_samples
FROM sessions AS s
LEFT JOIN per_seq AS p USING (session_id)
WHERE s.session_id IN (SELECT unnest($sessions))
GROUP BY ALL
ORDER BY s.node;

-- name: timeline
-- Cores in use and memory per node and sample interval (memory_bytes: as the kernel charges it).
-- A round that found no process of the job measured no memory: NULL there, not 0 (a chart
-- would show the job's memory dropping to nothing at its end).
WITH deltas AS (
    SELECT session_id, node, seq, ts, nprocs, rss_bytes, coalesce(mem_bytes, rss_bytes) AS memory_bytes,
        (cpu_user_s + cpu_system_s)
            - lag(cpu_user_s + cpu_system_s) OVER w AS cpu_s,
        epoch(ts) - epoch(lag(ts) OVER w) AS dt
    FROM step_samples
    WHERE session_id IN (SELECT unnest($sessions))
    WINDOW w AS (PARTITION BY session_id, step ORDER BY seq)
)
SELECT node, seq, epoch(max(ts)) AS t,
    sum(cpu_s) FILTER (WHERE dt > 0) / nullif(max(dt), 0) AS cores_in_use,
    max(dt) AS dt,
    sum(rss_bytes) FILTER (nprocs > 0) AS rss_bytes,
    sum(memory_bytes) FILTER (nprocs > 0) AS memory_bytes
FROM deltas
GROUP BY session_id, node, seq
ORDER BY node, seq;

-- name: gpus
WITH g AS (
    SELECT *,
        epoch(ts) - epoch(lag(ts) OVER w) AS dt,
        lag(power_w) OVER w AS prev_power_w
    FROM gpu_samples
    WHERE session_id IN (SELECT unnest($sessions))
    WINDOW w AS (PARTITION BY session_id, gpu_uuid ORDER BY seq)
)
SELECT node, gpu_uuid, any_value(gpu_index) AS gpu_index, any_value(gpu_name) AS gpu_name,
    count(*) AS samples,
    avg(util_pct) AS mean_util_pct,
    max(util_pct) AS max_util_pct,
    max(mem_used_bytes) AS peak_mem_used_bytes,
    max(mem_total_bytes) AS mem_total_bytes,
    avg(power_w) AS mean_power_w,
    -- The energy counter when the GPU has one, else power integrated over time.
    coalesce(max(energy_j) - min(energy_j),
             sum((power_w + prev_power_w) / 2 * dt) FILTER (WHERE dt > 0)) AS energy_j,
    -- Share of samples with no job process on the GPU (unknown process lists don't count).
    avg(CASE WHEN job_pids IS NULL THEN NULL WHEN len(job_pids) = 0 THEN 1.0 ELSE 0.0 END)
        AS no_process_share,
    max(temperature_c) AS max_temperature_c
FROM g
GROUP BY node, gpu_uuid
ORDER BY node, gpu_index;

-- name: gpu_timeline
SELECT node, gpu_uuid, any_value(gpu_index) AS gpu_index, epoch(ts) AS t, avg(util_pct) AS util_pct
FROM gpu_samples
WHERE session_id IN (SELECT unnest($sessions))
GROUP BY node, gpu_uuid, ts
ORDER BY node, gpu_index, t;

-- name: top_processes
SELECT p.pid, any_value(p.comm) AS comm, p.step, s.node,
    max(p.cpu_user_s + p.cpu_system_s) AS cpu_s,
    max(p.rss_bytes) AS peak_rss_bytes,
    max(p.pss_bytes) AS peak_pss_bytes,
    any_value(p.cmdline) FILTER (WHERE p.cmdline IS NOT NULL) AS cmdline,
    epoch(max(p.ts)) - epoch(min(p.ts)) AS seen_s
FROM process_samples AS p
JOIN sessions AS s USING (session_id)
WHERE p.session_id IN (SELECT unnest($sessions))
GROUP BY p.session_id, s.node, p.step, p.pid, p.start_ticks
-- the top few of every step; the job's overall top is the head of this list
QUALIFY row_number() OVER (PARTITION BY p.step ORDER BY cpu_s DESC, peak_rss_bytes DESC) <= $limit
ORDER BY cpu_s DESC, peak_rss_bytes DESC;
