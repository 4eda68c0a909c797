-- The first record of sacct_stage with a value that is there but cannot be read, as
-- (line, field, text); no row when every value was understood.
SELECT line, bad[1] AS field, bad[2] AS text
FROM (
    SELECT
        line,
        CASE
            WHEN job_id IS NULL THEN ['JobIDRaw', jobidraw]
            WHEN state IS NULL THEN ['State', state_text]
            WHEN sacct_text(exitcode) IS NOT NULL AND (exit_code IS NULL OR exit_signal IS NULL)
                THEN ['ExitCode', exitcode]
            WHEN sacct_text(submit) IS NOT NULL AND submit_time IS NULL THEN ['Submit', submit]
            WHEN sacct_text(start) IS NOT NULL AND start_time IS NULL THEN ['Start', start]
            WHEN sacct_text("end") IS NOT NULL AND end_time IS NULL THEN ['End', "end"]
            WHEN sacct_text(timelimit) IS NOT NULL AND time_limit_s IS NULL
                AND timelimit NOT IN ('UNLIMITED', 'Partition_Limit', 'INVALID')
                THEN ['Timelimit', timelimit]
            WHEN sacct_text(elapsedraw) IS NOT NULL AND elapsed_s IS NULL
                THEN ['ElapsedRaw', elapsedraw]
            WHEN sacct_text(nnodes_text) IS NOT NULL AND nnodes IS NULL
                THEN ['NNodes', nnodes_text]
            WHEN sacct_text(ncpus_text) IS NOT NULL AND ncpus IS NULL THEN ['NCPUS', ncpus_text]
            WHEN sacct_text(reqcpus) IS NOT NULL AND req_cpus IS NULL THEN ['ReqCPUS', reqcpus]
            WHEN sacct_text(ntasks_text) IS NOT NULL AND ntasks IS NULL
                THEN ['NTasks', ntasks_text]
            WHEN sacct_text(reqmem) IS NOT NULL AND req_mem_value IS NULL THEN ['ReqMem', reqmem]
            WHEN tres_value(alloctres, 'mem') IS NOT NULL AND alloc_mem_bytes IS NULL
                THEN ['AllocTRES', alloctres]
            WHEN sacct_text(totalcpu) IS NOT NULL AND total_cpu_s IS NULL
                THEN ['TotalCPU', totalcpu]
            WHEN sacct_text(usercpu) IS NOT NULL AND user_cpu_s IS NULL THEN ['UserCPU', usercpu]
            WHEN sacct_text(systemcpu) IS NOT NULL AND system_cpu_s IS NULL
                THEN ['SystemCPU', systemcpu]
            WHEN sacct_text(maxrss) IS NOT NULL AND max_rss_bytes IS NULL THEN ['MaxRSS', maxrss]
            WHEN sacct_text(averss) IS NOT NULL AND ave_rss_bytes IS NULL THEN ['AveRSS', averss]
            WHEN step IS NULL AND user_name IS NULL THEN ['User', '']
        END AS bad
    FROM sacct_stage
)
WHERE bad IS NOT NULL
ORDER BY line
LIMIT 1;
