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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from watcher.records import GpuReading, ProcessSample, SampleRecord, StepSample
from watcher.sampling import procfs

_TICK = 1.0 / procfs.CLOCK_TICKS
# Watchers name themselves so (runner.name_this_process): another watcher of the same job,
# an attach beside a run, is not the job's work.
WATCHER_COMM = "turingwatch"
# Cumulative counters per process, in this order.
_USER, _SYS, _MINFLT, _MAJFLT, _RCHAR, _WCHAR, _READ, _WRITE = range(8)
_NCOUNTERS = 8
_NO_IO = (0, 0, 0, 0)


@dataclass(slots=True)
class StepProcesses:
    """Which processes belong to a step this round, and the CPUs the step may use."""

    pids: list[int]
    children_only: Collection[int] = ()   # pids whose own work is not the job's
    cpus_available: int | None = None
    cpus_source: str | None = None
    stats: Mapping[int, bytes] | None = None   # raw /proc/<pid>/stat the source already read


class ProcessSource(Protocol):
    """Where the job's processes are: a process tree, Slurm job cgroups, stepd trees …"""

    def steps(self) -> Mapping[str, StepProcesses]: ...


class GpuSource(Protocol):
    status: str

    def sample(self, job_pids: Collection[int]) -> list[GpuReading]: ...


# What we remember of a process from the last round:
# (step, ppid, counters, comm, own CPU ticks, its /proc/<pid>/io reading).
_Seen = tuple[str, int, tuple[int, ...], str, int, "procfs.ProcIO | None"]


