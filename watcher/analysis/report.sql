-- The rows of the report tables, for every user analysed, sorted so that engine.py can cut
-- them per user in one pass. "Latest" rows are the period's jobs; "history" rows group every
-- stored job of the period's job families (job name + submit line; array tasks fold into their
-- array when counting submissions).

-- name: jobs
SELECT job_key, user_name, cluster, job_id, job_id_display, array_job_id, job_name, account,
       partition, qos, state, exit_code, exit_signal, start_time, end_time, elapsed_s,
       time_limit_s, round(time_limit_fraction, 4) AS time_limit_fraction, nnodes, ncpus, gpus,
       samples, round(cpu_s, 1) AS cpu_s, cpu_source, round(cpu_efficiency, 4) AS cpu_efficiency,
       round(mean_busy_cores, 2) AS mean_busy_cores, peak_memory_bytes, memory_source, peak_rss_bytes,
       peak_node,
       req_mem_per_node AS requested_mem_bytes, round(memory_fraction, 4) AS memory_fraction,
       round(core_hours, 3) AS core_hours, round(busy_core_hours, 3) AS busy_core_hours,
       round(gpu_hours, 3) AS gpu_hours, round(gpu_avg_util_pct, 1) AS gpu_avg_util_pct,
       round(cpu_energy_wh, 2) AS cpu_energy_wh, round(gpu_energy_wh, 2) AS gpu_energy_wh,
       round(energy_wh, 2) AS energy_wh, round(co2_g, 1) AS co2_g
FROM tw_job_metrics
WHERE in_period
ORDER BY user_name, start_time, job_key;

-- name: steps
SELECT j.user_name, u.job_key, j.job_id_display, j.job_name, u.step, u.node, u.samples,
       u.cpus_available, round(u.mean_busy_cores, 2) AS mean_busy_cores,
       round(u.max_busy_cores, 2) AS max_busy_cores,
       round(u.parallel_s / nullif(u.span_s, 0), 4) AS parallel_fraction,
       round(u.cpu_s, 1) AS cpu_s, u.peak_memory_bytes, u.memory_source, u.peak_rss_bytes,
       u.sys_samples, u.sys_10_33, u.sys_33_67, u.sys_67_100, round(u.sys_over_100, 2) AS sys_over_100,
       round(u.sys_score, 2) AS sys_score,
       round(u.system_s / nullif(u.cpu_s, 0), 4) AS system_share
FROM tw_step_usage u JOIN tw_job_metrics j USING (job_key)
WHERE j.in_period
ORDER BY j.user_name, j.start_time, u.job_key, u.step, u.node;

-- name: gpus
SELECT j.user_name, g.job_key, j.job_id_display, j.job_name, g.node, g.gpu_uuid, g.gpu_index,
       g.gpu_name, g.samples, round(g.avg_util_pct, 1) AS avg_util_pct,
       round(g.idle_s / nullif(g.span_s, 0), 4) AS idle_fraction,
       round((g.low_s - g.idle_s) / nullif(g.span_s, 0), 4) AS low_fraction,
       round(g.longest_idle_s / nullif(g.span_s, 0), 4) AS longest_idle_fraction,
       g.samples_with_process, round(g.avg_sm_clock_mhz) AS avg_sm_clock_mhz,
       round(g.avg_power_w, 1) AS avg_power_w, round(g.energy_j / 3600, 2) AS energy_wh
FROM tw_gpu_usage g JOIN tw_job_metrics j USING (job_key)
WHERE j.in_period
ORDER BY j.user_name, j.start_time, g.job_key, g.node, g.gpu_index;

-- name: totals
SELECT user_name,
       count(*) AS jobs,
       count(DISTINCT coalesce(array_job_id, job_id)) AS submissions,
       round(sum(core_hours), 3) AS core_hours,
       round(sum(busy_core_hours), 3) AS busy_core_hours,
       round(sum(busy_core_hours) / nullif(sum(core_hours), 0), 4) AS cpu_efficiency,
       round(sum(gpu_hours), 3) AS gpu_hours,
       round(sum(cpu_energy_wh) / 1000, 4) AS cpu_energy_kwh,
       round(sum(gpu_energy_wh) / 1000, 4) AS gpu_energy_kwh,
       round(sum(energy_wh) / 1000, 4) AS energy_kwh,
       round(sum(co2_g) / 1000, 4) AS co2_kg
FROM tw_job_metrics
WHERE in_period
GROUP BY user_name
ORDER BY user_name;

-- name: history
-- Per user and job family, over all stored jobs of the families seen in the period; rules is
-- the list of rule ids found on any job of the family (sorted), NULL when none.
WITH family_rules AS (
    SELECT j.user_name, j.job_name, j.submit_line,
           list(DISTINCT f.rule ORDER BY f.rule) AS rules
    FROM tw_findings f JOIN tw_job_metrics j USING (job_key)
    GROUP BY ALL
),
steps AS (
    SELECT job_key, sum(sys_samples) AS sys_samples, sum(sys_score) AS sys_score
    FROM tw_step_usage GROUP BY job_key
),
gpus AS (
    SELECT job_key, sum(span_s) AS span_s, sum(avg_util_pct * span_s) AS util_s,
           sum(idle_s) AS idle_s, sum(low_s) AS low_s, max(longest_idle_s) AS longest_idle_s
    FROM tw_gpu_usage GROUP BY job_key
)
SELECT j.user_name, j.job_name, j.submit_line,
       count(*) AS jobs,
       count(DISTINCT coalesce(j.array_job_id, j.job_id)) AS submissions,
       max(j.job_id_display ORDER BY j.start_time) AS last_job_id,
       min(j.start_time) AS first_start,
       round(sum(j.core_hours), 3) AS core_hours,
       round(sum(j.busy_core_hours) / nullif(sum(j.core_hours), 0), 4) AS cpu_efficiency,
       round(max(j.memory_fraction), 4) AS max_memory_fraction,
       round(avg(j.memory_fraction), 4) AS avg_memory_fraction,
       round(avg(j.time_limit_fraction), 4) AS avg_time_limit_fraction,
       round(sum(j.gpu_hours), 3) AS gpu_hours,
       round(sum(g.util_s) / nullif(sum(g.span_s), 0), 1) AS gpu_avg_util_pct,
       round(sum(g.idle_s) / nullif(sum(g.span_s), 0), 4) AS gpu_idle_fraction,
       round(sum(g.low_s) / nullif(sum(g.span_s), 0), 4) AS gpu_low_fraction,
       sum(s.sys_samples) AS sys_samples,
       round(sum(s.sys_score), 2) AS sys_score,
       round(sum(j.energy_wh) / 1000, 4) AS energy_kwh,
       any_value(r.rules) AS rules
FROM tw_job_metrics j
LEFT JOIN steps s USING (job_key)
LEFT JOIN gpus g USING (job_key)
LEFT JOIN family_rules r ON r.user_name = j.user_name
    AND r.job_name IS NOT DISTINCT FROM j.job_name
    AND r.submit_line IS NOT DISTINCT FROM j.submit_line
GROUP BY j.user_name, j.job_name, j.submit_line
HAVING bool_or(j.in_period)
ORDER BY j.user_name, core_hours DESC, j.job_name;
