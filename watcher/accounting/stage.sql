-- sacct_raw (one text column per sacct field, the record's line, and how many fields its
-- output's header names) to typed rows.
-- Variables: sacct_tz, the zone sacct's times are in.
-- Every record is kept, bad ones too: `bad` names the first field whose text is there but
-- could not be read, and the importer stops on it before anything is stored.

CREATE OR REPLACE TEMP TABLE sacct_stage AS
WITH typed AS (
    SELECT
        *,
        split_part(jobidraw, '.', 1) AS raw_job,
        split_part(jobid, '.', 1) AS job_part,   -- 12, 12_3, 12_[4-9%2], 12+1
        nullif(split_part(state, ' ', 1), '') AS state_word,
        TRY_CAST(split_part(exitcode, ':', 1) AS INTEGER) AS exit_code,
        TRY_CAST(split_part(exitcode, ':', 2) AS INTEGER) AS exit_signal,
        sacct_time(submit, getvariable('sacct_tz')) AS submit_time,
        sacct_time(start, getvariable('sacct_tz')) AS start_time,
        sacct_time("end", getvariable('sacct_tz')) AS end_time,
        CAST(sacct_seconds(timelimit) AS BIGINT) AS time_limit_s,
        TRY_CAST(elapsedraw AS BIGINT) AS elapsed_raw_s,
        -- Elapsed ([D-]HH:MM:SS) where an older or hand-made output has no ElapsedRaw.
        CAST(sacct_seconds(elapsed) AS BIGINT) AS elapsed_text_s,
        TRY_CAST(nnodes AS INTEGER) AS nnodes_n,
        TRY_CAST(ncpus AS INTEGER) AS ncpus_n,
        TRY_CAST(reqcpus AS INTEGER) AS req_cpus,
        TRY_CAST(ntasks AS INTEGER) AS ntasks_n,
        tres_value(alloctres, 'mem') AS alloc_mem_text,
        sacct_bytes(reqmem, 1048576) AS req_mem_value,
        sacct_seconds(totalcpu) AS total_cpu_s,
        sacct_seconds(usercpu) AS user_cpu_s,
        sacct_seconds(systemcpu) AS system_cpu_s,
        sacct_bytes(maxrss, 1) AS max_rss_bytes,
        sacct_bytes(averss, 1) AS ave_rss_bytes,
    FROM sacct_raw
)
SELECT
    line,
    field_count,
    TRY_CAST(raw_job AS BIGINT) AS job_id,
    nullif(jobidraw[length(raw_job) + 2:], '') AS step,
    job_part AS job_id_display,
    CASE WHEN contains(job_part, '_')
        THEN TRY_CAST(split_part(job_part, '_', 1) AS BIGINT) END AS array_job_id,
    CASE WHEN contains(job_part, '_')
        THEN TRY_CAST(split_part(job_part, '_', 2) AS INTEGER) END AS array_task_id,
    CASE WHEN contains(job_part, '+')
        THEN TRY_CAST(split_part(job_part, '+', 1) AS BIGINT) END AS het_job_id,
    CASE WHEN contains(job_part, '+')
        THEN TRY_CAST(split_part(job_part, '+', 2) AS INTEGER) END AS het_job_offset,
    sacct_text(cluster) AS cluster,
    coalesce(sacct_text("user"), sacct_text(uid)) AS user_name,
    sacct_text(account) AS account,
    sacct_text("partition") AS "partition",
    sacct_text(qos) AS qos,
    sacct_text(jobname) AS job_name,
    sacct_text(submitline) AS submit_line,
    sacct_text(workdir) AS work_dir,
    state_word AS state,
    CASE WHEN contains(state, ' by ')
        THEN TRY_CAST(split_part(state, ' by ', 2) AS BIGINT) END AS cancelled_by_uid,
    exit_code, exit_signal, submit_time, start_time, end_time, time_limit_s,
    coalesce(elapsed_raw_s, elapsed_text_s) AS elapsed_s,
    nnodes_n AS nnodes,
    ncpus_n AS ncpus,
    req_cpus,
    ntasks_n AS ntasks,
    tres_gpus(alloctres) AS ngpus,
    sacct_bytes(alloc_mem_text, 1048576) AS alloc_mem_bytes,
    req_mem_value,
    sacct_mem_per(reqmem) AS req_mem_per,
    sacct_text(alloctres) AS alloc_tres,
    sacct_text(reqtres) AS req_tres,
    sacct_text(nodelist) AS nodelist,
    total_cpu_s, user_cpu_s, system_cpu_s, max_rss_bytes,
    sacct_text(maxrssnode) AS max_rss_node,
    ave_rss_bytes,
    CASE
        WHEN field_count <> fields_wanted THEN 'field count'
        WHEN TRY_CAST(raw_job AS BIGINT) IS NULL THEN 'JobIDRaw'
        WHEN state_word IS NULL THEN 'State'
        WHEN sacct_text(exitcode) IS NOT NULL AND (exit_code IS NULL OR exit_signal IS NULL)
            THEN 'ExitCode'
        WHEN sacct_text(submit) IS NOT NULL AND submit_time IS NULL THEN 'Submit'
        WHEN sacct_text(start) IS NOT NULL AND start_time IS NULL THEN 'Start'
        WHEN sacct_text("end") IS NOT NULL AND end_time IS NULL THEN 'End'
        WHEN sacct_text(timelimit) IS NOT NULL AND time_limit_s IS NULL
            AND timelimit <> 'UNLIMITED' AND timelimit <> 'Partition_Limit' THEN 'Timelimit'
        WHEN sacct_text(elapsedraw) IS NOT NULL AND elapsed_raw_s IS NULL THEN 'ElapsedRaw'
        WHEN sacct_text(elapsedraw) IS NULL AND sacct_text(elapsed) IS NOT NULL
            AND elapsed_text_s IS NULL THEN 'Elapsed'
        WHEN sacct_text(nnodes) IS NOT NULL AND nnodes_n IS NULL THEN 'NNodes'
        WHEN sacct_text(ncpus) IS NOT NULL AND ncpus_n IS NULL THEN 'NCPUS'
        WHEN sacct_text(reqcpus) IS NOT NULL AND req_cpus IS NULL THEN 'ReqCPUS'
        WHEN sacct_text(ntasks) IS NOT NULL AND ntasks_n IS NULL THEN 'NTasks'
        WHEN sacct_text(reqmem) IS NOT NULL AND req_mem_value IS NULL THEN 'ReqMem'
        WHEN alloc_mem_text IS NOT NULL AND sacct_bytes(alloc_mem_text, 1048576) IS NULL
            THEN 'AllocTRES'
        WHEN sacct_text(totalcpu) IS NOT NULL AND total_cpu_s IS NULL THEN 'TotalCPU'
        WHEN sacct_text(usercpu) IS NOT NULL AND user_cpu_s IS NULL THEN 'UserCPU'
        WHEN sacct_text(systemcpu) IS NOT NULL AND system_cpu_s IS NULL THEN 'SystemCPU'
        WHEN sacct_text(maxrss) IS NOT NULL AND max_rss_bytes IS NULL THEN 'MaxRSS'
        WHEN sacct_text(averss) IS NOT NULL AND ave_rss_bytes IS NULL THEN 'AveRSS'
        WHEN jobidraw NOT LIKE '%.%'
            AND coalesce(sacct_text("user"), sacct_text(uid)) IS NULL THEN 'User'
    END AS bad
FROM typed;
