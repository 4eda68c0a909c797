-- Memory as the kernel charges it, beside the RSS sum (watcher/sampling/memory.py). rss_bytes
-- counts a page once per process that maps it, so forked workers that share their parent's data
-- multiply it; mem_bytes counts each page once:
--   'cgroup'  the step's memory cgroup (v2 memory.current, v1 memory.usage_in_bytes) less its
--             inactive file cache and the watcher's own anonymous memory,
--   'pss'     the sum of the processes' PSS (/proc/<pid>/smaps_rollup), read at a paced rate
--             and scaled by RSS in between,
--   'rss'     the RSS sum (one process, or nothing better readable).
-- NULL: a spool from before these columns (rss_bytes is then all there is).
-- IF NOT EXISTS: a store re-migrated from an older version keeps the columns it has.

-- the step's charged memory at this sample, and where it comes from
ALTER TABLE step_samples ADD COLUMN IF NOT EXISTS mem_bytes BIGINT;
ALTER TABLE step_samples ADD COLUMN IF NOT EXISTS mem_source VARCHAR;
-- the step cgroup's high-water mark since it was made (v2 memory.peak, v1
-- memory.max_usage_in_bytes), file cache included; NULL without a memory cgroup
ALTER TABLE step_samples ADD COLUMN IF NOT EXISTS mem_peak_bytes BIGINT;
-- the process's PSS as counted in its step's mem_bytes; NULL when the step used no PSS
ALTER TABLE process_samples ADD COLUMN IF NOT EXISTS pss_bytes BIGINT;
