"""The memory a step holds, as the kernel charges it, not the sum of its processes' RSS.

RSS counts every page a process maps, so pages that several processes share (a parent's data
that forked workers inherit copy-on-write, shared libraries, shared memory) count once per
process: a parent holding 300 MiB with two forked workers sums to 900 MiB. Per step, in order:

``cgroup``
    The step's memory cgroup (Slurm's task/cgroup, cgroup v2 or v1) counts each page once,
    where the kernel charged it: v2 ``memory.current``, v1 ``memory.usage_in_bytes``, less the
    inactive file cache (``inactive_file`` / ``total_inactive_file`` of ``memory.stat``), which
    the kernel drops first and which would otherwise make a job that streams a large input
    file look as big as its limit (the same "working set" cAdvisor reports for a container).
    The watcher's own anonymous memory, charged there when it runs in the step, is left out.
    ``memory.peak`` (v2, Linux 5.19+) / ``memory.max_usage_in_bytes`` (v1) is kept beside it:
    the cgroup's high-water mark since it was made, cache included, between samples too.
``pss``
    Without a cgroup (``proctrack/linuxproc``, a run outside Slurm): the sum of the processes'
    proportional set size (``Pss:`` of ``/proc/<pid>/smaps_rollup``), where a page shared by N
    processes counts 1/N in each.
``rss``
    A step of one process (nothing of the job shares its pages, and PSS would cost a page-table
    walk for a few shared-library pages), or processes whose PSS cannot be read.

What PSS costs, and why it is rationed (bench/bench_sampler.py, README "Benchmarks"): reading
``smaps_rollup`` walks the process's page tables, about 12 µs per MiB resident with 4 KiB pages
on the development VM (2.6 ms for 200 MiB, 24 ms for 2 GiB; far less with transparent huge
pages) and 150–200 µs for a small process, against 2–4 µs for its ``stat``: reading it for
every process every round would cost more than all the rest of the sampler. So:

* a step's PSS is read in full when it is first seen with several processes, when its set of
  processes changed by more than :data:`REFRESH_CHANGE` of its RSS (a fork or an exit changes
  who shares what), when its RSS sum moved by more than that since the last full reading, and
  at least every :data:`MAX_AGE_S` (copy-on-write breaking moves PSS without moving RSS);
* in between, each process keeps the PSS/RSS ratio of its last reading, applied to its RSS now
  (a process never read yet counts its RSS);
* all reading is paced by a budget of :data:`SHARE` of the time between rounds (a token bucket
  of at most :data:`BURST_S`, full at the start): a round that runs out leaves the rest of a
  full reading to the next rounds (processes never read first, then the oldest readings, the
  largest first among equals), and a single costly reading is paid back by the rounds after.
  Since Linux 5.10 ``smaps_rollup`` lets go of the process's ``mmap_lock`` when a writer
  waits, so the job's own ``mmap``/``munmap`` are not held up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from watcher.sampling import procfs

# Pacing (see the module docstring and the README's benchmark paragraph for the figures).
SHARE = 0.0025          # of the wall time between two rounds, spent reading smaps_rollup
BURST_S = 0.25          # the most the budget holds, and what it holds at the start
REFRESH_CHANGE = 0.05   # a step's PSS is read afresh when its processes or RSS move by this
MAX_AGE_S = 60.0        # … and at least this often while it runs

SOURCE_CGROUP, SOURCE_PSS, SOURCE_RSS = "cgroup", "pss", "rss"

_KIB = 1024
_READ_SIZE = 4096       # memory.stat and smaps_rollup are about 1 KiB


def parse_pss(raw: bytes) -> int | None:
    """Bytes of the ``Pss:`` line of a ``smaps_rollup`` (in kB there); None if it has none."""
    at = raw.find(b"\nPss:")
    if at < 0:
        return None
    fields = raw[at + 5 : at + 48].split(None, 2)
    if len(fields) < 2 or fields[1] != b"kB" or not fields[0].isdigit():
        return None
    return int(fields[0]) * _KIB


def parse_stat_value(raw: bytes, key: bytes) -> int | None:
    """One counter of a cgroup ``memory.stat`` (``key value`` lines), None when absent."""
    for line in raw.splitlines():
        name, _, value = line.partition(b" ")
        if name == key:
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


class MemoryCgroup(NamedTuple):
    """Where one step's memory cgroup is, and which files of it say what."""

    directory: str
    version: str   # "v2" | "v1"

    @property
    def files(self) -> tuple[str, str, bytes]:
        """(usage file, high-water mark file, the inactive-file key of memory.stat)."""
        if self.version == "v2":
            return "memory.current", "memory.peak", b"inactive_file"
        return "memory.usage_in_bytes", "memory.max_usage_in_bytes", b"total_inactive_file"


