"""The crash-safe, append-only sample spool: one JSON object per line.

The sampling loop writes here instead of the database, so it never holds DuckDB in memory
and a crash loses at most the line being written (the loader skips a torn last line).
The same records are what a node sends to the server, so the format is versioned and
self-describing: the ``session`` line names the field order of the arrays that follow, and the
loader reads rows by those names (watcher/store/load_spool.sql, "remap"). New fields go at the
end of the records' NamedTuples; spools written before them still load, with the field NULL.

Lines (``k`` is the kind):
  {"k": "session", "v": 1, "session": {...}, "fields": {"steps": [...], "procs": [...], "gpus": [...]}}
  {"k": "sample", "seq": 0, "ts": 1763780000.25, "steps": [[...]], "procs": [[...]],
   "gpus": [[...]], "cmd": [[pid, start_ticks, "cmdline"]]}
  {"k": "end", "ts": ..., "end": {"exit_code": 0, "exit_signal": null, ...}}
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watcher.records import GpuReading, ProcessSample, SampleRecord, StepSample, field_names

SPOOL_VERSION = 1
FIELDS = {
    "steps": field_names(StepSample),
    "procs": field_names(ProcessSample),
    "gpus": field_names(GpuReading),
}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
log = logging.getLogger(__name__)


class SpoolWriter:
    """Appends whole lines with single ``write`` calls on an O_APPEND descriptor.

    The spool is its owner's only (0600: it holds command lines, with whatever passwords they
    carry), and a link planted where it goes is never followed (``O_NOFOLLOW``) nor a file that
    is not its own written to.

    A sender may :meth:`bound` the spool: while more than ``max_undelivered_bytes`` of it are
    not delivered (the server has been down for long), sample lines are dropped, so the spool
    stops growing; the session and end lines are always written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise PermissionError(errno.EPERM, "not a file of this user's", str(path))
        self._fd: int | None = fd
        self.size = st.st_size
        self._max_undelivered: int | None = None
        self._delivered: Callable[[], int] | None = None
        self.holding_back = False       # sample lines are dropped until the backlog drains

    def bound(self, max_undelivered_bytes: int, delivered: Callable[[], int]) -> None:
        """Drop sample lines while the file's size less ``delivered()`` (its delivered
        prefix, in bytes) is at least ``max_undelivered_bytes``."""
        self._max_undelivered, self._delivered = max_undelivered_bytes, delivered

    def _has_room(self) -> bool:
        if self._max_undelivered is None or self._delivered is None:
            return True
        try:
            undelivered = self.size - self._delivered()
        except Exception:  # the sender's trouble must not cost the samples
            return True
        if undelivered < self._max_undelivered:
            if self.holding_back:
                self.holding_back = False
                log.warning("%s: the server takes samples again; sample lines are written again",
                            self.path.name)
            return True
        if not self.holding_back:
            self.holding_back = True
            log.warning("%s: %d bytes not delivered to the server (server.max_spool_bytes %d); "
                        "no more sample lines are written until it takes them (the end line "
                        "still is)", self.path.name, undelivered, self._max_undelivered)
        return False

    def _write(self, obj: dict[str, Any]) -> None:
        if self._fd is None:
            raise OSError(f"spool {self.path} is closed")
        # A name from a non-UTF-8 environment must not cost the job its watcher.
        data = (_dumps(obj) + "\n").encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self.size += written

    def write_session(self, session: dict[str, Any]) -> None:
        self._write({"k": "session", "v": SPOOL_VERSION, "session": session, "fields": FIELDS})

    def write_sample(self, record: SampleRecord) -> bool:
        """Append a sample line; False when the bound (:meth:`bound`) held it back."""
        if not self._has_room():
            return False
        self._write(
            {
                "k": "sample",
                "seq": record.seq,
                "ts": record.ts,
                # Named tuples: JSON arrays in field order as they are.
                "steps": record.steps,
                "procs": record.processes,
                "gpus": record.gpus,
                "cmd": record.cmdlines,
            }
        )
        return True

    def write_end(self, ts: float, end: dict[str, Any]) -> None:
        self._write({"k": "end", "ts": ts, "end": end})
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_header(path: Path) -> dict[str, Any] | None:
    """The session line of a spool, or None if the file has none (yet), or its first line is
    not a session line (another file, or garbage: any JSON, not only an object)."""
    try:
        with path.open("rb") as f:
            first = f.readline()
        head = json.loads(first)
    except (OSError, ValueError):
        return None
    if isinstance(head, dict) and head.get("k") == "session" and isinstance(head.get("session"), dict):
        return head
    return None


def has_ended(path: Path) -> bool:
    """True when the spool's last complete line is its end record."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        last = json.loads(tail)
    except (OSError, ValueError):
        return False
    return isinstance(last, dict) and last.get("k") == "end"


def spool_files(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "spool").glob("*.jsonl"))
