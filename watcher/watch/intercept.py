"""Preload the intercepter (the large-allocation recycler) into a job, and read what it saved.

The C library lives in ``intercepter/`` and is installed as ``watcher/lib/libturingwatch_intercept.so``.
Every process of a job that exits normally writes ``<prefix>.<pid>.json`` at exit, where
``<prefix>`` is what :func:`preload_environment` put in ``TURINGWATCH_INTERCEPT_STATS``;
:func:`collect_stats` adds them up and :func:`format_summary` says it in a line.

Only the standard library is imported here: ``turingwatch run`` calls this before the job starts.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from watcher.errors import TuringwatchError

LIBRARY_NAME = "libturingwatch_intercept.so"
ENV_LIBRARY = "TURINGWATCH_INTERCEPT_LIBRARY"
ENV_STATS = "TURINGWATCH_INTERCEPT_STATS"

# Counters that add up across processes, and peaks of which the largest is kept.
SUMMED = (
    "small_allocs", "small_frees", "large_allocs", "large_frees", "pool_hits", "pool_misses",
    "bytes_recycled", "page_faults_avoided", "bytes_mapped", "maps", "unmaps", "remaps",
    "evictions", "idle_releases", "fallbacks",
)  # fmt: skip
PEAKS = ("peak_live_bytes", "peak_pool_bytes", "peak_pool_blocks")
# One process's statistics are a few KiB (one row per size class); anything much larger is not.
_MAX_STATS_BYTES = 1 << 20


class InterceptError(TuringwatchError):
    """The intercepter library cannot be found or cannot be preloaded."""


def library_path() -> Path:
    """Find the intercepter library.

    Looked up in this order: ``$TURINGWATCH_INTERCEPT_LIBRARY`` (an explicit choice wins), next
    to the imported package (``watcher/lib/``, the installed layout), then among the files of the
    installed ``turingwatch`` distribution (when running from a source tree with a built copy
    installed). Equivalent: ``turingwatch intercepter --path``.

    Raises:
        InterceptError: none of them holds the library; usually the package was not built
            with ``pip install .`` (meson builds the C library).
    """
    explicit = os.environ.get(ENV_LIBRARY)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise InterceptError(f"{ENV_LIBRARY}={explicit}: no such file")
        return path.resolve()
    for candidate in _candidates():
        if candidate.is_file():
            return candidate.resolve()
    raise InterceptError(
        f"{LIBRARY_NAME} not found next to the watcher package or in the installed turingwatch "
        f"distribution; install turingwatch with 'pip install .' (it builds the library), or "
        f"point {ENV_LIBRARY} at a built copy"
    )


def _candidates() -> Iterable[Path]:
    import watcher

    yield Path(watcher.__file__).parent / "lib" / LIBRARY_NAME
    try:
        dist = metadata.distribution("turingwatch")
    except metadata.PackageNotFoundError:
        return
    for file in dist.files or ():
        if file.name == LIBRARY_NAME:
            yield Path(str(dist.locate_file(file)))


def preload_environment(
    env: Mapping[str, str], stats_path: Path, *, library: Path | None = None
) -> dict[str, str]:
    """Return a copy of ``env`` that preloads the intercepter and names its statistics files.

    The library is put first in ``LD_PRELOAD`` (other preloads stay, after it). ``stats_path``
    is a prefix: each process writes ``<stats_path>.<pid>.json``, so its directory must exist.

    Raises:
        InterceptError: the library is not found, or its path has a colon or a space, which
            ``LD_PRELOAD`` cannot express.
    """
    lib = str(library or library_path())
    if any(c in lib for c in ": \t"):
        raise InterceptError(f"{lib}: LD_PRELOAD cannot hold a path with a colon or a space")
    others = [p for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p and p != lib]
    out = dict(env)
    out["LD_PRELOAD"] = ":".join([lib, *others])
    out[ENV_STATS] = str(stats_path)
    return out


def read_stats(path: Path) -> dict[str, Any] | None:
    """Parse one process's statistics file; ``None`` if it is missing, partial or not ours.

    Not ours: a symlink (never followed), anything but a regular file (a FIFO would block the
    report), a file another user owns, or one far larger than statistics ever are.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as file:
            if not _own_file(os.fstat(file.fileno())):
                return None
            raw = file.read(_MAX_STATS_BYTES + 1)
        if len(raw) > _MAX_STATS_BYTES:
            return None
        data = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != 1:
        return None
    if not all(isinstance(data.get(key), int) for key in (*SUMMED, *PEAKS)):
        return None
    return data


def stats_files(prefix_or_dir: Path) -> list[Path]:
    """The statistics files under a prefix (``<prefix>.<pid>.json``) or in a directory.

    Only this user's regular files: a link or another user's file planted among them is left
    out (and :func:`read_stats` checks again on the file it opens).
    """
    where = Path(prefix_or_dir)
    found = where.glob("*.json") if where.is_dir() else where.parent.glob(f"{where.name}.*.json")
    return sorted(path for path in found if _own_file(_lstat(path)))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _own_file(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def collect_stats(prefix_or_dir: Path) -> dict[str, Any]:
    """Add up the statistics of every process of a job.

    Counters are summed; peaks are the largest of any one process (processes need not have run
    at the same time). ``classes`` is merged by size class; ``processes`` counts the files read,
    ``unreadable`` those skipped, and ``commands`` lists the distinct process names.
    """
    total: dict[str, Any] = {key: 0 for key in (*SUMMED, *PEAKS)}
    classes: dict[int, dict[str, int]] = {}
    commands: set[str] = set()
    processes = unreadable = 0
    for file in stats_files(prefix_or_dir):
        stats = read_stats(file)
        if stats is None:
            unreadable += 1
            continue
        processes += 1
        commands.add(str(stats.get("comm", "")))
        for key in SUMMED:
            total[key] += stats[key]
        for key in PEAKS:
            total[key] = max(total[key], stats[key])
        for row in stats.get("classes", []):
            merged = classes.setdefault(row["min_bytes"], {"allocs": 0, "frees": 0, "hits": 0})
            for key in merged:
                merged[key] += row.get(key, 0)
        total.setdefault("threshold_bytes", stats.get("threshold_bytes"))
    total["classes"] = [{"min_bytes": size, **counts} for size, counts in sorted(classes.items())]
    total["processes"] = processes
    total["unreadable"] = unreadable
    total["commands"] = sorted(c for c in commands if c)
    return total


def format_summary(stats: Mapping[str, Any]) -> str:
    """One or two lines for the report card, from :func:`collect_stats` (or one process's stats)."""
    processes = stats.get("processes", 1)
    if not processes:
        return "intercepter: no process wrote statistics (none exited normally)"
    hits, misses = stats["pool_hits"], stats["pool_misses"]
    where = f" across {processes} processes" if processes > 1 else ""
    if stats["large_allocs"] == 0:
        threshold = stats.get("threshold_bytes") or 128 << 10
        return (
            f"intercepter: no allocation reached {_bytes(threshold)}{where}, nothing to recycle "
            f"({_count(stats['small_allocs'])} small allocations passed through)"
        )
    line = (
        f"recycled {_bytes(stats['bytes_recycled'])} in {_count(hits)} hits "
        f"({_count(misses)} {'miss' if misses == 1 else 'misses'}){where}, "
        f"~{_count(stats['page_faults_avoided'])} page faults avoided"
    )
    return f"{line}\npool held at most {_bytes(stats['peak_pool_bytes'])} of freed blocks"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"


def _count(n: int) -> str:
    if n < 10_000:
        return str(n)
    for value, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= value:
            return f"{n / value:.1f} {suffix}"
    return str(n)
