"""One sample round: read the job's processes, sum them per step, keep counters monotonic.

CPU time, faults and I/O are cumulative counters. A process's counters include those of the
children it has reaped (``cutime``, ``cminflt``; Linux folds a reaped child's I/O into its
parent as well), so a step's total is the sum over its live processes, plus the last-seen
counters of processes that vanished without a sampled parent to absorb them. Processes whose
own work is not the job's (the watcher itself, ``slurmstepd``) are "children only": their
reaped-children counters count, nothing else of theirs does. That keeps the CPU of a command
that already exited, or of short-lived workers, in the totals.

How long the job's threads waited for a CPU (run-queue time, ``/proc/<pid>/task/*/schedstat``)
is cumulative too, but nothing inherits it: a reaped child's wait is not folded into its
parent, and a thread's leaves with it. So a process's wait is the sum over its live threads
plus the last reading of each thread that exited since, and a process that left always keeps
its last wait in its step, whoever reaped it. Work that began and ended between two rounds is
not seen: the step's wait is a lower bound, the CPU times are exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from watcher.records import GpuReading, ProcessSample, SampleRecord, StepSample
from watcher.sampling import procfs
from watcher.sampling.memory import MemoryCgroup, MemoryMeter

_TICK = 1.0 / procfs.CLOCK_TICKS
# Watchers name themselves so (runner.name_this_process): another watcher of the same job,
# an attach beside a run, is not the job's work.
WATCHER_COMM = "turingwatch"
# Cumulative counters per process, in this order.
_USER, _SYS, _MINFLT, _MAJFLT, _RCHAR, _WCHAR, _READ, _WRITE, _WAIT = range(9)
_NCOUNTERS = 9
_NO_IO = (0, 0, 0, 0)
_NS = 1e-9


@dataclass(slots=True)
class StepProcesses:
    """Which processes belong to a step this round, and the CPUs the step may use."""

    pids: list[int]
    children_only: Collection[int] = ()   # pids whose own work is not the job's
    cpus_available: int | None = None
    cpus_source: str | None = None
    stats: Mapping[int, bytes] | None = None   # raw /proc/<pid>/stat the source already read
    memory_cgroup: MemoryCgroup | None = None  # the step's memory cgroup, if it has one


class ProcessSource(Protocol):
    """Where the job's processes are: a process tree, Slurm job cgroups, stepd trees …"""

    def steps(self) -> Mapping[str, StepProcesses]: ...


class GpuSource(Protocol):
    status: str

    def sample(self, job_pids: Collection[int]) -> list[GpuReading]: ...


