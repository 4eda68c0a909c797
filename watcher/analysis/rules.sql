-- The rules: one statement per rule id of rules.toml, each adding candidate findings to
-- tw_candidates(rule, job_key, step, node, gpu, metrics). Thresholds are tw_th columns named
-- <rule>__<threshold>. Enabled flags, minimum runtimes, exemptions and suppression are applied
-- afterwards, the same way for every rule (findings.sql).

-- The CPU rules, most specific cause first: cpu_idle (nothing ran), cpu_starved (the node held
-- the job back), serial_many_cores and low_concurrency (the program ran one thing at a time),
-- cpu_underuse (fewer cores busy than held, cause unknown). Each one's suppressed_by in
-- rules.toml names the more specific ones, so a job gets one CPU finding per cause.
-- CPU time is accounting's for a job that has ended, else the samples' over the time they
-- cover (tw_job_metrics.cpu_span_s); a running job without samples has none and is not judged.

-- name: cpu_underuse
INSERT INTO tw_candidates
SELECT 'cpu_underuse', job_key, NULL, NULL, NULL,
       json_merge_patch(
           json_object('cpu_efficiency', round(cpu_efficiency, 4), 'cpu_s', round(cpu_s, 1),
                       'elapsed_s', elapsed_s, 'cores', ncpus,
                       'mean_busy_cores', round(mean_busy_cores, 2), 'source', cpu_source),
           -- What the threads waited for a CPU, when it was measured.
           CASE WHEN sampled_waiting_cores IS NOT NULL
                THEN json_object('mean_waiting_cores', round(sampled_waiting_cores, 2))
                ELSE '{}'::JSON END)
FROM tw_job_metrics, tw_th th
WHERE ncpus > 0 AND elapsed_s > 0 AND cpu_s IS NOT NULL
  AND cpu_efficiency < th.cpu_underuse__max_efficiency;

-- name: cpu_idle
-- From samples: the share of the observed time in which the job ran (and waited to run) less
-- than max_busy_cores on every node. From accounting alone (a job that has ended, too short
-- for samples or never sampled): a mean of at most max_busy_cores × (1 - min_idle_fraction)
-- busy cores, which leaves at most 1 - min_idle_fraction of the run with max_busy_cores busy.
-- GPU jobs are left to the GPU rules: a process waiting for its GPU uses no CPU.
INSERT INTO tw_candidates
SELECT 'cpu_idle', job_key, NULL, NULL, NULL,
       json_object('idle_fraction',
                   round(CASE WHEN cpu_samples >= th.cpu_idle__min_samples THEN idle_fraction
                              ELSE greatest(1 - mean_busy_cores / th.cpu_idle__max_busy_cores, 0)
                         END, 4),
                   'mean_busy_cores', round(mean_busy_cores, 3), 'cores', ncpus,
                   'elapsed_s', elapsed_s,
                   'source', CASE WHEN cpu_samples >= th.cpu_idle__min_samples THEN 'samples'
                                  ELSE cpu_source END)
FROM tw_job_metrics, tw_th th
WHERE ncpus > 0 AND gpus = 0 AND NOT gpu_active
  AND CASE WHEN cpu_samples >= th.cpu_idle__min_samples
           THEN idle_fraction >= th.cpu_idle__min_idle_fraction
           ELSE cpu_source = 'accounting' AND mean_busy_cores
                <= th.cpu_idle__max_busy_cores * (1 - th.cpu_idle__min_idle_fraction)
      END;

-- name: cpu_starved
-- Waiting explains the gap between the cores held and the cores busy when the job's threads
-- were busy on fewer than max_efficiency of its cores while busy plus waiting (run-queue time
-- over the same sampled intervals, in cores) reached min_demand_fraction of them.
INSERT INTO tw_candidates
SELECT 'cpu_starved', job_key, NULL, NULL, NULL,
       json_object('cores', ncpus,
                   'busy_cores', round(sampled_busy_cores, 2),
                   'waiting_cores', round(sampled_waiting_cores, 2),
                   'wait_share',
                   round(sampled_waiting_cores / (sampled_busy_cores + sampled_waiting_cores), 4),
                   'cpu_efficiency', round(sampled_busy_cores / ncpus, 4),
                   'samples', cpu_samples, 'source', 'samples')
FROM tw_job_metrics, tw_th th
WHERE ncpus > 0 AND cpu_samples >= th.cpu_starved__min_samples
  AND sampled_waiting_cores > 0
  AND sampled_busy_cores < th.cpu_starved__max_efficiency * ncpus
  AND sampled_busy_cores + sampled_waiting_cores >= th.cpu_starved__min_demand_fraction * ncpus;

-- name: low_concurrency
-- Concurrency counts the threads that waited for a CPU as running (usage.sql: parallel).
INSERT INTO tw_candidates
SELECT 'low_concurrency', u.job_key, u.step, u.node, NULL,
       json_merge_patch(
           json_object('cores_available', u.cpus_available,
                       'mean_busy_cores', round(u.mean_busy_cores, 2),
                       'max_busy_cores', round(u.max_busy_cores, 2),
                       'parallel_fraction', round(u.parallel_s / u.span_s, 4),
                       'samples', u.samples),
           CASE WHEN u.mean_waiting_cores IS NOT NULL
                THEN json_object('mean_waiting_cores', round(u.mean_waiting_cores, 2))
                ELSE '{}'::JSON END)