class CgroupMemory(NamedTuple):
    charged_bytes: int          # usage less inactive file cache
    peak_bytes: int | None      # the cgroup's high-water mark, cache included


def _read_small(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, _READ_SIZE)
    except OSError:
        return None
    finally:
        os.close(fd)


def _int(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    return int(text) if text.isdigit() else None


def read_cgroup_memory(cgroup: MemoryCgroup) -> CgroupMemory | None:
    """The step's charge now (less inactive file cache) and the cgroup's high-water mark; None
    when the cgroup is gone or has no memory accounting."""
    usage_name, peak_name, inactive_key = cgroup.files
    usage = _int(_read_small(f"{cgroup.directory}/{usage_name}"))
    if usage is None:
        return None
    stat = _read_small(f"{cgroup.directory}/memory.stat")
    inactive = parse_stat_value(stat, inactive_key) if stat else None
    charged = max(usage - (inactive or 0), 0)
    return CgroupMemory(charged, _int(_read_small(f"{cgroup.directory}/{peak_name}")))


def anon_bytes(files: procfs.ProcFiles, pid: int) -> int:
    """A process's anonymous resident memory (``statm`` resident less shared), 0 if gone."""
    raw = files.read(pid, "statm")
    fields = raw.split() if raw else []
    if len(fields) < 3:
        return 0
    return max(int(fields[1]) - int(fields[2]), 0) * procfs.PAGE_SIZE


# One process of a step this round: (pid, start_ticks) key, pid, RSS in bytes.
Member = tuple[tuple[int, int], int, int]


@dataclass(slots=True)
class _Reading:
    pss: int             # at the last reading
    rss: int             # the RSS it was read against
    last_rss: int        # the RSS of the latest round
    at: float            # when it was read


@dataclass(slots=True)
class _StepState:
    rss_sum: int                     # at the last full reading
    rss_of: dict[tuple[int, int], int]   # the processes then, and their RSS
    at: float                        # when it began
    due: set[tuple[int, int]]        # processes of that full reading not read yet


@dataclass
class StepMemory:
    """What :meth:`MemoryMeter.step` found for one step this round."""

    mem_bytes: int
    source: str
    peak_bytes: int | None = None
    pss: dict[int, int] | None = None   # pid -> the PSS counted for it (source "pss")


@dataclass
class MemoryMeter:
    """Per step and round: the charged memory and where it comes from (module docstring)."""

    files: procfs.ProcFiles
    share: float = SHARE
    burst_s: float = BURST_S
    refresh_change: float = REFRESH_CHANGE
    max_age_s: float = MAX_AGE_S
    clock: Callable[[], float] = time.monotonic
    timer: Callable[[], float] = time.perf_counter
    read_pss: Callable[[int], int | None] | None = None   # default: smaps_rollup via files
    budget_s: float = field(init=False)
    reads: int = 0                   # smaps_rollup readings so far (the bench reports them)
    read_s: float = 0.0              # … and the time they took
    _last_round: float | None = None
    _procs: dict[tuple[int, int], _Reading] = field(default_factory=dict)
    _steps: dict[str, _StepState] = field(default_factory=dict)
    _seen: set[tuple[int, int]] = field(default_factory=set)
    _unreadable: set[tuple[int, int]] = field(default_factory=set)   # another user's, say
    _steps_seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.budget_s = self.burst_s
        if self.read_pss is None:
            self.read_pss = self._smaps_rollup

    def _smaps_rollup(self, pid: int) -> int | None:
        raw = self.files.read(pid, "smaps_rollup")
        return parse_pss(raw) if raw else None

    # -- a round ---------------------------------------------------------------------------
    def begin_round(self) -> None:
        """Refill the budget by the time since the last round."""
        now = self.clock()
        if self._last_round is not None:
            elapsed = max(now - self._last_round, 0.0)
            self.budget_s = min(self.budget_s + self.share * elapsed, self.burst_s)
        self._last_round = now
        self._seen = set()
        self._steps_seen = set()

    def end_round(self) -> None:
        """Forget processes and steps not seen this round."""
        for key in [k for k in self._procs if k not in self._seen]:
            del self._procs[key]
        self._unreadable &= self._seen
        for step in [s for s in self._steps if s not in self._steps_seen]:
            del self._steps[step]

    def step(
        self,
        step: str,
        members: list[Member],
        rss_sum: int,
        cgroup: MemoryCgroup | None = None,
        watchers: Sequence[int] = (),
    ) -> StepMemory:
        """The step's memory this round. ``watchers``: watcher pids in the step (their own
        memory is not the job's, though a cgroup charges it)."""
        self._steps_seen.add(step)
        if cgroup is not None:
            reading = read_cgroup_memory(cgroup)
            if reading is not None:
                own = sum(anon_bytes(self.files, pid) for pid in watchers)
                return StepMemory(max(reading.charged_bytes - own, 0), SOURCE_CGROUP, reading.peak_bytes)
        for key, _pid, _rss in members:
            self._seen.add(key)
        if len(members) < 2:
            return StepMemory(rss_sum, SOURCE_RSS)
        return self._pss(step, members, rss_sum)

    def _pss(self, step: str, members: list[Member], rss_sum: int) -> StepMemory:
        procs, unreadable = self._procs, self._unreadable
        state = self._steps.get(step)
        now = self.clock()
        if state is None or self._stale(state, members, rss_sum, now):
            rss_of = {key: rss for key, _pid, rss in members}
            state = _StepState(rss_sum, rss_of, now, set(rss_of))
            self._steps[step] = state
        # Still due from the current full reading, and newcomers never read.
        due = [m for m in members
               if (m[0] in state.due or m[0] not in procs) and m[0] not in unreadable]
        # Never read first, then the oldest readings (a budget that allows less than a full
        # reading per refresh still gets round to every process), the largest first among equals.
        due.sort(key=lambda m: (m[0] in procs, procs[m[0]].at if m[0] in procs else 0.0, -m[2]))
        read, timer = self.read_pss, self.timer
        assert read is not None
        for key, pid, rss in due:
            if self.budget_s <= 0:
                break
            started = timer()
            pss = read(pid)
            spent = timer() - started
            self.budget_s -= spent
            self.reads += 1
            self.read_s += spent
            state.due.discard(key)
            if pss is not None:
                procs[key] = _Reading(pss, rss, rss, now)
            else:
                unreadable.add(key)
        total, counted, unread = 0, {}, 0
        for key, pid, rss in members:
            reading = procs.get(key)
            if reading is None:
                value = rss
                unread += 1
            else:
                value = round(rss * reading.pss / reading.rss) if reading.rss > 0 else reading.pss
                reading.last_rss = rss
            counted[pid] = value
            total += value
        # A step none of whose processes could be read (another user's, all) has only RSS.
        if unread == len(members):
            return StepMemory(rss_sum, SOURCE_RSS)
        return StepMemory(total, SOURCE_PSS, None, counted)

    def _stale(
        self,
        state: _StepState,
        members: list[Member],
        rss_sum: int,
        now: float,
    ) -> bool:
        """Whether the step's sharing may have changed enough to read all of it again: the
        processes that came or went since the last full reading, with their RSS, or the RSS
        sum, moved by more than ``refresh_change``, or that reading is too old."""
        if now - state.at >= self.max_age_s:
            return True
        limit = self.refresh_change * max(rss_sum, state.rss_sum, 1)
        if abs(rss_sum - state.rss_sum) > limit:
            return True
        before = state.rss_of
        came, stayed = 0, 0
        for key, _pid, rss in members:
            if key in before:
                stayed += 1
            else:
                came += rss
        went = 0
        if stayed < len(before):   # some have left: what they held is shared no more
            now_keys = {key for key, _pid, _rss in members}
            went = sum(rss for key, rss in before.items() if key not in now_keys)
        return came + went > limit
