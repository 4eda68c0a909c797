"""Reading processes from /proc, fast and race-tolerant.

This is the sampler's hot path: every round reads ``stat`` (and ``io`` for the job's
processes) of each process, so it reads bytes with bare system calls (``pread`` on held
descriptors: :class:`ProcFiles`) and parses by field position into plain tuples. A process
that exits between listing and reading is simply not returned.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Container
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_READ_SIZE = 4096   # stat and io are far shorter
_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def read_bytes(path: str) -> bytes | None:
    """A small /proc file (stat, io: one read), or None when it cannot be read (gone, denied)."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, _READ_SIZE)
    except OSError:  # ESRCH: the process exited while we read
        return None
    finally:
        os.close(fd)


def read_all(path: str) -> bytes | None:
    """A /proc file of any length (cmdline, environ)."""
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read()
    except OSError:
        return None


class ProcStat(NamedTuple):
    """The fields of /proc/<pid>/stat the sampler uses (times in clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    minflt: int
    cminflt: int
    majflt: int
    cmajflt: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    nthreads: int
    start_ticks: int
    rss_pages: int


# What stat_fields returns: ProcStat without pid and state, as a plain tuple.
StatFields = tuple[str, int, int, int, int, int, int, int, int, int, int, int, int]


def stat_fields(raw: bytes) -> StatFields | None:
    """(comm, ppid, minflt, cminflt, majflt, cmajflt, utime, stime, cutime, cstime, nthreads,
    start_ticks, rss_pages) of a raw stat: the sampler's hot path, so a bare tuple."""
    # comm may hold spaces and parentheses: it ends at the *last* ')'.
    close = raw.rfind(b")")
    if close < 0:
        return None
    f = raw[close + 2 :].split(None, 22)  # only the fields up to rss: half the work of split()
    if len(f) < 22:
        return None
    # f[0] is field 3 (state) of proc(5); field n is f[n - 3].
    return (
        raw[raw.find(b"(") + 1 : close].decode("utf-8", "replace"),
        int(f[1]),
        int(f[7]),
        int(f[8]),
        int(f[9]),
        int(f[10]),
        int(f[11]),
        int(f[12]),
        int(f[13]),
        int(f[14]),
        int(f[17]),
        int(f[19]),
        int(f[21]),
    )


def parse_stat(pid: int, raw: bytes) -> ProcStat | None:
    fields = stat_fields(raw)
    if fields is None:
        return None
    return ProcStat(pid, fields[0], chr(raw[raw.rfind(b")") + 2]), *fields[1:])


def read_stat(pid: int, proc_root: str = "/proc") -> ProcStat | None:
    raw = read_bytes(f"{proc_root}/{pid}/stat")
    return parse_stat(pid, raw) if raw else None


def read_ppid(pid: int, proc_root: str = "/proc") -> int | None:
    """Only the parent pid, for walking process trees cheaply."""
    raw = read_bytes(f"{proc_root}/{pid}/stat")
    return _ppid_of(raw) if raw else None


class ProcIO(NamedTuple):
    rchar: int
    wchar: int
    read_bytes: int
    write_bytes: int


_IO_KEYS = [b"rchar:", b"wchar:", b"syscr:", b"syscw:", b"read_bytes:", b"write_bytes:"]


def parse_io(raw: bytes) -> ProcIO | None:
    # A fixed layout since Linux 2.6.20: "rchar: N\nwchar: N\nsyscr: N\n…". Checked, not assumed.
    f = raw.split()
    if f[0:12:2] != _IO_KEYS:
        return None
    return ProcIO(int(f[1]), int(f[3]), int(f[9]), int(f[11]))


def read_io(pid: int, proc_root: str = "/proc") -> ProcIO | None:
    """I/O counters; None when not permitted (another user's process) or gone."""
    raw = read_bytes(f"{proc_root}/{pid}/io")
    return parse_io(raw) if raw else None


def parse_schedstat_wait(raw: bytes) -> int | None:
    """The run-queue wait (ns) of one ``schedstat``: "<on-CPU ns> <run-queue ns> <timeslices>".

    ``/proc/<pid>/schedstat`` is the thread group leader's alone, not the process's: a
    process's wait is the sum over ``/proc/<pid>/task/<tid>/schedstat`` (checked on Linux
    6.18: the leader's file stayed still while its three spinning threads waited seconds).
    The run-queue time includes time throttled by a CFS quota (cgroup ``cpu.max``): a
    throttled thread stays queued, so cgroup ``cpu.stat`` throttling is already in it.
    None for "0 0 0": a thread that never ran yet, or a kernel that keeps no schedstats.
    """
    f = raw.split()
    if len(f) != 3 or f == [b"0", b"0", b"0"] or not f[1].isdigit():
        return None
    return int(f[1])


def read_cmdline(pid: int, proc_root: str = "/proc", limit: int = 1024) -> str | None:
    raw = read_all(f"{proc_root}/{pid}/cmdline")
    if raw is None:
        return None
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return text[:limit]


