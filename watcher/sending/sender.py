"""Deliver spool files to the server, batch by batch, resuming where the last sender stopped.

State: beside each spool ``<spool>.sent`` holds the byte offset of its delivered prefix (and the
session it belongs to), replaced atomically after every batch the server accepted. A sender
started later (the same job after a crash, ``turingwatch ingest --send``) resumes from it; two
senders of one spool at once only cost re-sent lines, which the server stores once by
``(session_id, seq)``. A crash between the server's answer and the rename re-sends one batch.

A batch is the spool's session line followed by the complete lines (ending in a newline) from
the offset, oldest first, up to ``server.send_batch_bytes`` (at least one line): the server
needs nothing else to read it. What the answer means:

======================  =========================================================================
200 (2xx)               delivered: the offset moves past the batch
413                     the batch was too large: halve it and send again; a single line too large
                        is skipped with a warning
409                     the session has ended on the server: these lines are stored already (a
                        try whose answer was lost); the offset moves past them
400, 403                the server will never take these lines (malformed, not this user's job):
                        warn once with its reason, skip the batch, count its lines
anything else, or none  (refused, timeout, DNS, 401, 503, 5xx) keep the lines; retry after an
                        exponential back-off with jitter (1 s .. 5 min), or Retry-After
======================  =========================================================================

:class:`SendingThread` runs a sender in a daemon thread beside a watched job (``run``,
``attach``): a batch every ``server.send_interval_s``, a bounded final flush after the end line.
Nothing here raises into the job's path: every failure is a logged warning, once per kind.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from watcher import spool
from watcher.auth import Signer
from watcher.config import AuthSettings, ServerSettings
from watcher.errors import TuringwatchError
from watcher.files import atomic_write
from watcher.sending.client import Client, Reply, SendError
from watcher.units import size

SENT_SUFFIX = ".sent"
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
# A Retry-After beyond this is a server's mistake, not a plan.
MAX_RETRY_AFTER_S = 3600.0
# What one send_batch did.
SENT, IDLE, SPLIT, SKIPPED, RETRY, BROKEN = "sent", "idle", "split", "skipped", "retry", "broken"
log = logging.getLogger(__name__)


@dataclass
class SpoolState:
    """What a sender knows of one spool file."""

    path: Path
    limit: int                         # batch bytes now: send_batch_bytes, halved after a 413
    offset: int = 0                    # bytes delivered (or skipped as refused)
    size: int = 0                      # the file's size when last looked at
    header: bytes | None = None        # its session line, newline included
    session_id: str | None = None
    caught_up: bool = False            # no complete line left after the offset
    problem: str | None = None         # why it cannot be sent at all (not a spool, unreadable)
    sent_lines: int = 0
    sent_bytes: int = 0
    duplicates: int = 0
    skipped_lines: int = 0             # refused by the server (400, 403) or too large (413)
    refusals: list[str] = field(default_factory=list)

    @property
    def sent_path(self) -> Path:
        return self.path.with_name(self.path.name + SENT_SUFFIX)

    @property
    def undelivered(self) -> int:
        return max(0, self.size - self.offset)


class SpoolSender:
    """Sends spool files to ``server.url``; see the module's docstring.

    Raises:
        BadServerURL: at construction, ``server.url`` is not a URL.
        TuringwatchError: at construction, ``[auth]`` cannot sign (no HMAC key, say).
    """

    def __init__(
        self,
        server: ServerSettings,
        auth: AuthSettings,
        *,
        client: Client | None = None,
        signer: Signer | None = None,
        clock: Callable[[], float] = time.monotonic,
        remove_delivered: bool = False,
    ) -> None:
        self.server = server
        # The node scraper's spools exist only to reach the server: once a session has ended
        # and every line of it is delivered, its spool and offset file are removed. A job's
        # own spools (run, attach) stay: its card is made from them.
        self.remove_delivered = remove_delivered
        self.client = client if client is not None else Client(server)
        self.signer = signer if signer is not None else Signer(auth)
        self.clock = clock
        self.spools: dict[Path, SpoolState] = {}
        self.retry_at = 0.0                 # monotonic: no request before this
        self.failures = 0                   # requests in a row that got no usable answer
        self.last_problem: str | None = None
        self._warned: set[str] = set()

    # -- the spools -----------------------------------------------------------------------
    def add(self, path: Path) -> SpoolState:
        """Take a spool on, resuming from its ``.sent`` offset."""
        state = self.spools.get(path)
        if state is None:
            state = self.spools[path] = SpoolState(path, limit=self.server.send_batch_bytes)
            self._look(state)
        return state

    def delivered(self, path: Path) -> int:
        """Bytes of ``path`` delivered so far (0 for a spool it does not send)."""
        state = self.spools.get(path)
        return state.offset if state is not None else 0

    def pending_bytes(self) -> int:
        """Undelivered bytes of all this sender's spools, as last looked at."""
        return sum(state.undelivered for state in self.spools.values())

    def _look(self, state: SpoolState) -> None:
        """Read the session line and the ``.sent`` offset (the larger of ours and the file's:
        another sender of the same spool may have gone further)."""
        try:
            fd = _open_spool(state.path)
        except OSError as exc:
            state.problem = f"cannot read it: {exc.strerror or exc}"
            return
        with os.fdopen(fd, "rb") as f:
            state.size = os.fstat(f.fileno()).st_size
            if state.header is None:
                first = f.readline()
                if not first.endswith(b"\n"):
                    return  # no whole session line yet: nothing to send
                session = _session_id(first)
                if session is None:
                    state.problem = "not a spool (its first line is no session line)"
                    return
                state.header, state.session_id, state.problem = first, session, None
        offset = _read_offset(state.sent_path, state.session_id)
        if offset > state.size:  # the spool was replaced by a shorter one: start over
            offset = 0
        state.offset = max(state.offset, offset)

    # -- one batch ------------------------------------------------------------------------
    def send_batch(self, state: SpoolState) -> str:
        """Send the next batch of ``state``'s spool; what happened (SENT, IDLE, …)."""
        self._look(state)
        if state.problem is not None:
            return BROKEN
        if state.header is None:
            state.caught_up = True
            return IDLE
        header = state.header
        start = max(state.offset, len(header))
        try:
            lines = _complete_lines(state.path, start, max(1, state.limit - len(header)))
        except OSError as exc:
            state.problem = f"cannot read it: {exc.strerror or exc}"
            return BROKEN
        # The session line alone is worth a request: it tells the server the session exists.
        if not lines and state.offset >= len(header):
            state.caught_up = True
            return IDLE
        state.caught_up = False
        body = header + lines
        count = lines.count(b"\n")
        try:
            authorization = self.signer.authorization(body)
        except TuringwatchError as exc:  # munged down or refusing: it may come back
            return self._retry(f"cannot sign the batch: {exc}")
        try:
            reply = self.client.post_samples(
                body, authorization=authorization, spool_bytes=self.pending_bytes()
            )
        except SendError as exc:
            return self._retry(str(exc))
        end = start + len(lines)
        if 200 <= reply.status < 300:
            self._accepted(state, reply, end, count, len(body))
            return SENT
        if reply.status == 413:
            if count > 1:
                state.limit = max(1, len(body) // 2)
                log.debug("%s: %d bytes too large for the server; trying %d", state.path.name,
                          len(body), state.limit)
                return SPLIT
            what = "its session line" if count == 0 else f"a line of {size(len(lines))}"
            self._skip(state, end, count, f"413: {what} is larger than the server takes")
            if count == 0:  # nothing of this spool can ever be sent
                state.problem = "its session line is larger than the server takes"
                return BROKEN
            return SKIPPED
        if reply.status == 409:
            # The session has ended on the server, so its end line is stored: these lines were
            # delivered by a try whose answer was lost (the server restarted before answering).
            log.debug("%s: the server has this session's end already", state.path.name)
            self._accepted(state, reply, end, count, len(body))
            return SENT
        if reply.status in (400, 403):
            self._skip(state, end, count, f"{reply.status}: {reply.error}")
            return SKIPPED
        return self._retry(f"{self.client.endpoint} answered {reply.status}: {reply.error}",
                           reply.retry_after_s)

    def _accepted(self, state: SpoolState, reply: Reply, end: int, count: int, nbytes: int) -> None:
        if self.failures:
            log.info("the server takes batches again (after %d failed tries)", self.failures)
        self.failures, self.retry_at, self.last_problem = 0, 0.0, None
        self._warned.discard("failing")
        state.sent_lines += count
        state.sent_bytes += nbytes
        data = reply.data or {}
        if isinstance(data.get("duplicates"), int):
            state.duplicates += data["duplicates"]
        # Back up towards the configured size after a 413 made batches smaller.
        state.limit = min(self.server.send_batch_bytes, state.limit * 2)
        self._advance(state, end)

    def _skip(self, state: SpoolState, end: int, count: int, reason: str) -> None:
        """Lines the server will never take: say so once per reason, and go past them."""
        state.skipped_lines += count
        state.refusals.append(reason)
        kind = reason.split(":", 1)[0]
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("the server refused %s of %s (%s); skipping them, later lines still go",
                        "a line" if count == 1 else f"{count} lines", state.path, reason)
        self._advance(state, end)

    def _advance(self, state: SpoolState, end: int) -> None:
        state.offset = max(state.offset, end)
        record = json.dumps({"offset": state.offset, "session_id": state.session_id})
        try:
            atomic_write(state.sent_path, record + "\n", mode=0o600)
        except OSError as exc:  # the lines are delivered; a later sender re-sends a few
            if "sent-file" not in self._warned:
                self._warned.add("sent-file")
                log.warning("cannot record what was sent in %s: %s", state.sent_path,
                            exc.strerror or exc)

    def _retry(self, problem: str, retry_after_s: float | None = None) -> str:
        self.failures += 1
        delay = min(MAX_BACKOFF_S, MIN_BACKOFF_S * 2 ** min(self.failures - 1, 20))
        # Jitter, so that the nodes of a site do not all come back in the same second.
        delay = delay / 2 + random.random() * delay / 2
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        self.retry_at = self.clock() + delay
        self.last_problem = problem
        if "failing" not in self._warned:
            self._warned.add("failing")
            log.warning("%s; the spool keeps the lines, retrying with back-off", problem)
        else:
            log.debug("%s; next try in %.0f s", problem, delay)
        return RETRY

    # -- many batches ---------------------------------------------------------------------
    def due(self) -> bool:
        return self.clock() >= self.retry_at

    def send_pending(self, *, deadline: float | None = None) -> bool:
        """Send batches until every spool is caught up (True), the server must be left alone
        for a while (see ``retry_at``), or the ``deadline`` (monotonic) passes."""
        for state in list(self.spools.values()):
            while True:
                if not self.due() or (deadline is not None and self.clock() >= deadline):
                    return False
                outcome = self.send_batch(state)
                if outcome in (IDLE, BROKEN):
                    break
                if outcome == RETRY:
                    return False
        if self.remove_delivered:
            self._remove_delivered()
        return all(s.caught_up or s.problem for s in self.spools.values())

    def _remove_delivered(self) -> None:
        for path, state in list(self.spools.items()):
            if state.caught_up and not state.undelivered and spool.has_ended(path):
                try:
                    path.unlink()
                    state.sent_path.unlink(missing_ok=True)
                except OSError as exc:
                    log.debug("cannot remove the delivered spool %s: %s", path, exc)
                    continue
                del self.spools[path]

    def deliver(
        self,
        paths: Iterable[Path],
        *,
        tries: int = 4,
        max_wait_s: float = 30.0,
        progress: Callable[[SpoolState], None] | None = None,
    ) -> list[SpoolState]:
        """Send everything ``paths`` hold undelivered, then return their states (for
        ``ingest --send``). A batch that fails ``tries`` times in a row stops the delivery: the
        server is down, and the spools not tried keep their lines (``problem`` says why)."""
        states = [self.add(path) for path in paths]
        stopped: str | None = None
        for state in states:
            if stopped is not None:
                if state.problem is None and state.undelivered:
                    state.problem = f"not tried: {stopped}"
                continue
            failed = 0
            while True:
                outcome = self.send_batch(state)
                if outcome in (IDLE, BROKEN):
                    break
                if outcome != RETRY:
                    failed = 0
                    if progress is not None:
                        progress(state)
                    continue
                failed += 1
                if failed >= tries:
                    stopped = self.last_problem or "the server does not answer"
                    state.problem = stopped
                    break
                time.sleep(min(max(0.0, self.retry_at - self.clock()), max_wait_s))
        return states


class SendingThread:
    """A sender for a watched job's spool in a daemon thread at low priority: one round of
    batches at once (the server learns of the session), then one every ``interval_s`` (or when
    the back-off says), and after :meth:`finish` a final flush for at most ``final_wait_s``."""

    def __init__(self, sender: SpoolSender, *, interval_s: float, final_wait_s: float) -> None:
        self.sender = sender
        self.interval_s = interval_s
        self.final_wait_s = final_wait_s
        self._ending = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.caught_up = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="turingwatch-sender", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """Start the final flush (the end line is written) and return at once."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.final_wait_s
        self._ending.set()

    def join(self) -> bool:
        """Wait for the final flush until its deadline; whether everything was delivered.

        What is left stays in the spool, with its ``.sent`` offset, for a later sender.
        """
        self.finish()
        if self._thread is not None and self._deadline is not None:
            self._thread.join(max(0.0, self._deadline - time.monotonic()))
        return self.caught_up

    def _run(self) -> None:
        try:  # a busy job should not wait for its watcher
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
        next_at = time.monotonic()
        while not self._ending.wait(max(0.0, next_at - time.monotonic())):
            self._round(None)
            next_at = time.monotonic() + self.interval_s
            if self.sender.failures:
                next_at = self.sender.retry_at
        self._final()

    def _final(self) -> None:
        deadline = self._deadline if self._deadline is not None else time.monotonic()
        while time.monotonic() < deadline:
            if self.sender.due() and self._round(deadline):
                self.caught_up = True
                return
            if self.sender.retry_at >= deadline:
                return
            time.sleep(max(0.0, min(self.sender.retry_at, deadline) - time.monotonic()))

    def _round(self, deadline: float | None) -> bool:
        try:
            return self.sender.send_pending(deadline=deadline)
        except Exception:  # a bug here must cost the sending only, never the job
            log.warning("sending to the server failed; the spool keeps the lines", exc_info=True)
            self._ending.set()
            return False


# -- files ----------------------------------------------------------------------------------
def _open_spool(path: Path) -> int:
    """A spool opened for reading: never through a link, never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def _complete_lines(path: Path, start: int, room: int) -> bytes:
    """The complete lines from ``start``, as many as fit in ``room`` bytes, at least one."""
    with os.fdopen(_open_spool(path), "rb") as f:
        f.seek(start)
        chunk = f.read(room)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return chunk[: cut + 1]
        # One line longer than the room: all of it, if it is complete (the server decides).
        parts = [chunk]
        while chunk:
            chunk = f.read(1 << 20)
            cut = chunk.find(b"\n")
            if cut >= 0:
                parts.append(chunk[: cut + 1])
                return b"".join(parts)
            parts.append(chunk)
        return b""  # only a line still being written (or a torn last one)


def _session_id(line: bytes) -> str | None:
    try:
        head = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(head, dict) and head.get("k") == "session" and isinstance(head.get("session"), dict)):
        return None
    session = head["session"].get("session_id")
    return session if isinstance(session, str) else None


def _read_offset(path: Path, session_id: str | None) -> int:
    """The offset a ``.sent`` file records for this session; 0 when none is usable (missing,
    unreadable, another session's: a spool of the same name from another run)."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return 0
    if not isinstance(record, dict) or record.get("session_id") != session_id:
        return 0
    offset = record.get("offset")
    return offset if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0 else 0


def spools_under(paths: Iterable[Path]) -> list[Path]:
    """The spools (``*.jsonl``) of files and directories, walked without following links;
    dot files (temporaries of a copy) and links are left out."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for root, dirs, files in os.walk(path, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                full = Path(root) / name
                if name.endswith(".jsonl") and not name.startswith(".") and not full.is_symlink():
                    found.append(full)
    return found