# What we remember of a process from the last round:
# (step, ppid, counters, comm, own CPU ticks, its /proc/<pid>/io reading, its threads' run-queue
# waits in ns by tid: None when never read). counters[_WAIT] is the process's whole wait.
_Seen = tuple[str, int, tuple[int, ...], str, int, "procfs.ProcIO | None", "dict[int, int] | None"]


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
    memory: MemoryMeter | None = None       # default: cgroup, else paced PSS (sampling/memory.py)

    def __post_init__(self) -> None:
        if self.files is None:
            self.files = procfs.ProcFiles(self.proc_root)
        if self.memory is None:
            self.memory = MemoryMeter(self.files)
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
        parse_wait = procfs.parse_schedstat_wait
        page, tick = procfs.PAGE_SIZE, _TICK
        skip_idle_io = self.skip_idle_io
        own_pid = self.own_pid
        memory = self.memory
        assert memory is not None
        memory.begin_round()

        for step, members in steps.items():
            # This loop is the hot path: plain locals and tuples, no per-process helper calls
            # beyond reading and splitting the two files.
            user = system = minflt = majflt = rchar = wchar = rbytes = wbytes = wait = 0
            nprocs = nthreads = rss = 0
            has_wait = False
            largest_rss, largest_pid, largest_comm = 0, None, None
            # For the step's charged memory: its processes (key, pid, RSS), where they are in
            # `processes`, and the watchers among them (their memory is not the job's).
            mem_members: list[tuple[tuple[int, int], int, int]] = []
            first_process = len(processes)
            watchers: list[int] = []
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
                    if pid == own_pid or comm == WATCHER_COMM:
                        watchers.append(pid)
                    if pid == own_pid:
                        base = self._own_baseline
                        cutime, cstime = cutime - base[0], cstime - base[1]
                        p_cminflt, p_cmajflt = p_cminflt - base[2], p_cmajflt - base[3]
                    counters = (cutime, cstime, p_cminflt, p_cmajflt, 0, 0, 0, 0, 0)
                    seen_now[key] = (step, ppid, counters, comm, -1, None, None)
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
                # Run-queue wait. A process that gained no CPU tick since the last round was not
                # runnable for long (the fair scheduler gives a queued thread its share within
                # milliseconds): its wait is taken as it was, missing at most the wait of threads
                # starved below one tick per interval.
                if skip_idle_io and last is not None and last[4] == cpu_ticks and last[6] is not None:
                    waits = last[6]
                elif p_threads == 1:
                    raw_wait = read(pid, "schedstat")  # the leader's: the only thread now
                    w = parse_wait(raw_wait) if raw_wait else None
                    waits = {pid: w} if w is not None else {}
                else:
                    waits = self._thread_waits(pid)
                last_waits = last[6] if last is not None else None
                thread_waits: dict[int, int] | None = waits
                if last_waits is not None:
                    # Threads that exited since the last round keep their last reading.
                    proc_wait = last[2][_WAIT] + sum(waits.values())
                    for tid, ns in last_waits.items():
                        if tid in waits:
                            proc_wait -= ns
                        elif tid != pid:
                            files.forget(pid, f"task/{tid}/schedstat")
                elif waits:
                    proc_wait = sum(waits.values())
                else:
                    proc_wait, thread_waits = 0, None  # not measured (yet)
                if thread_waits is not None:
                    has_wait = True
                    wait += proc_wait
                total_user, total_system = utime + cutime, stime + cstime
                total_minflt, total_majflt = p_minflt + p_cminflt, p_majflt + p_cmajflt
                seen_now[key] = (
                    step, ppid,
                    (total_user, total_system, total_minflt, total_majflt, *(io or _NO_IO), proc_wait),
                    comm, cpu_ticks, io, thread_waits,
                )  # fmt: skip
                user += total_user
                system += total_system
                minflt += total_minflt
                majflt += total_majflt
                rss_bytes = rss_pages * page
                nprocs += 1
                nthreads += p_threads
                rss += rss_bytes
                mem_members.append((key, pid, rss_bytes))
                job_pids.append(pid)
                if rss_bytes > largest_rss or largest_pid is None:
                    largest_rss, largest_pid, largest_comm = rss_bytes, pid, comm
                processes.append(
                    ProcessSample(
                        step, pid, ppid, start_ticks, comm, utime * tick, stime * tick, rss_bytes,
                        io_read, io_write, io_rchar, io_wchar, p_minflt, p_majflt, p_threads,
                        proc_wait * _NS if thread_waits is not None else None,
                    )
                )  # fmt: skip
                # A new process, or one that exec'd another program since the last round.
                if self.read_cmdlines and (last is None or last[3] != comm):
                    cmdline = procfs.read_cmdline(pid, proc_root)
                    if cmdline:
                        cmdlines.append((pid, start_ticks, cmdline))

            if not present:
                continue  # the step has ended on this node
            totals = [user, system, minflt, majflt, rchar, wchar, rbytes, wbytes, wait]
            departed = self._departed.get(step)
            if departed:
                _add(totals, departed)
                has_wait = has_wait or departed[_WAIT] > 0
            totals = self._monotonic(step, totals)
            charged = memory.step(step, mem_members, rss, members.memory_cgroup, watchers)
            if charged.pss is not None:
                pss = charged.pss
                for i in range(first_process, len(processes)):
                    processes[i] = processes[i]._replace(pss_bytes=pss.get(processes[i].pid))
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
                    totals[_WAIT] * _NS if has_wait else None,
                    charged.mem_bytes,
                    charged.source,
                    charged.peak_bytes,
                )
            )

        memory.end_round()
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
            departed = self._departed.setdefault(step, [0] * _NCOUNTERS)
            if ancestor in live:
                # A sampled ancestor has folded its times into its cutime, not its wait.
                departed[_WAIT] += counters[_WAIT]
                continue
            _add(departed, counters)
        self._seen = seen_now

    def _monotonic(self, step: str, totals: list[int]) -> list[int]:
        # A parent that ignores SIGCHLD loses its children's times; never let a counter go back.
        last = self._last_totals.get(step)
        if last is not None:
            totals = [max(a, b) for a, b in zip(totals, last, strict=True)]
        self._last_totals[step] = totals
        return totals

    def _thread_waits(self, pid: int) -> dict[int, int]:
        """Run-queue wait (ns) of each live thread of a multi-threaded process, by tid."""
        files = self.files
        assert files is not None
        parse_wait = procfs.parse_schedstat_wait
        waits = {}
        for name in files.list_dir(pid, "task"):
            raw = files.read(pid, f"task/{name}/schedstat")
            w = parse_wait(raw) if raw else None
            if w is not None:
                waits[int(name)] = w
        return waits


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
