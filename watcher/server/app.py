"""The server's HTTP interface, as a plain WSGI application (cheroot serves it).

  POST /api/v1/samples   one session's spool lines (application/x-ndjson), signed (watcher.auth)
  GET  /healthz          JSON: store, credentials, last import, last analysis, journal backlog
  GET  /metrics          Prometheus text format
  GET  /api/v1/status    JSON: what ``turingwatch status`` prints

An ingest request is checked in this order, each refusal counted and logged, nothing of a
refused batch stored: the size (413), the credential and the body's digest (401), the body's
first line, which must be its session's line (400), who may send for that session (403; 409
for a session that ended), then it is journaled (fsynced) and stored by the applier. The answer
waits briefly for the store: 200 with the lines stored and the duplicates, or 400 with the
loader's line and reason. Should the store be slow, the answer is 200 with ``"queued": true``:
the lines are durable in the journal and will be stored.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from watcher.auth import AuthError, Verifier
from watcher.server.applier import Applier
from watcher.server.journal import Journal, JournalError
from watcher.server.metrics import Metrics
from watcher.server.permissions import Permissions, Refused, StoredSession
from watcher.store import Store
from watcher.store.spool_loader import SpoolRefused

log = logging.getLogger(__name__)

APPLY_WAIT_S = 5.0        # how long an answer waits for the store before it says "queued"
_NDJSON = "application/x-ndjson"
_MAX_NODE_LABELS = 10_000  # sender spool gauges kept (one per node)
_DRAIN_BYTES = 256 * 2**20  # an oversized body is read (and dropped) up to this much

StartResponse = Callable[..., Any]


class IngestApp:
    def __init__(self, *, store: Store, journal: Journal, applier: Applier, verifier: Verifier,
                 permissions: Permissions, metrics: Metrics, max_body_bytes: int,
                 status: Callable[[], dict[str, Any]] | None = None,
                 health: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
                 refresh: Callable[[], object] | None = None) -> None:
        self.store = store
        self.journal = journal
        self.applier = applier
        self.verifier = verifier
        self.permissions = permissions
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.status = status or (lambda: {})
        self.health = health or (lambda: (True, {}))
        self.refresh = refresh or (lambda: None)
        self.closing = False
        # Sessions journaled and not stored yet: whose they are, so that a second batch of a
        # session still in flight meets the same rule as one already stored.
        self._in_flight: dict[str, tuple[StoredSession, int]] = {}
        self._lock = threading.Lock()
        self.rejected_by_reason: dict[str, int] = {}
        self._nodes: set[str] = set()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if path == "/api/v1/samples":
            if method != "POST":
                return _answer(start_response, 405, {"error": "POST spool lines here"},
                               [("Allow", "POST")])
            status, body, headers = self._ingest(environ)
            self.metrics.requests.labels(code=str(status)).inc()
            return _answer(start_response, status, body, headers)
        if method != "GET":
            return _answer(start_response, 405, {"error": f"{path} takes GET"}, [("Allow", "GET")])
        if path == "/healthz":
            ok, facts = self.health()
            return _answer(start_response, 200 if ok else 503, facts)
        if path == "/metrics":
            self.refresh()   # gauges read from outside (the distributor's state)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [self.metrics.render()]
        if path == "/api/v1/status":
            return _answer(start_response, 200, self.status())
        return _answer(start_response, 404, {"error": f"no such page: {path}"})

    # -- ingest ------------------------------------------------------------------------------
    def _ingest(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        if self.closing:
            return 503, {"error": "the server is shutting down; send again later"}, [("Retry-After", "5")]
        kind = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if kind != _NDJSON:
            return self._reject(400, "content_type", f"Content-Type must be {_NDJSON}, not {kind or 'none'}")
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return self._reject(411, "length", "Content-Length is required")
        if length > self.max_body_bytes:
            _drain(environ["wsgi.input"], length)
            return self._reject(413, "too_large", f"the body ({length} bytes) is over the server's "
                                                  f"limit of {self.max_body_bytes} (server.max_body_bytes)")
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if len(body) != length:
            return self._reject(400, "short_body", f"the body ended after {len(body)} of {length} bytes")
        try:
            sender = self.verifier.verify(environ.get("HTTP_AUTHORIZATION"), body)
        except AuthError as exc:
            status = 503 if exc.reason == "unavailable" else 401
            return self._reject(status, exc.reason, str(exc))
        try:
            session = _session_line(body)
        except ValueError as exc:
            return self._reject(400, "malformed", str(exc))
        sid = session["session_id"]
        try:
            self.permissions.check(sender, session, self._stored(sid))
        except Refused as exc:
            return self._reject(exc.status, exc.reason, str(exc), uid=sender.uid)
        self._sender_backlog(environ, session)
        with self._lock:
            known, count = self._in_flight.get(sid, (None, 0))
            self._in_flight[sid] = (known or StoredSession(
                session.get("user_name"), session.get("job_id"), str(session.get("node")), False), count + 1)
        try:
            entry = self.journal.append(sid, sender.uid, body)
        except JournalError as exc:
            self._landed(sid)
            log.error("%s", exc)
            return (503, {"error": "the server cannot keep batches now; send again later"},
                    [("Retry-After", "30")])
        future = self.applier.submit(entry)
        future.add_done_callback(lambda _f: self._landed(sid))   # stored or refused
        try:
            got = future.result(APPLY_WAIT_S)
        except SpoolRefused as exc:
            self._count_rejected("malformed")
            return 400, {"error": str(exc)}, []
        except (FutureTimeout, Exception) as exc:
            if not isinstance(exc, FutureTimeout):
                log.warning("batch %s is journaled but not stored yet: %s", entry.path.name, exc)
            lines = body.count(b"\n") + (not body.endswith(b"\n"))
            return 200, {"accepted": lines, "duplicates": 0, "queued": True}, []
        return 200, {"accepted": got.accepted, "duplicates": got.duplicates}, []

    def _stored(self, sid: str) -> StoredSession | None:
        with self._lock:
            flying = self._in_flight.get(sid)
        if flying is not None:
            return flying[0]
        row = self.store.one("SELECT user_name, job_id, node, ended_at IS NOT NULL FROM sessions"
                             " WHERE session_id = ?", [sid])
        return StoredSession(*row) if row else None

    def _landed(self, sid: str) -> None:
        with self._lock:
            known, count = self._in_flight.get(sid, (None, 0))
            if count <= 1:
                self._in_flight.pop(sid, None)
            else:
                self._in_flight[sid] = (known, count - 1)

    def _sender_backlog(self, environ: dict[str, Any], session: dict[str, Any]) -> None:
        raw = environ.get("HTTP_X_TURINGWATCH_SPOOL_BYTES", "")
        if raw.isdigit() and len(raw) < 16:
            node = str(session.get("node"))[:200]
            with self._lock:
                if node not in self._nodes and len(self._nodes) >= _MAX_NODE_LABELS:
                    return
                self._nodes.add(node)
            self.metrics.sender_spool.labels(node=node).set(int(raw))

    def _reject(self, status: int, reason: str, message: str, *, uid: int | None = None
                ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        self._count_rejected(reason)
        log.warning("ingest refused (%d %s%s): %s", status, reason,
                    f", uid {uid}" if uid is not None else "", message)
        return status, {"error": message}, [("Retry-After", "30")] if status == 503 else []

    def _count_rejected(self, reason: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        with self._lock:
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1


def _drain(stream: Any, length: int) -> None:
    """Read and drop an oversized body (up to a bound), so that a client that sent it whole
    reads the 413 rather than a reset connection."""
    left = min(length, _DRAIN_BYTES)
    while left > 0:
        chunk = stream.read(min(left, 2**20))
        if not chunk:
            return
        left -= len(chunk)


def _session_line(body: bytes) -> dict[str, Any]:
    """The session (its fields) a batch's first line names; ValueError says what is wrong."""
    first = body.split(b"\n", 1)[0]
    try:
        line = json.loads(first)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("line 1: not JSON; a batch starts with its session's line") from None
    if not isinstance(line, dict) or line.get("k") != "session" or not isinstance(line.get("session"), dict):
        raise ValueError("line 1: a batch starts with its session's line")
    session = line["session"]
    sid = session.get("session_id")
    if not isinstance(sid, str) or not sid or len(sid) > 200:
        raise ValueError("line 1: the session line names no session_id")
    job_id = session.get("job_id")
    if job_id is not None and (not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 0):
        raise ValueError("line 1: the session's job_id is not a whole number")
    if session.get("user_name") is not None and not isinstance(session.get("user_name"), str):
        raise ValueError("line 1: the session's user_name is not text")
    return session


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
            413: "Content Too Large", 503: "Service Unavailable"}


def _answer(start_response: StartResponse, status: int, body: dict[str, Any],
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(body, default=str).encode() + b"\n"
    start_response(f"{status} {_REASONS.get(status, 'Error')}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                    ("Cache-Control", "no-store"), *(headers or [])])
    return [data]
