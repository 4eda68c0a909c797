"""The server's journal: every accepted batch, fsynced, until the store holds it.

A batch is one file, ``<seq>.batch``: a header line (JSON: session, sender uid, time received,
size and SHA-256 of the body) and the body as it came. It is written under a temporary name,
fsynced, renamed into place and the directory fsynced, so a file under its final name is whole
and durable: only then is the sender answered 200. The applier removes it once its lines are
committed to the store; a crash between the two replays it, and the store's ``(session_id,
seq)`` key makes the replay store nothing twice. Temporary files are batches never answered,
removed at start. A batch the store refuses is moved to ``refused/`` with the reason, kept for
an admin, never lost silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watcher.errors import TuringwatchError

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{16})\.batch")


class JournalError(TuringwatchError):
    """The journal cannot be written or read (disk full, permissions, a damaged entry)."""


@dataclass(frozen=True)
class Entry:
    seq: int
    path: Path
    session_id: str
    uid: int
    received_at: float
    size: int


class Journal:
    """Batches accepted and not yet in the store, in the order they were accepted."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            (directory / "refused").mkdir(mode=0o700, exist_ok=True)
            for tmp in directory.glob(".*.tmp"):
                tmp.unlink()   # never acknowledged: its sender sends it again
        except OSError as exc:
            raise JournalError(f"journal {directory}: {exc.strerror or exc}") from exc
        self._lock = threading.Lock()
        names = sorted(self._names())
        self._next = (int(names[-1][:16]) + 1) if names else 1
        # Bytes of every file held, by name: counted as they come and go, since a gauge read
        # after each stored batch must not list a directory that a long outage filled.
        self._held: dict[str, int] = {}
        for name in names:
            with contextlib.suppress(OSError):
                self._held[name] = (directory / name).stat().st_size
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _names(self) -> list[str]:
        return [p.name for p in self.directory.iterdir() if _NAME.fullmatch(p.name)]

    def append(self, session_id: str, uid: int, body: bytes) -> Entry:
        """Write one batch durably; return once it would survive a crash of the machine."""
        with self._lock:
            seq, self._next = self._next, self._next + 1
        now = time.time()
        head = {"v": 1, "session_id": session_id, "uid": uid, "received_at": now,
                "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        final = self.directory / f"{seq:016d}.batch"
        tmp = self.directory / f".{seq:016d}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                with os.fdopen(fd, "wb", closefd=False) as out:
                    out.write(json.dumps(head).encode() + b"\n")
                    out.write(body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            os.fsync(self._dir_fd)
            with self._lock:
                self._held[final.name] = os.stat(final).st_size
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise JournalError(f"cannot journal a batch in {self.directory}: "
                               f"{exc.strerror or exc}") from exc
        return Entry(seq, final, session_id, uid, now, len(body))

    def pending(self) -> list[Entry]:
        """What the journal holds, oldest first (at start: what a crash left)."""
        entries = []
        for name in sorted(self._names()):
            try:
                entries.append(self._entry(self.directory / name))
            except JournalError as exc:
                log.error("%s", exc)
                self.set_aside(self.directory / name, str(exc))
        return entries

    def _entry(self, path: Path) -> Entry:
        try:
            with open(path, "rb") as f:
                head = json.loads(f.readline())
            return Entry(int(path.name[:16]), path, str(head["session_id"]), int(head["uid"]),
                         float(head["received_at"]), int(head["size"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"journal entry {path.name} cannot be read: {exc}") from exc

    def body(self, entry: Entry) -> bytes:
        """The batch's body, checked against the digest it was journaled with."""
        try:
            with open(entry.path, "rb") as f:
                head = json.loads(f.readline())
                body = f.read()
        except (OSError, ValueError) as exc:
            raise JournalError(f"journal entry {entry.path.name} cannot be read: {exc}") from exc
        if len(body) != head.get("size") or hashlib.sha256(body).hexdigest() != head.get("sha256"):
            raise JournalError(f"journal entry {entry.path.name} is damaged (size or digest)")
        return body

    def remove(self, entry: Entry) -> None:
        entry.path.unlink(missing_ok=True)
        self._forget(entry.path)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._held.pop(path.name, None)

    def set_aside(self, path: Path, why: str) -> None:
        """Keep a batch the store refused (or a damaged one) in refused/, with its reason."""
        aside = self.directory / "refused" / path.name
        try:
            os.replace(path, aside)
            self._forget(path)
            aside.with_suffix(".why").write_text(why + "\n", encoding="utf-8")
        except OSError as exc:
            log.error("cannot set %s aside: %s", path, exc)

    def backlog_bytes(self) -> int:
        """Bytes of the batches the journal holds (headers included)."""
        with self._lock:
            return sum(self._held.values())

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
