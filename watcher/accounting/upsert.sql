-- sacct_stage (checked) into jobs and job_steps, inside the importer's transaction.
-- Variables: sacct_cluster, the cluster every row is stored under.
-- Leaves sacct_orphans (job_id, steps, known): the jobs whose steps came without their job
-- line; the importer reports those the store does not hold (known = false).
--
-- A job line replaces the job's row. Its steps are replaced as a set when the output is a
-- complete view of its jobs, as our own sacct call prints it: a job that was running at the
-- last import gets its end, and a requeued job loses the steps of its earlier run. An output
-- that shows it is not complete (no step at all: sacct -X; a step without its job line:
-- --state, -j N.batch) replaces only the steps it holds and deletes none, so importing a
-- partial view never loses what a complete one stored.
-- Delete-then-insert rather than INSERT OR REPLACE: plain inserts keep the primary-key
-- indexes cheapest, and after the deletes nothing can conflict.

-- sacct should not repeat a job or step; if it does, the later record is the newer.
DELETE FROM sacct_stage AS s
USING (
    SELECT job_id, step, max(line) AS last
    FROM sacct_stage
    GROUP BY job_id, step
    HAVING count(*) > 1
) AS d
WHERE s.job_id = d.job_id AND s.step IS NOT DISTINCT FROM d.step AND s.line < d.last;

-- Steps whose job line is not in this output. They replace the same steps of the job, and
-- are stored even where the store does not hold the job yet: a job row cannot be made from
-- them (a step line has no user, account or request), but once the job line comes, they are
-- its steps. Leaving them out instead would make importing the same output again, after
-- the job line, change the store.
CREATE OR REPLACE TEMP TABLE sacct_orphans AS
SELECT job_id, count(*) AS steps, false AS known
FROM sacct_stage
WHERE step IS NOT NULL
  AND job_id NOT IN (SELECT job_id FROM sacct_stage WHERE step IS NULL)
GROUP BY job_id;

UPDATE sacct_orphans SET known = true
WHERE job_id IN (SELECT job_id FROM jobs WHERE cluster = getvariable('sacct_cluster'));

SET VARIABLE sacct_partial = (
    SELECT count(*) FILTER (step IS NOT NULL) = 0 FROM sacct_stage
) OR (SELECT count(*) > 0 FROM sacct_orphans);

-- A complete view: every stored step of the jobs it has a line for.
DELETE FROM job_steps
WHERE NOT getvariable('sacct_partial')
  AND cluster = getvariable('sacct_cluster')
  AND job_id IN (SELECT job_id FROM sacct_stage WHERE step IS NULL);

-- A partial view: the steps it holds, one by one.
DELETE FROM job_steps AS t
USING sacct_stage AS s
WHERE getvariable('sacct_partial')
  AND t.cluster = getvariable('sacct_cluster')
  AND t.job_id = s.job_id AND t.step = s.step;

DELETE FROM jobs
WHERE cluster = getvariable('sacct_cluster')
  AND job_id IN (SELECT job_id FROM sacct_stage WHERE step IS NULL);

INSERT INTO jobs (
    cluster, job_id, job_id_display, array_job_id, array_task_id, het_job_id, het_job_offset,
    user_name, account, partition, qos, job_name, submit_line, work_dir, state, exit_code,
    exit_signal, submit_time, start_time, end_time, time_limit_s, elapsed_s, nnodes, ncpus,
    ngpus, alloc_mem_bytes, req_mem_bytes, req_mem_per, alloc_tres, req_tres, req_cpus,
    cancelled_by_uid, nodelist, total_cpu_s, user_cpu_s, system_cpu_s, max_rss_bytes,
    imported_at
)
SELECT
    getvariable('sacct_cluster'), j.job_id, j.job_id_display, j.array_job_id, j.array_task_id,
    j.het_job_id, j.het_job_offset, j.user_name, j.account, j.partition, j.qos, j.job_name,
    j.submit_line, j.work_dir, j.state, j.exit_code, j.exit_signal, j.submit_time,
    j.start_time, j.end_time, j.time_limit_s, j.elapsed_s, j.nnodes, j.ncpus, j.ngpus,
    j.alloc_mem_bytes,
    -- ReqMem before 21.08 is per node (n) or per CPU (c); since then it is the job's total.
    CASE j.req_mem_per
        WHEN 'node' THEN j.req_mem_value * coalesce(nullif(j.nnodes, 0), 1)
        WHEN 'cpu' THEN j.req_mem_value * coalesce(nullif(j.ncpus, 0), j.req_cpus, 1)
        ELSE j.req_mem_value
    END,
    j.req_mem_per, j.alloc_tres, j.req_tres, j.req_cpus, j.cancelled_by_uid, j.nodelist,
    j.total_cpu_s, j.user_cpu_s, j.system_cpu_s,
    -- sacct 22.05 leaves the job line's MaxRSS empty; the steps have it.
    CASE WHEN s.max_rss_bytes IS NULL THEN j.max_rss_bytes
         ELSE greatest(s.max_rss_bytes, coalesce(j.max_rss_bytes, 0)) END,
    now()
FROM sacct_stage AS j
LEFT JOIN (
    SELECT job_id, max(max_rss_bytes) AS max_rss_bytes
    FROM (
        SELECT job_id, max_rss_bytes FROM sacct_stage WHERE step IS NOT NULL
        UNION ALL
        -- A partial view: the job's stored steps that it does not hold count as well.
        SELECT job_id, max_rss_bytes
        FROM job_steps
        WHERE getvariable('sacct_partial')
          AND cluster = getvariable('sacct_cluster')
          AND job_id IN (SELECT job_id FROM sacct_stage WHERE step IS NULL)
    )
    GROUP BY job_id
) AS s USING (job_id)
WHERE j.step IS NULL;

INSERT INTO job_steps (
    cluster, job_id, step, step_name, state, exit_code, exit_signal, start_time, end_time,
    elapsed_s, nnodes, ntasks, ncpus, ngpus, alloc_tres, nodelist, total_cpu_s, user_cpu_s,
    system_cpu_s, max_rss_bytes, max_rss_node, ave_rss_bytes, imported_at
)
SELECT
    getvariable('sacct_cluster'), job_id, step, job_name, state, exit_code, exit_signal,
    start_time, end_time, elapsed_s, nnodes, ntasks, ncpus, ngpus, alloc_tres, nodelist,
    total_cpu_s, user_cpu_s, system_cpu_s, max_rss_bytes, max_rss_node, ave_rss_bytes, now()
FROM sacct_stage
WHERE step IS NOT NULL;

-- A stored job whose steps came alone keeps its row; its MaxRSS follows its largest step.
UPDATE jobs
SET max_rss_bytes = CASE WHEN jobs.max_rss_bytes IS NULL THEN o.max_rss_bytes
                         ELSE greatest(jobs.max_rss_bytes, o.max_rss_bytes) END
FROM (
    SELECT job_id, max(max_rss_bytes) AS max_rss_bytes
    FROM sacct_stage
    WHERE step IS NOT NULL AND job_id IN (SELECT job_id FROM sacct_orphans WHERE known)
    GROUP BY job_id
    HAVING max(max_rss_bytes) IS NOT NULL
) AS o
WHERE jobs.cluster = getvariable('sacct_cluster') AND jobs.job_id = o.job_id;
