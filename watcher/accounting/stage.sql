-- sacct_raw (one text column per sacct field, and the record's line number) to typed rows.
-- Variables: sacct_tz, the zone sacct's times are in.
-- Every record is kept, bad ones too: check.sql looks for those before anything is stored.

CREATE OR REPLACE TEMP TABLE sacct_stage AS
WITH split AS (
    SELECT
        *,
        regexp_extract(jobidraw, '^([0-9]+)(\.(.+))?$', ['id', 'dot', 'step']) AS raw_id,
        split_part(jobid, '.', 1) AS job_part,
    FROM sacct_raw
)
SELECT
    line,
    TRY_CAST(nullif(raw_id.id, '') AS BIGINT) AS job_id,
    nullif(raw_id.step, '') AS step,
    job_part AS job_id_display,
    TRY_CAST(nullif(regexp_extract(job_part, '^([0-9]+)_', 1), '') AS BIGINT) AS array_job_id,
    TRY_CAST(nullif(regexp_extract(job_part, '_([0-9]+)$', 1), '') AS INTEGER) AS array_task_id,
    TRY_CAST(nullif(regexp_extract(job_part, '^([0-9]+)\+', 1), '') AS BIGINT) AS het_job_id,
    TRY_CAST(nullif(regexp_extract(job_part, '\+([0-9]+)$', 1), '') AS INTEGER) AS het_job_offset,
    sacct_text(cluster) AS cluster,
    coalesce(sacct_text("user"), sacct_text(uid)) AS user_name,
    sacct_text(account) AS account,
    sacct_text("partition") AS "partition",
    sacct_text(qos) AS qos,
    sacct_text(jobname) AS job_name,
    sacct_text(submitline) AS submit_line,
    sacct_text(workdir) AS work_dir,
    nullif(split_part(state, ' ', 1), '') AS state,
    TRY_CAST(nullif(regexp_extract(state, ' by ([0-9]+)$', 1), '') AS BIGINT) AS cancelled_by_uid,
    TRY_CAST(split_part(exitcode, ':', 1) AS INTEGER) AS exit_code,
    TRY_CAST(split_part(exitcode, ':', 2) AS INTEGER) AS exit_signal,
    sacct_time(submit, getvariable('sacct_tz')) AS submit_time,
    sacct_time(start, getvariable('sacct_tz')) AS start_time,
    sacct_time("end", getvariable('sacct_tz')) AS end_time,
    CAST(sacct_seconds(timelimit) AS BIGINT) AS time_limit_s,
    TRY_CAST(elapsedraw AS BIGINT) AS elapsed_s,
    TRY_CAST(nnodes AS INTEGER) AS nnodes,
    TRY_CAST(ncpus AS INTEGER) AS ncpus,
    TRY_CAST(reqcpus AS INTEGER) AS req_cpus,
    TRY_CAST(ntasks AS INTEGER) AS ntasks,
    tres_gpus(alloctres) AS ngpus,
    sacct_bytes(tres_value(alloctres, 'mem'), 'M') AS alloc_mem_bytes,
    sacct_bytes(reqmem, 'M') AS req_mem_value,
    sacct_mem_per(reqmem) AS req_mem_per,
    sacct_text(alloctres) AS alloc_tres,
    sacct_text(reqtres) AS req_tres,
    sacct_text(nodelist) AS nodelist,
    sacct_seconds(totalcpu) AS total_cpu_s,
    sacct_seconds(usercpu) AS user_cpu_s,
    sacct_seconds(systemcpu) AS system_cpu_s,
    sacct_bytes(maxrss, '') AS max_rss_bytes,
    sacct_text(maxrssnode) AS max_rss_node,
    sacct_bytes(averss, '') AS ave_rss_bytes,
    -- the text of the typed fields, for check.sql's messages
    jobidraw, state AS state_text, exitcode, submit, start, "end", timelimit, elapsedraw,
    nnodes AS nnodes_text, ncpus AS ncpus_text, reqcpus, ntasks AS ntasks_text, reqmem,
    alloctres, totalcpu, usercpu, systemcpu, maxrss, averss,
FROM split;
