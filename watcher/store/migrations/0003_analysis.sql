-- Results of `turingwatch analyze` per period. Re-analysing a period replaces its rows (for all
-- users, or for the one user analysed), so what is stored is always the latest run's answer.
-- job_key identifies a job across sources: '<cluster>:<job id>' for Slurm jobs,
-- 'local:<session id>' for runs outside Slurm.

CREATE TABLE analysis_runs (
    period_id           VARCHAR NOT NULL,      -- '2026-W47', '2026-11-22', '2026-11'
    user_scope          VARCHAR NOT NULL,      -- '*' for every user, else the one user
    period_start        TIMESTAMPTZ NOT NULL,
    period_end          TIMESTAMPTZ NOT NULL,
    analysed_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    rules_source        VARCHAR NOT NULL,      -- 'packaged defaults' or the site rule file
    users               INTEGER NOT NULL,
    jobs                INTEGER NOT NULL,
    findings            INTEGER NOT NULL,
    PRIMARY KEY (period_id, user_scope)
);

CREATE TABLE analysis_findings (
    period_id           VARCHAR NOT NULL,
    rule                VARCHAR NOT NULL,
    severity            VARCHAR NOT NULL,
    user_name           VARCHAR,
    job_key             VARCHAR NOT NULL,
    cluster             VARCHAR,
    job_id              BIGINT,
    step                VARCHAR,               -- NULL: the finding is about the whole job
    node                VARCHAR,
    gpu                 VARCHAR,
    job_name            VARCHAR,
    account             VARCHAR,
    metrics             JSON NOT NULL          -- the numbers behind the finding
);

-- The numbers of every job of a period (what the reports' tables are made of).
CREATE TABLE analysis_jobs (
    period_id           VARCHAR NOT NULL,
    user_name           VARCHAR,
    job_key             VARCHAR NOT NULL,
    cluster             VARCHAR,
    job_id              BIGINT,
    metrics             JSON NOT NULL
);
