-- Slurm accounting imported from sacct: one row per job and one per step.
-- Keys are the raw job id (JobIDRaw) per cluster; the display id ("123_4", "123+1") is kept.
-- Re-importing replaces a row (INSERT OR REPLACE), so a running job that finished is updated.
-- Times are TIMESTAMPTZ; durations are seconds; sizes are bytes. NULL means "not known"
-- (a running step's MaxRSS, an UNLIMITED time limit, an Unknown end time).

CREATE TABLE jobs (
    cluster             VARCHAR NOT NULL,
    job_id              BIGINT NOT NULL,       -- JobIDRaw
    job_id_display      VARCHAR NOT NULL,      -- JobID as sacct prints it
    array_job_id        BIGINT,                -- the array's id for array tasks
    array_task_id       INTEGER,
    het_job_id          BIGINT,                -- the het job's leader id for components
    het_job_offset      INTEGER,
    user_name           VARCHAR NOT NULL,
    account             VARCHAR,
    partition           VARCHAR,
    qos                 VARCHAR,
    job_name            VARCHAR,
    submit_line         VARCHAR,
    work_dir            VARCHAR,
    state               VARCHAR NOT NULL,      -- first word: COMPLETED, FAILED, CANCELLED, …
    exit_code           INTEGER,
    exit_signal         INTEGER,
    submit_time         TIMESTAMPTZ,
    start_time          TIMESTAMPTZ,
    end_time            TIMESTAMPTZ,           -- NULL while running
    time_limit_s        BIGINT,                -- NULL: UNLIMITED / Partition_Limit unknown
    elapsed_s           BIGINT,
    nnodes              INTEGER,
    ncpus               INTEGER,
    ngpus               INTEGER NOT NULL DEFAULT 0,   -- AllocTRES gres/gpu
    alloc_mem_bytes     BIGINT,                -- AllocTRES mem (whole job)
    req_mem_bytes       BIGINT,                -- ReqMem as a total for the job
    req_mem_per         VARCHAR,               -- 'node' | 'cpu' | NULL: how ReqMem was given
    alloc_tres          VARCHAR,
    req_tres            VARCHAR,               -- ReqTRES as sacct prints it
    req_cpus            INTEGER,               -- ReqCPUS
    cancelled_by_uid    BIGINT,                -- from State 'CANCELLED by <uid>'
    nodelist            VARCHAR,
    total_cpu_s         DOUBLE,
    user_cpu_s          DOUBLE,
    system_cpu_s        DOUBLE,
    max_rss_bytes       BIGINT,                -- max over the job's steps
    imported_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, job_id)
);

CREATE TABLE job_steps (
    cluster             VARCHAR NOT NULL,
    job_id              BIGINT NOT NULL,
    step                VARCHAR NOT NULL,      -- 'batch' | 'extern' | 'interactive' | '0' | …
    step_name           VARCHAR,
    state               VARCHAR NOT NULL,
    exit_code           INTEGER,
    exit_signal         INTEGER,
    start_time          TIMESTAMPTZ,
    end_time            TIMESTAMPTZ,
    elapsed_s           BIGINT,
    nnodes              INTEGER,
    ntasks              INTEGER,
    ncpus               INTEGER,
    ngpus               INTEGER NOT NULL DEFAULT 0,
    alloc_tres          VARCHAR,
    nodelist            VARCHAR,
    total_cpu_s         DOUBLE,
    user_cpu_s          DOUBLE,
    system_cpu_s        DOUBLE,
    max_rss_bytes       BIGINT,                -- NULL while running or shorter than one poll
    max_rss_node        VARCHAR,
    ave_rss_bytes       BIGINT,
    imported_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, job_id, step)
);

-- Windows already imported, for incremental runs and for progress after a crash.
CREATE TABLE accounting_imports (
    cluster             VARCHAR NOT NULL,
    window_start        TIMESTAMPTZ NOT NULL,
    window_end          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    jobs                INTEGER NOT NULL,
    steps               INTEGER NOT NULL,
    as_user             VARCHAR,               -- NULL: imported as admin (all users)
    source              VARCHAR                -- 'sacct' or the file the records came from
);
