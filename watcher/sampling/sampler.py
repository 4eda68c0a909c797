"""One sample round: read the job's processes, sum them per step, keep counters monotonic.

CPU time, faults and I/O are cumulative counters. A process's counters include those of the
children it has reaped (``cutime``, ``cminflt``; Linux folds a reaped child's I/O into its
parent as well), so a step's total is the sum over its live processes, plus the last-seen
counters of processes that vanished without a sampled parent to absorb them. Processes whose
own work is not the job's (the watcher itself, ``slurmstepd``) are "children only": their
reaped-children counters count, nothing else of theirs does. That keeps the CPU of a command
that already exited, or of short-lived workers, in the totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from watcher.sampling import procfs
from watcher.sampling.records import GpuReading, ProcessSample, StepSample

_TICK = 1.0 / procfs.CLOCK_TICKS
# Cumulative counters per process, in this order.
_USER, _SYS, _MINFLT, _MAJFLT, _RCHAR, _WCHAR, _READ, _WRITE = range(8)
_NCOUNTERS = 8


@dataclass(slots=True)
class StepProcesses:
    """Which processes belong to a step this round, and the CPUs the step may use."""

    pids: list[int]
    children_only: Collection[int] = ()   # pids whose own work is not the job's
    cpus_available: int | None = None
    cpus_source: str | None = None


class ProcessSource(Protocol):
    """Where the job's processes are: a process tree, Slurm job cgroups, stepd trees …"""

    def steps(self) -> Mapping[str, StepProcesses]: ...


class GpuSource(Protocol):
    status: str

    def sample(self, job_pids: Collection[int]) -> list[GpuReading]: ...


@dataclass(slots=True)
class SampleRecord:
    seq: int
    ts: float                                   # wall clock, seconds since the epoch
    steps: list[StepSample]
    processes: list[ProcessSample]
    gpus: list[GpuReading]
    cmdlines: list[tuple[int, int, str]]        # (pid, start_ticks, cmdline) of new processes


@dataclass(slots=True)
class _Seen:
    step: str
    ppid: int
    counters: list[int]


@dataclass
class Sampler:
    source: ProcessSource
    gpu: GpuSource | None = None
    proc_root: str = "/proc"
    read_cmdlines: bool = True
    clock: Callable[[], float] = time.time
    seq: int = 0
    _seen: dict[tuple[int, int], _Seen] = field(default_factory=dict)
    _departed: dict[str, list[int]] = field(default_factory=dict)
    _last_totals: dict[str, list[int]] = field(default_factory=dict)

    def sample(self) -> SampleRecord:
        ts = self.clock()
        steps = self.source.steps()
        processes: list[ProcessSample] = []
        step_samples: list[StepSample] = []
        cmdlines: list[tuple[int, int, str]] = []
        seen_now: dict[tuple[int, int], _Seen] = {}
        live_pids: set[int] = set()
        job_pids: list[int] = []
        proc_root = self.proc_root

        for step, members in steps.items():
            totals = [0] * _NCOUNTERS
            nprocs = nthreads = rss = 0
            largest_rss, largest_pid, largest_comm = 0, None, None
            children_only = members.children_only
            present = False
            for pid in members.pids:
                st = procfs.read_stat(pid, proc_root)
                if st is None:
                    continue  # exited between listing and reading
                key = (pid, st.start_ticks)
                live_pids.add(pid)
                present = True
                if pid in children_only:
                    counters = [st.cutime, st.cstime, st.cminflt, st.cmajflt, 0, 0, 0, 0]
                    seen_now[key] = _Seen(step, st.ppid, counters)
                    _add(totals, counters)
                    continue
                io = procfs.read_io(pid, proc_root)
                counters = [
                    st.utime + st.cutime,
                    st.stime + st.cstime,
                    st.minflt + st.cminflt,
                    st.majflt + st.cmajflt,
                    io.rchar if io else 0,
                    io.wchar if io else 0,
                    io.read_bytes if io else 0,
                    io.write_bytes if io else 0,
                ]
                seen_now[key] = _Seen(step, st.ppid, counters)
                _add(totals, counters)
                rss_bytes = st.rss_pages * procfs.PAGE_SIZE
                nprocs += 1
                nthreads += st.nthreads
                rss += rss_bytes
                job_pids.append(pid)
                if rss_bytes > largest_rss or largest_pid is None:
                    largest_rss, largest_pid, largest_comm = rss_bytes, pid, st.comm
                processes.append(
                    ProcessSample(
                        step,
                        pid,
                        st.ppid,
                        st.start_ticks,
                        st.comm,
                        st.utime * _TICK,
                        st.stime * _TICK,
                        rss_bytes,
                        io.read_bytes if io else None,
                        io.write_bytes if io else None,
                        io.rchar if io else None,
                        io.wchar if io else None,
                        st.minflt,
                        st.majflt,
                        st.nthreads,
                    )
                )
                if key not in self._seen and self.read_cmdlines:
                    cmdline = procfs.read_cmdline(pid, proc_root)
                    if cmdline:
                        cmdlines.append((pid, st.start_ticks, cmdline))

            if not present:
                continue  # the step has ended on this node
            departed = self._departed.get(step)
            if departed:
                _add(totals, departed)
            totals = self._monotonic(step, totals)
            step_samples.append(
                StepSample(
                    step,
                    nprocs,
                    nthreads,
                    totals[_USER] * _TICK,
                    totals[_SYS] * _TICK,
                    rss,
                    largest_rss,
                    largest_pid,
                    largest_comm,
                    totals[_READ],
                    totals[_WRITE],
                    totals[_RCHAR],
                    totals[_WCHAR],
                    totals[_MINFLT],
                    totals[_MAJFLT],
                    members.cpus_available,
                    members.cpus_source,
                )
            )

        self._account_vanished(seen_now, live_pids)
        gpus = _safe_gpu_sample(self.gpu, job_pids)
        record = SampleRecord(self.seq, ts, step_samples, processes, gpus, cmdlines)
        self.seq += 1
        return record

    def _account_vanished(self, seen_now: dict[tuple[int, int], _Seen], live: set[int]) -> None:
        """Keep the counters of processes that left without a sampled parent to reap them."""
        for key, last in self._seen.items():
            if key in seen_now or last.ppid in live:
                continue  # still here, or its parent (sampled) has folded it into cutime
            departed = self._departed.setdefault(last.step, [0] * _NCOUNTERS)
            _add(departed, last.counters)
        self._seen = seen_now

    def _monotonic(self, step: str, totals: list[int]) -> list[int]:
        # A parent that ignores SIGCHLD loses its children's times; never let a counter go back.
        last = self._last_totals.get(step)
        if last is not None:
            totals = [max(a, b) for a, b in zip(totals, last, strict=True)]
        self._last_totals[step] = totals
        return totals


def _add(into: list[int], values: list[int]) -> None:
    for i, v in enumerate(values):
        into[i] += v


def _safe_gpu_sample(gpu: GpuSource | None, job_pids: list[int]) -> list[GpuReading]:
    if gpu is None:
        return []
    try:
        return gpu.sample(job_pids)
    except Exception:  # the GPU sampler promises not to raise; the job matters more
        return []
