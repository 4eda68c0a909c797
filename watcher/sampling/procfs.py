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
_READ_SIZE = 4096


def read_bytes(path: str) -> bytes | None:
    """The whole of a small /proc file, or None when it cannot be read (gone, no permission)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, _READ_SIZE)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < _READ_SIZE:
                break
        return b"".join(chunks)
    except OSError:  # ESRCH: the process exited while we read
        return None
    finally:
        os.close(fd)


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
    f = raw[close + 2 :].split()
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
    if not raw:
        return None
    close = raw.rfind(b")")
    fields = raw[close + 2 : close + 40].split(None, 2)
    return int(fields[1]) if len(fields) > 1 else None


@dataclass(slots=True)
class ProcIO:
    rchar: int
    wchar: int
    read_bytes: int
    write_bytes: int


def parse_io(raw: bytes) -> ProcIO | None:
    values = {}
    for line in raw.split(b"\n"):
        key, _, value = line.partition(b": ")
        if value:
            values[key] = int(value)
    try:
        return ProcIO(
            values[b"rchar"], values[b"wchar"], values[b"read_bytes"], values[b"write_bytes"]
        )
    except KeyError:
        return None


def read_io(pid: int, proc_root: str = "/proc") -> ProcIO | None:
    """I/O counters; None when not permitted (another user's process) or gone."""
    raw = read_bytes(f"{proc_root}/{pid}/io")
    return parse_io(raw) if raw else None


def read_cmdline(pid: int, proc_root: str = "/proc", limit: int = 1024) -> str | None:
    raw = read_bytes(f"{proc_root}/{pid}/cmdline")
    if raw is None:
        return None
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return text[:limit]


def list_pids(proc_root: str = "/proc") -> list[int]:
    return [int(name) for name in os.listdir(proc_root) if name.isdigit()]


def descendants(root: int, proc_root: str = "/proc") -> list[int]:
    """Pids of all live descendants of ``root`` (not root itself), from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for pid in list_pids(proc_root):
        ppid = read_ppid(pid, proc_root)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found