def list_pids(proc_root: str = "/proc") -> list[int]:
    return [int(name) for name in os.listdir(proc_root) if name.isdigit()]


def scan_stats(proc_root: str = "/proc") -> dict[int, bytes]:
    """The raw ``stat`` of every process, in one pass (the sampler reuses these bytes)."""
    stats = {}
    for pid in list_pids(proc_root):
        raw = read_bytes(f"{proc_root}/{pid}/stat")
        if raw:
            stats[pid] = raw
    return stats


def descriptor_budget(share: int = 4, cap: int = 4096) -> int:
    """How many descriptors one ProcFiles may hold: a ``share``-th of the soft RLIMIT_NOFILE,
    at most ``cap``, so the watcher never runs short of descriptors for its own files."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(0, min(cap, soft // share))


class ProcFiles:
    """Small /proc files (stat, io) of live processes, read through descriptors held between
    sample rounds.

    Opening ``/proc/<pid>/stat`` walks the path and allocates a file every time; a descriptor
    kept open re-reads it with one ``pread``, which costs under half the system time of an
    open, read and close. A descriptor names one process, not a pid: once that process is
    gone its reads fail (ESRCH), the descriptor is closed and the path opened afresh, so a
    reused pid is never read as the old process. At most ``budget`` descriptors are held;
    beyond that files are read the plain way. :meth:`keep` lets go of processes no longer
    wanted. Only the real procfs is read this way by default: a recorded tree on disk keeps
    serving a deleted file through an open descriptor.
    """

    def __init__(self, proc_root: str = "/proc", budget: int | None = None) -> None:
        self.proc_root = proc_root
        if budget is None:
            budget = descriptor_budget() if os.path.realpath(proc_root) == "/proc" else 0
        self.budget = budget
        self._fds: dict[tuple[int, str], int] = {}

    def read(self, pid: int, name: str) -> bytes | None:
        """``/proc/<pid>/<name>`` (one read of up to 4 KiB), None when gone or denied."""
        key = (pid, name)
        fd = self._fds.get(key)
        if fd is not None:
            try:
                data = os.pread(fd, _READ_SIZE, 0)
            except OSError:  # ESRCH: that process is gone (the pid may be someone else's now)
                data = b""
            if data:
                return data
            del self._fds[key]
            os.close(fd)
        try:
            fd = os.open(f"{self.proc_root}/{pid}/{name}", _FLAGS)
        except OSError:
            return None
        try:
            data = os.read(fd, _READ_SIZE)
        except OSError:
            data = b""
        if data and len(self._fds) < self.budget:
            self._fds[key] = fd
        else:
            os.close(fd)
        return data or None

    def scan_stats(self) -> dict[int, bytes]:
        """The raw ``stat`` of every process, in one pass; processes no longer listed are let go."""
        read = self.read
        stats = {}
        for pid in list_pids(self.proc_root):
            raw = read(pid, "stat")
            if raw:
                stats[pid] = raw
        self.keep(stats)
        return stats

    def keep(self, pids: Container[int]) -> None:
        """Close the descriptors of every process not in ``pids``."""
        for key in [k for k in self._fds if k[0] not in pids]:
            os.close(self._fds.pop(key))

    def forget(self, pid: int, name: str) -> None:
        """Close the descriptor of one file of a live process (a thread that exited)."""
        fd = self._fds.pop((pid, name), None)
        if fd is not None:
            os.close(fd)

    def list_dir(self, pid: int, name: str) -> list[str]:
        """The entries of ``/proc/<pid>/<name>`` (``task``), empty when the process is gone."""
        try:
            return os.listdir(f"{self.proc_root}/{pid}/{name}")
        except OSError:
            return []

    @property
    def held(self) -> int:
        return len(self._fds)

    def lend(self) -> ProcFiles:
        """A view of these descriptors for one of several samplers (the node scraper's, one
        per job): it reads, opens and forgets through them, but lets go of none in
        :meth:`keep` or :meth:`close`, which would drop the other jobs' processes. The
        owner's :meth:`scan_stats` lets go of the processes that left."""
        return _LentFiles(self)

    def close(self) -> None:
        self.keep(())

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: os may be gone already
            pass


class _LentFiles(ProcFiles):
    def __init__(self, owner: ProcFiles) -> None:  # shares the owner's descriptors
        self.proc_root = owner.proc_root
        self.budget = owner.budget
        self._fds = owner._fds

    def keep(self, pids: Container[int]) -> None:
        pass

    def close(self) -> None:
        pass


def _ppid_of(raw: bytes) -> int | None:
    close = raw.rfind(b")")
    fields = raw[close + 2 : close + 40].split(None, 2)
    return int(fields[1]) if len(fields) > 1 else None


def descendants(root: int, proc_root: str = "/proc", stats: dict[int, bytes] | None = None) -> list[int]:
    """Pids of all live descendants of ``root`` (not root itself), from one pass over /proc."""
    if stats is None:
        stats = scan_stats(proc_root)
    children: dict[int, list[int]] = {}
    for pid, raw in stats.items():
        ppid = _ppid_of(raw)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found