FROM tw_step_usage u
JOIN tw_job_metrics j USING (job_key)
CROSS JOIN tw_th th
WHERE u.cpus_available > 1 AND NOT j.gpu_active
  AND u.samples >= th.low_concurrency__min_samples AND u.span_s > 0
  AND u.max_busy_cores >= th.low_concurrency__min_busy_cores
  AND u.parallel_s <= th.low_concurrency__max_parallel_fraction * u.span_s;

-- name: low_compute_power
INSERT INTO tw_candidates
SELECT 'low_compute_power', job_key, NULL, NULL, NULL,
       json_object('cores', ncpus, 'gpus', gpus, 'elapsed_s', elapsed_s)
FROM tw_job_metrics, tw_th th
WHERE ncpus <= th.low_compute_power__max_cores AND gpus = 0;

-- name: serial_many_cores
INSERT INTO tw_candidates
SELECT 'serial_many_cores', job_key, NULL, NULL, NULL,
       json_object('cores', ncpus, 'mean_busy_cores', round(mean_busy_cores, 2),
                   'cpu_s', round(cpu_s, 1), 'elapsed_s', elapsed_s, 'source', cpu_source)
FROM tw_job_metrics, tw_th th
WHERE ncpus >= th.serial_many_cores__min_cores
  AND mean_busy_cores BETWEEN th.serial_many_cores__min_busy_cores
                          AND th.serial_many_cores__max_busy_cores;

-- name: memory_oversubscription
-- The memory peak as the kernel charges it (tw_job_metrics.peak_memory_bytes: cgroup or PSS where
-- sampled, else the RSS sum or MaxRSS): forked workers sharing their parent's pages are not
-- counted once per process.
INSERT INTO tw_candidates
SELECT 'memory_oversubscription', job_key, NULL, peak_node, NULL,
       json_object('peak_memory_bytes', peak_memory_bytes, 'requested_bytes', req_mem_per_node,
                   'memory_fraction', round(memory_fraction, 4), 'state', state,
                   'source', memory_source)
FROM tw_job_metrics, tw_th th
WHERE state = 'OUT_OF_MEMORY'
   OR (req_mem_per_node > 0
       AND peak_memory_bytes >= th.memory_oversubscription__min_peak_fraction * req_mem_per_node)
   -- Ended without completing with its RSS sum at the request: how jobacct_gather's
   -- OverMemoryKill judges a step (no cgroup), which then ends it as CANCELLED or FAILED.
   OR (req_mem_per_node > 0 AND end_time IS NOT NULL AND state <> 'COMPLETED'
       AND peak_rss_bytes >= req_mem_per_node);

-- name: memory_underuse
-- Judged per job (the node with the highest peak against the per-node request), so helper steps
-- that hold little memory by design are never flagged on their own.
-- Memory is advised per job family (advice.sql: tw_family_advice), so a job is not told to ask
-- for less when a job of its family reached its limit or was killed for it (the same family
-- would otherwise read both "underuse" and "oversubscription"), nor when the family's advice
-- (the biggest peak plus the margin) is not below what this job requested.
INSERT INTO tw_candidates
SELECT 'memory_underuse', j.job_key, NULL, j.peak_node, NULL,
       json_object('peak_memory_bytes', j.peak_memory_bytes, 'requested_bytes', j.req_mem_per_node,
                   'memory_fraction', round(j.memory_fraction, 4),
                   'unused_bytes', j.req_mem_per_node - j.peak_memory_bytes,
                   'source', j.memory_source)
FROM tw_job_metrics j
JOIN tw_family_advice f ON f.user_name IS NOT DISTINCT FROM j.user_name
    AND f.job_name IS NOT DISTINCT FROM j.job_name
    AND f.submit_line IS NOT DISTINCT FROM j.submit_line
CROSS JOIN tw_th th
WHERE j.end_time IS NOT NULL AND j.state <> 'OUT_OF_MEMORY'
  AND NOT (j.state <> 'COMPLETED' AND j.peak_rss_bytes >= j.req_mem_per_node)
  AND j.req_mem_per_node > 0 AND j.peak_memory_bytes > 0
  AND j.peak_memory_bytes < th.memory_underuse__max_peak_fraction * j.req_mem_per_node
  AND j.req_mem_per_node - j.peak_memory_bytes >= th.memory_underuse__min_unused_bytes
  AND NOT f.family_at_limit AND f.mem_advice_bytes < j.req_mem_per_node;

-- name: time_limit_underuse
INSERT INTO tw_candidates
SELECT 'time_limit_underuse', job_key, NULL, NULL, NULL,
       json_object('elapsed_s', elapsed_s, 'time_limit_s', time_limit_s,
                   'time_limit_fraction', round(time_limit_fraction, 4))
