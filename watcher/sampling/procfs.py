"""Reading processes from /proc, fast and race-tolerant.

This is the sampler's hot path: every round reads ``stat`` (and ``io`` for the job's
processes) of each process, so it uses bare ``os.open``/``os.read`` on bytes and parses by
field position. A process that exits between listing and reading is simply not returned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


@dataclass(slots=True)
class ProcStat:
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


def parse_stat(pid: int, raw: bytes) -> ProcStat | None:
    # comm may hold spaces and parentheses: it ends at the *last* ')'.
    close = raw.rfind(b")")
    if close < 0:
        return None
    comm = raw[raw.find(b"(") + 1 : close].decode("utf-8", "replace")
    f = raw[close + 2 :].split(None, 22)  # only the fields up to rss: half the work of split()
    if len(f) < 22:
        return None
    # f[0] is field 3 (state) of proc(5); field n is f[n - 3].
    return ProcStat(
        pid,
        comm,
        f[0].decode(),
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


def read_stat(pid: int, proc_root: str = "/proc") -> ProcStat | None:
    raw = read_bytes(f"{proc_root}/{pid}/stat")
    return parse_stat(pid, raw) if raw else None


def read_ppid(pid: int, proc_root: str = "/proc") -> int | None:
    """Only the parent pid, for walking process trees cheaply."""
    raw = read_bytes(f"{proc_root}/{pid}/stat")
    return _ppid_of(raw) if raw else None


@dataclass(slots=True)
class ProcIO:
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
