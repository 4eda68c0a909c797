-- From sacct's text to values: TEMP macros on the importing connection, used by stage.sql.
-- Each gives NULL both for "not known" (empty, Unknown, None, UNLIMITED …) and for text it
-- cannot read; check.sql tells the two apart and names the line of the second.
-- Plain string functions rather than regular expressions where they do: 300k records.

-- Free text, with sacct's words for "nothing" as NULL.
-- (Comparisons, not IN: DuckDB plans an IN list as a join.)
CREATE OR REPLACE TEMP MACRO sacct_text(s) AS
    CASE WHEN s = '' OR s = 'Unknown' OR s = 'None' OR s = 'None assigned' OR s = 'N/A'
         THEN NULL ELSE s END;

-- '2026-11-22T02:10:03', a wall-clock time in zone tz (UTC for our own sacct calls).
CREATE OR REPLACE TEMP MACRO sacct_time(s, tz) AS
    CASE WHEN tz = 'UTC' THEN to_timestamp(epoch(TRY_CAST(s AS TIMESTAMP)))
         ELSE timezone(tz, TRY_CAST(s AS TIMESTAMP)) END;

-- '[D-][HH:]MM:SS[.mmm]' (Elapsed, TotalCPU, Timelimit …) in seconds, read as a DuckDB
-- interval: '1-02:03:04' becomes '1 days 02:03:04', and 'MM:SS.mmm' (sacct's form under an
-- hour when there are subseconds) gets its '00:' hours.
CREATE OR REPLACE TEMP MACRO sacct_seconds(s) AS
    epoch(TRY_CAST(
        CASE WHEN strlen(s) - strlen(replace(s, ':', '')) = 1 THEN '00:' || s
             ELSE replace(s, '-', ' days ') END
        AS INTERVAL));

-- '3128K', '1.5G', '4000Mn', '0' in bytes. Slurm's units are powers of 1024; a bare
-- number is counted in bare_unit bytes (1 for MaxRSS, 1048576 for ReqMem and TRES mem).
-- A trailing n/c (ReqMem before 21.08: per node / per CPU) is read by sacct_mem_per.
CREATE OR REPLACE TEMP MACRO sacct_scaled(s, bare_unit) AS
    CASE WHEN s[-1] BETWEEN '0' AND '9' THEN TRY_CAST(s AS DOUBLE) * bare_unit
         ELSE TRY_CAST(s[:-2] AS DOUBLE) * CASE s[-1]
            WHEN 'K' THEN 1024 WHEN 'M' THEN 1048576 WHEN 'G' THEN 1073741824
            WHEN 'T' THEN 1099511627776 WHEN 'P' THEN 1125899906842624
            WHEN 'E' THEN 1152921504606846976 END
    END;
CREATE OR REPLACE TEMP MACRO sacct_bytes(s, bare_unit) AS
    CAST(round(
        CASE WHEN s[-1] IN ('n', 'c') THEN sacct_scaled(s[:-2], bare_unit)
             ELSE sacct_scaled(s, bare_unit) END
    ) AS BIGINT);

CREATE OR REPLACE TEMP MACRO sacct_mem_per(s) AS
    CASE s[-1] WHEN 'n' THEN 'node' WHEN 'c' THEN 'cpu' END;

-- One TRES of 'billing=4,cpu=4,gres/gpu=1,mem=4G,node=1', as text; NULL when absent.
CREATE OR REPLACE TEMP MACRO tres_value(tres, name) AS
    nullif(regexp_extract(tres, '(^|,)' || name || '=([^,]+)', 2), '');

-- GPUs in a TRES string: gres/gpu=N, else the sum of typed entries gres/gpu:a100=N.
CREATE OR REPLACE TEMP MACRO tres_gpus(tres) AS
    CASE WHEN contains(tres, 'gres/gpu') THEN coalesce(
        TRY_CAST(tres_value(tres, 'gres/gpu') AS BIGINT),
        list_sum(CAST(regexp_extract_all(tres, '(^|,)gres/gpu:[^=,]+=([0-9]+)', 2) AS BIGINT[])),
        0) ELSE 0 END;