@dataclass
class Sampler:
    source: ProcessSource
    gpu: GpuSource | None = None
    proc_root: str = "/proc"
    read_cmdlines: bool = True
    skip_idle_io: bool = True
    # The watcher's own pid: its reaped-children counters count only from now on, since a
    # process keeps them across exec (`exec turingwatch run …` from a shell that ran pip).
    own_pid: int | None = None
    _own_baseline: tuple[int, int, int, int] = (0, 0, 0, 0)
    clock: Callable[[], float] = time.time
    seq: int = 0
    _seen: dict[tuple[int, int], _Seen] = field(default_factory=dict)
    _departed: dict[str, list[int]] = field(default_factory=dict)
    _last_totals: dict[str, list[int]] = field(default_factory=dict)
    files: procfs.ProcFiles | None = None   # default: held descriptors under proc_root

    def __post_init__(self) -> None:
        if self.files is None:
            self.files = procfs.ProcFiles(self.proc_root)
        if self.own_pid is not None:
            st = procfs.read_stat(self.own_pid, self.proc_root)
            if st is not None:
                self._own_baseline = (st.cutime, st.cstime, st.cminflt, st.cmajflt)

    def sample(self) -> SampleRecord:
        ts = self.clock()
        steps = self.source.steps()
        processes: list[ProcessSample] = []
        step_samples: list[StepSample] = []
        cmdlines: list[tuple[int, int, str]] = []
        seen_now: dict[tuple[int, int], _Seen] = {}
        previous = self._seen
        live_pids: set[int] = set()
        job_pids: list[int] = []
        proc_root = self.proc_root
        files = self.files
        assert files is not None
        read, stat_fields, parse_io = files.read, procfs.stat_fields, procfs.parse_io
        page, tick = procfs.PAGE_SIZE, _TICK
        skip_idle_io = self.skip_idle_io
        own_pid = self.own_pid

        for step, members in steps.items():
            # This loop is the hot path: plain locals and tuples, no per-process helper calls
            # beyond reading and splitting the two files.
            user = system = minflt = majflt = rchar = wchar = rbytes = wbytes = 0
            nprocs = nthreads = rss = 0
            largest_rss, largest_pid, largest_comm = 0, None, None
            children_only = members.children_only
            present = False
            cached = members.stats or {}
            for pid in members.pids:
                raw = cached.get(pid) or read(pid, "stat")
                fields = stat_fields(raw) if raw else None
                if fields is None:
                    continue  # exited between listing and reading
                (comm, ppid, p_minflt, p_cminflt, p_majflt, p_cmajflt, utime, stime, cutime,
                 cstime, p_threads, start_ticks, rss_pages) = fields  # fmt: skip
                key = (pid, start_ticks)
                live_pids.add(pid)
                present = True
                if pid in children_only or comm == WATCHER_COMM:
                    if pid == own_pid:
                        base = self._own_baseline
                        cutime, cstime = cutime - base[0], cstime - base[1]
                        p_cminflt, p_cmajflt = p_cminflt - base[2], p_cmajflt - base[3]
                    counters = (cutime, cstime, p_cminflt, p_cmajflt, 0, 0, 0, 0)
                    seen_now[key] = (step, ppid, counters, comm, -1, None)
                    user += cutime
                    system += cstime
                    minflt += p_cminflt
                    majflt += p_cmajflt
                    continue
                last = previous.get(key)
                cpu_ticks = utime + stime
                if skip_idle_io and last is not None and last[4] == cpu_ticks:
                    # Idle since the last round: no syscall ran, so its I/O counters (which
                    # only syscalls and faults move, and those cost CPU time) are as they were.
                    io = last[5]
                else:
                    raw_io = read(pid, "io")
                    io = parse_io(raw_io) if raw_io else None  # None: another user's process
                if io is not None:
                    io_rchar, io_wchar, io_read, io_write = io
                    rchar += io_rchar
                    wchar += io_wchar
                    rbytes += io_read
                    wbytes += io_write
                else:
                    io_rchar = io_wchar = io_read = io_write = None
                total_user, total_system = utime + cutime, stime + cstime
                total_minflt, total_majflt = p_minflt + p_cminflt, p_majflt + p_cmajflt
                seen_now[key] = (
                    step, ppid, (total_user, total_system, total_minflt, total_majflt, *(io or _NO_IO)),
                    comm, cpu_ticks, io,
                )  # fmt: skip
                user += total_user
                system += total_system
                minflt += total_minflt
                majflt += total_majflt
                rss_bytes = rss_pages * page
                nprocs += 1
                nthreads += p_threads
                rss += rss_bytes
                job_pids.append(pid)
                if rss_bytes > largest_rss or largest_pid is None:
                    largest_rss, largest_pid, largest_comm = rss_bytes, pid, comm
                processes.append(
                    ProcessSample(
                        step, pid, ppid, start_ticks, comm, utime * tick, stime * tick, rss_bytes,
                        io_read, io_write, io_rchar, io_wchar, p_minflt, p_majflt, p_threads,
                    )
                )  # fmt: skip
                # A new process, or one that exec'd another program since the last round.
                if self.read_cmdlines and (last is None or last[3] != comm):
                    cmdline = procfs.read_cmdline(pid, proc_root)
                    if cmdline:
                        cmdlines.append((pid, start_ticks, cmdline))

            if not present:
                continue  # the step has ended on this node
            totals = [user, system, minflt, majflt, rchar, wchar, rbytes, wbytes]
            departed = self._departed.get(step)
            if departed:
                _add(totals, departed)
            totals = self._monotonic(step, totals)
            step_samples.append(
                StepSample(
                    step,
                    nprocs,
                    nthreads,
                    totals[_USER] * tick,
                    totals[_SYS] * tick,
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
        files.keep(live_pids)
        gpus = _safe_gpu_sample(self.gpu, job_pids)
        record = SampleRecord(self.seq, ts, step_samples, processes, gpus, cmdlines)
        self.seq += 1
        return record

    def _account_vanished(self, seen_now: dict[tuple[int, int], _Seen], live: set[int]) -> None:
        """Keep the counters of processes that left without a sampled ancestor to reap them.

        A process that vanished was reaped by its parent, whose cutime now holds it. If the
        parent vanished too (a pool's parent that waited for its workers, then exited), its
        own parent holds both, and so on up: the first live ancestor decides. Counting the
        workers as departed as well would count them twice.
        """
        gone = {key[0]: last[1] for key, last in self._seen.items() if key not in seen_now}
        for key, (step, ppid, counters, *_rest) in self._seen.items():
            if key in seen_now:
                continue
            ancestor, hops = ppid, 0
            while ancestor in gone and ancestor not in live and hops < len(gone):
                ancestor, hops = gone[ancestor], hops + 1
            if ancestor in live:
                continue  # a sampled ancestor has folded it into its cutime
            departed = self._departed.setdefault(step, [0] * _NCOUNTERS)
            _add(departed, counters)
        self._seen = seen_now

    def _monotonic(self, step: str, totals: list[int]) -> list[int]:
        # A parent that ignores SIGCHLD loses its children's times; never let a counter go back.
        last = self._last_totals.get(step)
        if last is not None:
            totals = [max(a, b) for a, b in zip(totals, last, strict=True)]
        self._last_totals[step] = totals
        return totals


def _add(into: list[int], values: Sequence[int]) -> None:
    for i, v in enumerate(values):
        into[i] += v


def _safe_gpu_sample(gpu: GpuSource | None, job_pids: list[int]) -> list[GpuReading]:
    if gpu is None:
        return []
    try:
        return gpu.sample(job_pids)
    except Exception:  # the GPU sampler promises not to raise; the job matters more
        return []
