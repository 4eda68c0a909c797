"""What one sample round reads, before it is spooled.

These mirror the store's ``process_samples``, ``step_samples`` and ``gpu_samples`` columns
(watcher/store/migrations/0001_samples.sql); the spool writes them as JSON arrays in
field order, so the order of fields here is part of the spool format. They are named
tuples: cheaper to build than classes, and already the arrays the spool line holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class ProcessSample(NamedTuple):
    step: str
    pid: int
    ppid: int
    start_ticks: int
    comm: str
    cpu_user_s: float       # the process's own CPU; reaped children count in its step only
    cpu_system_s: float
    rss_bytes: int
    read_bytes: int | None  # None when /proc/<pid>/io is not readable
    write_bytes: int | None
    rchar: int | None
    wchar: int | None
    minor_faults: int       # own
    major_faults: int
    nthreads: int
    # Run-queue wait of its threads (schedstat), cumulative, threads that exited included;
    # None where not readable. Reaped children's waits are not inherited (unlike CPU times).
    cpu_wait_s: float | None = None
    # Its proportional set size (smaps_rollup Pss: shared pages split among their sharers),
    # read this round or scaled from its last reading by its RSS; None: not used (its step's
    # memory came from a cgroup or from RSS).
    pss_bytes: int | None = None


class StepSample(NamedTuple):
    step: str
    nprocs: int
    nthreads: int
    cpu_user_s: float
    cpu_system_s: float
    rss_bytes: int
    largest_rss_bytes: int
    largest_pid: int | None
    largest_comm: str | None
    read_bytes: int
    write_bytes: int
    rchar: int
    wchar: int
    minor_faults: int
    major_faults: int
    cpus_available: int | None
    cpus_source: str | None
    # How long the step's threads waited for a CPU, cumulative like the CPU times; processes
    # that left keep their last reading. None: not measured.
    cpu_wait_s: float | None = None
    # The memory the step holds as the kernel charges it (watcher/sampling/memory.py), and
    # where it comes from: "cgroup" (the step's memory cgroup, less inactive file cache),
    # "pss" (sum of its processes' PSS), "rss" (sum of RSS: one process, or nothing better).
    # rss_bytes above stays the RSS sum. None: a spool from before these fields.
    mem_bytes: int | None = None
    mem_source: str | None = None
    # The cgroup's own high-water mark (memory.peak, v1 max_usage_in_bytes), file cache
    # included, since the cgroup was made; None without a memory cgroup.
    mem_peak_bytes: int | None = None


class GpuReading(NamedTuple):
    """One GPU the job may use, read once. Every metric is None when NVML would not say."""

    gpu_index: int
    gpu_uuid: str
    gpu_name: str | None
    util_pct: float | None
    mem_util_pct: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    power_w: float | None          # NVML gives milliwatts; converted
    energy_j: float | None         # NVML total energy counter (millijoules); converted
    temperature_c: float | None
    sm_clock_mhz: float | None
    throttle_reasons: int | None   # NVML clocks-event reasons bit mask
    job_pids: list[int] | None     # job processes running on this GPU; None: NVML won't say
    other_pids: int | None         # processes on it that are not the job's


@dataclass(slots=True)
class SampleRecord:
    """One sample round: what the spool writes as one ``sample`` line."""

    seq: int
    ts: float                                   # wall clock, seconds since the epoch
    steps: list[StepSample]
    processes: list[ProcessSample]
    gpus: list[GpuReading]
    cmdlines: list[tuple[int, int, str]]        # (pid, start_ticks, cmdline) of new processes


def field_names(cls: type[tuple]) -> list[str]:
    return list(cls._fields)  # type: ignore[attr-defined]
