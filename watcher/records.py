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
