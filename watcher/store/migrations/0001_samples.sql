-- Samples taken by the in-job watcher (run/attach) and, later, by the distributor.
-- Shared by every writer: one row per watcher session, step sample, process sample, GPU sample.
-- Times are real timestamps taken when the sample was read; nothing is inferred from row order.
-- Cumulative counters (CPU seconds, bytes, faults) are stored as read; rates come from deltas
-- over ts within (session_id, step), always with an explicit ORDER BY.

CREATE TABLE sessions (
    session_id          VARCHAR PRIMARY KEY,   -- uuid4 chosen by the watcher
    job_id              BIGINT,                -- Slurm job id (raw); NULL outside Slurm
    cluster             VARCHAR,
    node                VARCHAR NOT NULL,
    mode                VARCHAR NOT NULL,      -- 'run' | 'attach' | 'node'
    user_name           VARCHAR,
    command             VARCHAR,
    started_at          TIMESTAMPTZ NOT NULL,
    ended_at            TIMESTAMPTZ,
    interval_s          DOUBLE NOT NULL,
    exit_code           INTEGER,               -- the command's exit status (run only)
    exit_signal         INTEGER,               -- the signal that ended it, if any
    cores_available     INTEGER,               -- CPUs usable by the job on this node
    mem_requested_bytes BIGINT,                -- on this node (Slurm request), NULL if none
    time_limit_s        BIGINT,
    gpu_status          VARCHAR,               -- 'ok' | 'no-library' | 'no-devices' | 'disabled' | error
    watcher_version     VARCHAR,
    meta                JSON                   -- anything else worth keeping (env, rusage, intercepter)
);

-- One row per (session, sample round, step): sums over the step's processes on the node.
CREATE TABLE step_samples (
    session_id          VARCHAR NOT NULL,
    seq                 INTEGER NOT NULL,      -- sample round within the session, from 0
    ts                  TIMESTAMPTZ NOT NULL,
    job_id              BIGINT,
    step                VARCHAR NOT NULL,      -- 'batch' | 'extern' | 'interactive' | '0' | … | 'local'
    node                VARCHAR NOT NULL,
    nprocs              INTEGER NOT NULL,
    nthreads            INTEGER NOT NULL,
    cpu_user_s          DOUBLE NOT NULL,       -- cumulative, includes reaped children
    cpu_system_s        DOUBLE NOT NULL,
    rss_bytes           BIGINT NOT NULL,       -- sum over processes
    largest_rss_bytes   BIGINT NOT NULL,
    largest_pid         INTEGER,
    largest_comm        VARCHAR,
    read_bytes          BIGINT NOT NULL,       -- storage I/O, cumulative
    write_bytes         BIGINT NOT NULL,
    rchar               BIGINT NOT NULL,       -- all read()/write() traffic, cumulative
    wchar               BIGINT NOT NULL,
    minor_faults        BIGINT NOT NULL,       -- cumulative, includes reaped children
    major_faults        BIGINT NOT NULL,
    cpus_available      INTEGER,               -- cpuset, else Slurm's CPUs on node, else affinity
    cpus_source         VARCHAR
);

-- One row per (session, sample round, process).
CREATE TABLE process_samples (
    session_id          VARCHAR NOT NULL,
    seq                 INTEGER NOT NULL,
    ts                  TIMESTAMPTZ NOT NULL,
    step                VARCHAR NOT NULL,
    pid                 INTEGER NOT NULL,
    ppid                INTEGER NOT NULL,
    start_ticks         BIGINT NOT NULL,       -- /proc/<pid>/stat starttime: (pid, start) is unique
    comm                VARCHAR NOT NULL,
    cmdline             VARCHAR,               -- first sighting of a process only
    cpu_user_s          DOUBLE NOT NULL,       -- its own; reaped children count in step_samples
    cpu_system_s        DOUBLE NOT NULL,
    rss_bytes           BIGINT NOT NULL,
    read_bytes          BIGINT,                -- NULL: /proc/<pid>/io not readable
    write_bytes         BIGINT,
    rchar               BIGINT,
    wchar               BIGINT,
    minor_faults        BIGINT NOT NULL,
    major_faults        BIGINT NOT NULL,
    nthreads            INTEGER NOT NULL
);

-- One row per (session, sample round, GPU the job may use).
CREATE TABLE gpu_samples (
    session_id          VARCHAR NOT NULL,
    seq                 INTEGER NOT NULL,
    ts                  TIMESTAMPTZ NOT NULL,
    job_id              BIGINT,
    node                VARCHAR NOT NULL,
    gpu_index           INTEGER NOT NULL,      -- NVML index on the node
    gpu_uuid            VARCHAR NOT NULL,
    gpu_name            VARCHAR,
    util_pct            DOUBLE,
    mem_util_pct        DOUBLE,
    mem_used_bytes      BIGINT,
    mem_total_bytes     BIGINT,
    power_w             DOUBLE,                -- NVML reports milliwatts
    energy_j            DOUBLE,                -- NVML total energy counter (mJ), in joules
    temperature_c       DOUBLE,
    sm_clock_mhz        DOUBLE,
    throttle_reasons    UBIGINT,               -- NVML clocks-event bit mask
    job_pids            INTEGER[],             -- job processes on the GPU; NULL: NVML won't say
    other_pids          INTEGER                -- processes on it that are not the job's
);
