-- From sacct's text to values: TEMP macros on the importing connection, used by stage.sql.
-- Each gives NULL both for "not known" (empty, Unknown, None, UNLIMITED …) and for text it
-- cannot read; check.sql tells the two apart and names the line of the second.

-- Free text, with sacct's words for "nothing" as NULL.
CREATE OR REPLACE TEMP MACRO sacct_text(s) AS
    CASE WHEN s IN ('', 'Unknown', 'None', 'None assigned', 'N/A') THEN NULL ELSE s END;

-- '2026-11-22T02:10:03', a wall-clock time in zone tz (UTC for our own sacct calls).
CREATE OR REPLACE TEMP MACRO sacct_time(s, tz) AS
    timezone(tz, TRY_STRPTIME(s, '%Y-%m-%dT%H:%M:%S'));

-- '[D-][HH:]MM:SS[.mmm]' (Elapsed, TotalCPU, Timelimit …) in seconds.
CREATE OR REPLACE TEMP MACRO sacct_seconds(s) AS
    CASE WHEN regexp_full_match(s, '([0-9]+-)?([0-9]+:){1,2}[0-9]+(\.[0-9]+)?') THEN
        coalesce(TRY_CAST(regexp_extract(s, '^([0-9]+)-', 1) AS DOUBLE), 0) * 86400
        + coalesce(CAST(string_split(regexp_replace(s, '^[0-9]+-', ''), ':')[-3] AS DOUBLE), 0)
            * 3600
        + CAST(string_split(regexp_replace(s, '^[0-9]+-', ''), ':')[-2] AS DOUBLE) * 60
        + CAST(string_split(regexp_replace(s, '^[0-9]+-', ''), ':')[-1] AS DOUBLE)
    END;

-- '3128K', '1.5G', '4000Mn', '0' in bytes. Slurm's units are powers of 1024; a bare
-- number is in bare_unit ('' for bytes as in MaxRSS, 'M' as in ReqMem and TRES mem).
-- A trailing n/c (ReqMem before 21.08: per node / per CPU) is read by sacct_mem_per.
CREATE OR REPLACE TEMP MACRO sacct_bytes(s, bare_unit) AS
    CAST(round(
        TRY_CAST(regexp_extract(s, '^([0-9]+(\.[0-9]+)?)[KMGTPE]?[nc]?$', 1) AS DOUBLE)
        * pow(1024, list_position(['', 'K', 'M', 'G', 'T', 'P', 'E'],
                coalesce(nullif(regexp_extract(s, '^[0-9.]+([KMGTPE])', 1), ''), bare_unit))
            - 1)
    ) AS BIGINT);

CREATE OR REPLACE TEMP MACRO sacct_mem_per(s) AS
    CASE regexp_extract(s, '^[0-9.]+[KMGTPE]?([nc])$', 1)
        WHEN 'n' THEN 'node' WHEN 'c' THEN 'cpu' END;

-- One TRES of 'billing=4,cpu=4,gres/gpu=1,mem=4G,node=1', as text; NULL when absent.
CREATE OR REPLACE TEMP MACRO tres_value(tres, name) AS
    nullif(regexp_extract(tres, '(^|,)' || name || '=([^,]+)', 2), '');

-- GPUs in a TRES string: gres/gpu=N, else the sum of typed entries gres/gpu:a100=N.
CREATE OR REPLACE TEMP MACRO tres_gpus(tres) AS
    coalesce(
        TRY_CAST(tres_value(tres, 'gres/gpu') AS BIGINT),
        list_sum(CAST(regexp_extract_all(tres, '(^|,)gres/gpu:[^=,]+=([0-9]+)', 2) AS BIGINT[])),
        0);
