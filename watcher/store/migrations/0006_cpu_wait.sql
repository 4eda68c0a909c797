-- How long the job's threads waited for a CPU: the run-queue delay of /proc/<tid>/schedstat
-- (second field), summed over a process's threads, cumulative like the CPU times. It is what
-- the node withheld from the job: other work on the same CPUs, the job's own threads pinned to
-- fewer CPUs than it holds, or a CFS quota (throttled time is run-queue time too). The analysis
-- tells a starved job from one that asked for too many cores by it (docs/analysis.md).
-- NULL: not measured (a spool from before this column, or a kernel without schedstat).
-- IF NOT EXISTS: a store re-migrated from an older version keeps the column it has.

-- cumulative; the step's processes, threads that exited and processes that left included
ALTER TABLE step_samples ADD COLUMN IF NOT EXISTS cpu_wait_s DOUBLE;
-- cumulative; the process's own threads (waits of reaped children are not inherited)
ALTER TABLE process_samples ADD COLUMN IF NOT EXISTS cpu_wait_s DOUBLE;