FROM tw_job_metrics, tw_th th
WHERE state = 'COMPLETED' AND time_limit_s > 0
  AND time_limit_fraction < th.time_limit_underuse__max_used_fraction
  AND time_limit_s - elapsed_s >= th.time_limit_underuse__min_unused_s;

-- name: short_jobs
-- One finding per user, on the latest of their short jobs, carrying the count.
INSERT INTO tw_candidates
WITH short AS (
    SELECT j.*, count(*) OVER (PARTITION BY user_name) AS n,
           row_number() OVER (PARTITION BY user_name ORDER BY end_time DESC, job_key DESC) AS latest,
           list(job_id_display) OVER (PARTITION BY user_name ORDER BY end_time, job_key
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS ids,
           median(elapsed_s) OVER (PARTITION BY user_name) AS median_elapsed_s
    FROM tw_job_metrics j, tw_th th
    WHERE in_period AND end_time IS NOT NULL AND time_limit_s > 0
      AND elapsed_s <= th.short_jobs__max_elapsed_s
      AND time_limit_fraction <= th.short_jobs__max_used_fraction
)
SELECT 'short_jobs', job_key, NULL, NULL, NULL,
       json_object('short_jobs', n, 'median_elapsed_s', median_elapsed_s,
                   'job_ids', ids[1:20])
FROM short, tw_th th
WHERE latest = 1 AND n >= th.short_jobs__min_jobs;

-- name: jupyter_on_compute
INSERT INTO tw_candidates
SELECT 'jupyter_on_compute', job_key, step, node, NULL,
       json_object('process_name', comm, 'processes', processes)
FROM tw_jupyter;

-- name: gpu_underuse
INSERT INTO tw_candidates
SELECT 'gpu_underuse', l.job_key, NULL, l.node, NULL,
       json_object('gpus_allocated', coalesce(nullif(j.gpus // j.nnodes, 0), l.gpus_visible),
                   'max_in_use', l.max_in_use, 'most_common_in_use', l.most_common_in_use,
                   'seconds_at_max', round(l.max_in_use_s, 1), 'in_use_histogram', l.histogram)
FROM tw_gpu_levels l
JOIN tw_job_metrics j USING (job_key)
CROSS JOIN tw_th th
WHERE l.rounds >= th.gpu_underuse__min_samples AND l.max_in_use > 0
  AND (l.max_in_use_s < l.longest_level_s
       OR (j.nnodes = 1 AND l.max_in_use < coalesce(nullif(j.gpus, 0), l.gpus_visible)));

-- name: gpu_no_process
INSERT INTO tw_candidates
SELECT 'gpu_no_process', job_key, NULL, node, gpu_uuid,
       json_object('gpu_index', gpu_index, 'gpu_name', gpu_name, 'samples', samples,
                   'avg_util_pct', round(avg_util_pct, 1))
FROM tw_gpu_usage, tw_th th
WHERE samples >= th.gpu_no_process__min_samples AND samples_with_process = 0;

-- name: gpu_never_used
INSERT INTO tw_candidates
SELECT 'gpu_never_used', job_key, NULL, node, gpu_uuid,
       json_object('gpu_index', gpu_index, 'gpu_name', gpu_name, 'samples', samples,
                   'samples_with_process', samples_with_process)
FROM tw_gpu_usage, tw_th th
WHERE util_samples >= th.gpu_never_used__min_samples AND max_util_pct = 0;

-- name: try_splitting
INSERT INTO tw_candidates
SELECT 'try_splitting', job_key, NULL, node, gpu_uuid,
       json_object('gpu_index', gpu_index, 'longest_idle_s', round(longest_idle_s, 1),
                   'span_s', round(span_s, 1), 'idle_fraction', round(longest_idle_s / span_s, 4))
FROM tw_gpu_usage, tw_th th
WHERE util_samples >= th.try_splitting__min_samples AND max_util_pct > 0
  AND longest_idle_s >= th.try_splitting__min_idle_fraction * span_s;

-- name: investigate_gpu_usage
INSERT INTO tw_candidates
SELECT 'investigate_gpu_usage', job_key, NULL, node, gpu_uuid,
       json_object('gpu_index', gpu_index, 'avg_util_pct', round(avg_util_pct, 1),
                   'low_fraction', round(low_s / span_s, 4), 'span_s', round(span_s, 1))
FROM tw_gpu_usage, tw_th th
WHERE util_samples >= th.investigate_gpu_usage__min_samples AND max_util_pct > 0
  AND low_s >= th.investigate_gpu_usage__min_low_fraction * span_s;

-- name: high_system_time
INSERT INTO tw_candidates
SELECT 'high_system_time', job_key, step, node, NULL,
       json_object('counted_samples', sys_samples, 'score', round(sys_score, 2),
                   'ratio_10_33', sys_10_33, 'ratio_33_67', sys_33_67, 'ratio_67_100', sys_67_100,
                   'ratio_over_100_sum', round(sys_over_100, 2),
                   'system_share', round(system_s / nullif(cpu_s, 0), 4))
FROM tw_step_usage, tw_th th
WHERE sys_samples >= th.high_system_time__min_samples AND sys_score >= sys_samples;
