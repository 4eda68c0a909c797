-- A synthetic cluster week, generated inside DuckDB (no Python loops).
-- Input: the one-row table gen(seed, jobs, users, nodes, mean_samples, gpu_share, interval_s,
-- week_start). Randomness is hash-based and depends only on the seed, so a store is reproducible.
-- Job behaviours are mixed so that every rule has work to do:
--   0 parallel and efficient   1 serial on many cores   2 mostly idle   3 half busy
--   4 system-time heavy        5 memory-hungry          6 Jupyter      7 short

-- name: macros
CREATE OR REPLACE TEMP MACRO rnd(i, salt) AS
    (hash(i, salt, (SELECT seed FROM gen)) % 1000003) / 1000003.0;

-- name: plan
CREATE OR REPLACE TEMP TABLE plan AS
WITH base AS (
    SELECT i,
           -- A few heavy users and a long tail.
           (pow(rnd(i, 'user'), 2) * g.users)::INTEGER AS user_no,
           [1, 1, 2, 4, 4, 8, 16, 32, 64][1 + (rnd(i, 'cores') * 9)::INTEGER % 9] AS cores,
           CASE WHEN rnd(i, 'gpu') < g.gpu_share THEN 1 + (rnd(i, 'ngpu') * 4)::INTEGER % 4 ELSE 0 END AS gpus,
           (rnd(i, 'kind') * 8)::INTEGER % 8 AS kind,
           -- Exponential sample counts around the mean: many short jobs, a few long ones.
           greatest(1, (-ln(1 - rnd(i, 'len') * 0.999) * g.mean_samples)::INTEGER) AS n_samples,
           rnd(i, 'step0') < 0.25 AS has_step0,
           (rnd(i, 'node') * g.nodes)::INTEGER AS node_no,
           rnd(i, 'array') < 0.1 AS in_array,
           g.interval_s, g.week_start
    FROM range(0, (SELECT jobs FROM gen)) t(i), gen g
)
SELECT b.*,
       CASE WHEN kind = 7 THEN 1 ELSE n_samples END AS samples,
       CASE kind
           WHEN 0 THEN cores * 0.92 WHEN 1 THEN 1.0 WHEN 2 THEN cores * 0.05
           WHEN 3 THEN cores * 0.45 WHEN 4 THEN least(cores, 2) * 0.9 WHEN 5 THEN cores * 0.8
           WHEN 6 THEN 0.05 ELSE cores * 0.5 END AS busy_cores,
       CASE WHEN kind = 4 THEN 0.55 ELSE 0.04 END AS system_share,
       cores * 2147483648 AS mem_request,
       CASE kind WHEN 5 THEN 0.98 WHEN 2 THEN 0.05 ELSE 0.2 + 0.6 * rnd(i, 'mem') END AS mem_fraction,
       CASE WHEN kind = 7 THEN 20 + (rnd(i, 'short') * 60)::INTEGER
            ELSE (CASE WHEN kind = 7 THEN 1 ELSE n_samples END) * interval_s + 5 END AS elapsed_s,
       'u' || lpad(user_no::VARCHAR, 4, '0') AS user_name,
       'job' || ((rnd(i, 'name') * 12)::INTEGER) AS job_name,
       'n' || lpad(node_no::VARCHAR, 4, '0') AS node,
       CASE WHEN in_array THEN 10000000 + (i // 50) END AS array_job_id
FROM base b;

-- name: jobs
INSERT INTO jobs (cluster, job_id, job_id_display, array_job_id, array_task_id, user_name,
                  account, partition, qos, job_name, submit_line, state, exit_code, submit_time,
                  start_time, end_time, time_limit_s, elapsed_s, nnodes, ncpus, ngpus,
                  alloc_mem_bytes, req_mem_bytes, req_mem_per, total_cpu_s, user_cpu_s,
                  system_cpu_s, max_rss_bytes)
SELECT 'synth', 1000000 + i,
       CASE WHEN array_job_id IS NULL THEN (1000000 + i)::VARCHAR
            ELSE array_job_id || '_' || (i % 50) END,
       array_job_id, CASE WHEN array_job_id IS NOT NULL THEN i % 50 END,
       user_name, 'acct' || (hash(user_name) % 40), CASE WHEN gpus > 0 THEN 'gpu' ELSE 'cpu' END,
       'normal', job_name, 'sbatch ' || job_name || '.sh',
       CASE WHEN kind = 5 AND rnd(i, 'oom') < 0.3 THEN 'OUT_OF_MEMORY'
            WHEN rnd(i, 'state') < 0.05 THEN 'FAILED' ELSE 'COMPLETED' END,
       0, start_ts - INTERVAL 5 MINUTE, start_ts, start_ts + to_seconds(elapsed_s),
       -- Limits from tight to generous, rounded up to the quarter hour.
       (ceil(elapsed_s * (1.1 + 6 * rnd(i, 'limit')) / 900) * 900)::BIGINT,
       elapsed_s, 1, cores, gpus, mem_request, mem_request, 'node',
       busy_cores * elapsed_s, busy_cores * elapsed_s * (1 - system_share),
       busy_cores * elapsed_s * system_share, (mem_request * mem_fraction)::BIGINT
FROM (
    SELECT *, week_start + to_seconds(rnd(i, 'start') * greatest(7 * 86400 - elapsed_s, 0)) AS start_ts
    FROM plan
);

-- name: job_steps
INSERT INTO job_steps (cluster, job_id, step, state, start_time, end_time, elapsed_s, nnodes,
                       ntasks, ncpus, total_cpu_s, max_rss_bytes)
SELECT j.cluster, j.job_id, s.step, j.state, j.start_time, j.end_time, j.elapsed_s, 1, 1,
       j.ncpus, CASE WHEN s.step = 'extern' THEN 0 ELSE j.total_cpu_s END,
       CASE WHEN s.step = 'extern' THEN 1048576 ELSE j.max_rss_bytes END
FROM jobs j
JOIN plan p ON j.job_id = 1000000 + p.i
CROSS JOIN (VALUES ('batch'), ('extern'), ('0')) s(step)
WHERE j.cluster = 'synth' AND (s.step <> '0' OR p.has_step0);

-- name: sessions
INSERT INTO sessions (session_id, job_id, cluster, node, mode, user_name, command, started_at,
                      ended_at, interval_s, exit_code, cores_available, mem_requested_bytes,
                      time_limit_s, gpu_status, watcher_version)
SELECT 's' || j.job_id, j.job_id, 'synth', p.node, 'run', j.user_name, j.submit_line,
       j.start_time, j.end_time, p.interval_s, 0, j.ncpus, j.req_mem_bytes, j.time_limit_s,
       CASE WHEN j.ngpus > 0 THEN 'ok' ELSE 'no-devices' END, 'synthetic'
FROM jobs j JOIN plan p ON j.job_id = 1000000 + p.i
WHERE j.cluster = 'synth';

-- name: step_samples
-- The work runs in step 0 when there is one (batch only launches it), else in batch.
INSERT INTO step_samples (session_id, seq, ts, job_id, step, node, nprocs, nthreads, cpu_user_s, cpu_system_s,
    rss_bytes, largest_rss_bytes, largest_pid, largest_comm, read_bytes, write_bytes, rchar, wchar,
    minor_faults, major_faults, cpus_available, cpus_source)
WITH s AS (
    SELECT p.*, unnest(range(p.samples)) AS seq, st.step, st.share
    FROM plan p
    CROSS JOIN (VALUES ('batch', 1.0), ('0', 1.0)) st(step, share)
    WHERE st.step = 'batch' OR p.has_step0
),
v AS (
    SELECT s.*,
           CASE WHEN has_step0 AND step = 'batch' THEN 0.01 ELSE busy_cores END AS busy,
           CASE WHEN has_step0 AND step = 'batch' THEN 0.002 ELSE mem_fraction END AS memf,
           j.start_time
    FROM s JOIN jobs j ON j.cluster = 'synth' AND j.job_id = 1000000 + s.i
)
SELECT 's' || (1000000 + i), seq,
       -- Real timestamps: one interval apart, with up to a second of jitter.
       start_time + to_seconds((seq + 1) * interval_s + rnd(i * 100000 + seq, 'jit')),
       1000000 + i, step, node, 1 + (busy::INTEGER), 1 + cores,
       busy * (1 - system_share) * (seq + 1) * interval_s,
       busy * system_share * (seq + 1) * interval_s,
       (mem_request * memf * (0.6 + 0.4 * (seq + 1) / samples))::BIGINT,
       (mem_request * memf * 0.9 * (0.6 + 0.4 * (seq + 1) / samples))::BIGINT,
       4242, CASE WHEN kind = 6 THEN 'jupyter-lab' ELSE 'python3' END,
       (seq + 1) * 1048576, (seq + 1) * 262144, (seq + 1) * 1048576, (seq + 1) * 262144,
       (seq + 1) * 1000, 0, cores, 'synthetic'
FROM v;

-- name: process_samples
-- Process rows for the Jupyter-like jobs only: the rest of the week's processes add rows, not work.
INSERT INTO process_samples (session_id, seq, ts, step, pid, ppid, start_ticks, comm, cmdline, cpu_user_s,
    cpu_system_s, rss_bytes, read_bytes, write_bytes, rchar, wchar, minor_faults, major_faults, nthreads)
SELECT 's' || (1000000 + p.i), seq, j.start_time + to_seconds((seq + 1) * p.interval_s),
       'batch', 4242, 4200, 123456, 'jupyter-lab', 'jupyter-lab --no-browser',
       0.05 * (seq + 1) * p.interval_s, 0, 200 << 20, 0, 0, NULL, NULL, 100, 0, 4
FROM (SELECT *, unnest(range(samples)) AS seq FROM plan WHERE kind = 6) p
JOIN jobs j ON j.cluster = 'synth' AND j.job_id = 1000000 + p.i;

-- name: gpu_samples
-- Per GPU: busy, idle, starved (low utilisation) or split (idle first, then busy), by job.
INSERT INTO gpu_samples
WITH g AS (
    SELECT p.*, unnest(range(p.gpus)) AS gpu_index
    FROM plan p WHERE p.gpus > 0
),
s AS (
    SELECT g.*, unnest(range(g.samples)) AS seq, (rnd(g.i, 'gpukind') * 4)::INTEGER % 4 AS gkind
    FROM g
)
SELECT 's' || (1000000 + i), seq,
       j.start_time + to_seconds((seq + 1) * interval_s + rnd(i * 100000 + seq, 'jit')),
       1000000 + i, node, gpu_index, 'GPU-' || i || '-' || gpu_index, 'Synthetic A100',
       util, util * 0.6, 10737418240, 85899345920, 60 + 3 * util,
       -- The energy counter: power integrated so far (a plausible, monotone counter).
       (60 + 3 * util) * (seq + 1) * interval_s,
       40 + util / 3, 1410, 0,
       CASE WHEN gkind = 1 AND gpu_index > 0 THEN [] ELSE [4242] END, 0
FROM (
    SELECT s.*,
           CASE gkind
               WHEN 0 THEN 80 + 20 * rnd(i * 100000 + seq, 'util')
               WHEN 1 THEN CASE WHEN gpu_index = 0 THEN 70.0 ELSE 0.0 END
               WHEN 2 THEN 3 + 6 * rnd(i * 100000 + seq, 'util')
               ELSE CASE WHEN seq < samples * 0.4 THEN 0.0 ELSE 90.0 END
           END AS util
    FROM s
) x
JOIN jobs j ON j.cluster = 'synth' AND j.job_id = 1000000 + x.i;
