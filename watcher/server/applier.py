"""The threads that move journaled batches into the store, each session's in the order they came.

Each statement of an apply costs a few ms however small the batch, so ``server.apply_threads``
workers store batches of different sessions side by side (DuckDB runs them in parallel; a
session's batches never overlap). A request thread journals its batch (fsynced), hands it
here and waits a moment for the store's verdict: the lines stored and the duplicates, or the
loader's refusal (a 400 with its line and reason; the batch is then set aside, never stored in
part). A batch the store could not take
for a reason of the store's own (busy with a long analysis, disk full) stays in the journal and
is retried with back-off: the sender already has its 200, because the lines are durable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from watcher.server.journal import Entry, Journal, JournalError
from watcher.server.metrics import Metrics
from watcher.store import Store, StoreError
from watcher.store.spool_loader import Applied, SpoolRefused, apply_ndjson

log = logging.getLogger(__name__)

_RETRY_S = (1.0, 60.0)   # back-off while the store cannot take a batch: first, longest
_REPLAY_GROUP_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Replayed:
    batches: int
    lines: int
    duplicates: int
    refused: int
    seconds: float


class Applier:
    def __init__(self, store: Store, journal: Journal, metrics: Metrics, *, workers: int = 2) -> None:
        self.store = store
        self.journal = journal
        self.metrics = metrics
        self.workers = workers
        # Batches waiting, in the order accepted; a worker takes the first whose session no
        # other worker is storing, so each session's batches are stored in order.
        self._pending: deque[tuple[Entry, Future[Applied]]] = deque()
        self._busy: set[str] = set()
        self._ready = threading.Condition()
        self._stopping = False
        self._waiting: dict[int, float] = {}     # seq -> received_at, of batches not stored yet
        self._threads: list[threading.Thread] = []
        self.lines_stored = self.duplicates_seen = 0

    # -- at start ---------------------------------------------------------------------------
    def replay(self, progress: Callable[[int, int], None] | None = None) -> Replayed:
        """Store what the journal holds (what a crash left), before the server listens.

        Consecutive batches of one session are stored together, which is what makes a long
        backlog quick to catch up; a group the store refuses is retried batch by batch so
        that only the faulty one is set aside.
        """
        started = time.monotonic()
        entries = self.journal.pending()
        lines = duplicates = refused = 0
        done = 0
        for group in _groups(entries):
            try:
                bodies = [self.journal.body(e) for e in group]
            except JournalError as exc:
                log.error("%s", exc)
                for entry in group:
                    self.journal.set_aside(entry.path, str(exc))
                refused += len(group)
                continue
            try:
                got = self._apply_retrying(group[0].session_id, b"\n".join(bodies))
                lines, duplicates = lines + got.accepted, duplicates + got.duplicates
                for entry in group:
                    self.journal.remove(entry)
            except SpoolRefused:
                for entry, body in zip(group, bodies, strict=True):
                    try:
                        got = self._apply_retrying(entry.session_id, body)
                        lines, duplicates = lines + got.accepted, duplicates + got.duplicates
                        self.journal.remove(entry)
                    except SpoolRefused as exc:
                        self._refuse(entry, exc)
                        refused += 1
            done += len(group)
            if progress is not None:
                progress(done, len(entries))
        self._count(lines, duplicates)
        return Replayed(len(entries), lines, duplicates, refused, time.monotonic() - started)

    # -- while serving -----------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"applier-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, entry: Entry) -> Future[Applied]:
        future: Future[Applied] = Future()
        with self._ready:
            self._waiting[entry.seq] = entry.received_at
            self._pending.append((entry, future))
            self._ready.notify()
        return future

    def stop(self, timeout_s: float = 30.0) -> None:
        """Store what is queued (up to ``timeout_s``), then end; the rest stays journaled."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def backlog(self) -> tuple[int, float]:
        """Batches accepted and not stored yet, and the age of the oldest (s)."""
        with self._ready:
            if not self._waiting:
                return 0, 0.0
            return len(self._waiting), max(0.0, time.time() - min(self._waiting.values()))

    def _next(self) -> tuple[Entry, Future[Applied]] | None:
        """The first waiting batch of a session no other worker holds; None: time to end."""
        with self._ready:
            while True:
                for i, (entry, future) in enumerate(self._pending):
                    if entry.session_id not in self._busy:
                        del self._pending[i]
                        self._busy.add(entry.session_id)
                        return entry, future
                if self._stopping and not self._pending:
                    return None
                self._ready.wait()

    def _work(self) -> None:
        while (item := self._next()) is not None:
            entry, future = item
            try:
                self._store(entry, future)
            finally:
                with self._ready:
                    self._busy.discard(entry.session_id)
                    self._waiting.pop(entry.seq, None)
                    self._ready.notify_all()
            self._gauges()

    def _store(self, entry: Entry, future: Future[Applied]) -> None:
        try:
            body = self.journal.body(entry)
            with self.metrics.apply_seconds.time():
                got = self._apply_retrying(entry.session_id, body, shared=self.workers > 1)
        except SpoolRefused as exc:
            self._refuse(entry, exc)
            future.set_exception(exc)
        except JournalError as exc:
            log.error("%s", exc)
            self.journal.set_aside(entry.path, str(exc))
            future.set_exception(exc)
        except Exception as exc:   # a bug must not stop the threads that store everything
            log.exception("storing batch %s failed; it stays in the journal", entry.path.name)
            future.set_exception(exc)
        else:
            self.journal.remove(entry)
            self._count(got.accepted, got.duplicates)
            future.set_result(got)

    def _count(self, lines: int, duplicates: int) -> None:
        self.lines_stored += lines
        self.duplicates_seen += duplicates
        self.metrics.lines.inc(lines)
        self.metrics.duplicates.inc(duplicates)

    def _gauges(self) -> None:
        self.metrics.lag.set(self.backlog()[1])
        self.metrics.journal_bytes.set(self.journal.backlog_bytes())

    def _apply_retrying(self, session_id: str, body: bytes, *, shared: bool = False) -> Applied:
        """Store a batch; while the store itself fails, wait and try again (never give up:
        the batch is acknowledged). SpoolRefused, the batch's own fault, is raised."""
        wait = _RETRY_S[0]
        while True:
            try:
                return apply_ndjson(self.store, body, session_id, shared=shared)
            except SpoolRefused:
                raise
            except StoreError as exc:
                log.error("the store cannot take a batch of session %s: %s; retrying in %.0f s",
                          session_id, exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, _RETRY_S[1])

    def _refuse(self, entry: Entry, exc: SpoolRefused) -> None:
        log.warning("batch %s of session %s (uid %d) refused by the store: %s",
                    entry.path.name, entry.session_id, entry.uid, exc)
        self.metrics.rejected.labels(reason="store").inc()
        self.journal.set_aside(entry.path, str(exc))


def _groups(entries: list[Entry]) -> list[list[Entry]]:
    """Runs of consecutive entries of one session, each at most _REPLAY_GROUP_BYTES."""
    groups: list[list[Entry]] = []
    size = 0
    for entry in entries:
        same = groups and groups[-1][0].session_id == entry.session_id
        if same and size + entry.size <= _REPLAY_GROUP_BYTES:
            groups[-1].append(entry)
            size += entry.size
        else:
            groups.append([entry])
            size = entry.size
    return groups
