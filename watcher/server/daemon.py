"""``turingwatch server``: the one process that writes the site store.

Start: check that credentials can be verified (munged answers, or the HMAC key is there),
open the store read-write (which makes every other writer wait or fail with a clear message),
store what the journal holds, publish, then listen. Stop (SIGTERM, SIGINT): answer new ingest
requests 503, finish the requests in progress, store what is queued, close the store. A SIGKILL
at any moment loses no acknowledged line: those are in the journal, stored at the next start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcher.auth import AuthError, Verifier
from watcher.config import Config, expand_path
from watcher.errors import TuringwatchError
from watcher.server.app import IngestApp
from watcher.server.applier import Applier
from watcher.server.journal import Journal
from watcher.server.metrics import Metrics
from watcher.server.permissions import Permissions
from watcher.server.schedule import Scheduler
from watcher.slurm.commands import SlurmCommands
from watcher.store import Store

log = logging.getLogger(__name__)


class ServerError(TuringwatchError):
    """The server cannot start: it says what to fix."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServerError(f"server.listen must be host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Server:
    """The parts, wired; ``run()`` serves until stopped. Tests build one and call run in a
    thread, or run the real command in a process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        s = config.server
        try:
            self.verifier = Verifier(config.auth)
            self.credentials = self.verifier.check()
        except (AuthError, TuringwatchError) as exc:
            raise ServerError(f"cannot verify senders ({config.auth.mode}): {exc}; the server"
                              " does not start without a way to tell who sent a batch") from exc
        self.host, self.port = parse_listen(s.listen)
        self.metrics = Metrics()
        self.store = Store.site(config, create=True)
        self.started_at = time.time()
        try:
            self.journal = Journal(expand_path(s.journal_dir))
            self.applier = Applier(self.store, self.journal, self.metrics, workers=s.apply_threads)
            self.permissions = Permissions(config.auth, SlurmCommands.from_config(config.slurm).job_owner)
            self.scheduler = Scheduler(config, self.store, self.metrics)
            self.app = IngestApp(store=self.store, journal=self.journal, applier=self.applier,
                                 verifier=self.verifier, permissions=self.permissions,
                                 metrics=self.metrics, max_body_bytes=s.max_body_bytes,
                                 status=self.status, health=self.health, refresh=self.distributor)
        except BaseException:
            self.store.close()
            raise
        self._wsgi: Any = None
        self._stopped = threading.Event()
        self._marker = Path(self.store.path + ".server.json")

    # -- running ---------------------------------------------------------------------------
    def run(self, *, ready: threading.Event | None = None) -> None:
        from cheroot import wsgi

        replay = self.applier.replay(progress=_replay_progress)
        if replay.batches:
            log.info("journal: stored %d batch(es) a crash left (%d lines new, %d duplicates,"
                     " %d refused) in %.1f s", replay.batches, replay.lines, replay.duplicates,
                     replay.refused, replay.seconds)
        self.applier.start()
        self.scheduler.run_task(self.scheduler.tasks["publish"])
        self._wsgi = wsgi.Server((self.host, self.port), self.app, numthreads=self.config.server.threads,
                                 server_name="turingwatch", timeout=30, shutdown_timeout=10)
        cert, key = self.config.server.tls_cert_file, self.config.server.tls_key_file
        if cert or key:
            self._wsgi.ssl_adapter = _tls(cert, key)
        try:
            self._wsgi.prepare()   # binds: a port in use fails here, before READY
        except OSError as exc:
            self.close()
            raise ServerError(f"cannot listen on {self.config.server.listen}: {exc}") from exc
        self.port = self._wsgi.bind_addr[1]
        self._write_marker()
        self.scheduler.start()
        scheme = "https" if (cert or key) else "http"
        log.info("serving on %s://%s:%d (store %s, credentials %s)", scheme, self.host, self.port,
                 self.store.path, self.credentials)
        _sd_notify("READY=1")
        if ready is not None:
            ready.set()
        try:
            self._wsgi.serve()
        finally:
            self.close()

    def stop(self) -> None:
        """Refuse new batches, let the server's threads finish, end ``run``."""
        self.app.closing = True
        _sd_notify("STOPPING=1")
        if self._wsgi is not None:
            threading.Thread(target=self._wsgi.stop, name="stop", daemon=True).start()

    def close(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.scheduler.stop()
        self.applier.stop()
        self.journal.close()
        self._marker.unlink(missing_ok=True)
        self.store.close()
        log.info("stopped")

    def _write_marker(self) -> None:
        """Tell one-shot commands that meet the store's lock who holds it, and how to reach it."""
        text = json.dumps({"pid": os.getpid(), "listen": f"{self.host}:{self.port}",
                           "started_at": self.started_at})
        try:
            self._marker.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write %s: %s", self._marker, exc)

    # -- what it knows ---------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        facts: dict[str, Any] = {"store": "ok", "credentials": self.credentials}
        ok = True
        try:
            self.store.one("SELECT 1")
        except TuringwatchError as exc:
            ok, facts["store"] = False, str(exc)
        try:
            facts["credentials"] = self.verifier.check()
        except AuthError as exc:
            ok, facts["credentials"] = False, str(exc)
        backlog, lag = self.applier.backlog()
        facts.update(self._last_runs())
        facts["journal"] = {"batches": backlog, "lag_s": round(lag, 1),
                            "bytes": self.journal.backlog_bytes()}
        facts["closing"] = self.app.closing
        return ok and not self.app.closing, facts

    def _last_runs(self) -> dict[str, Any]:
        row = self.store.one("SELECT (SELECT max(finished_at) FROM accounting_imports),"
                             " (SELECT max(analysed_at) FROM analysis_runs)") or (None, None)
        return {"last_import": _iso(row[0]), "last_analysis": _iso(row[1])}

    def status(self) -> dict[str, Any]:
        live = self.store.query(
            "SELECT count(*), count(DISTINCT node) FROM sessions WHERE ended_at IS NULL"
            " AND started_at > now() - INTERVAL 7 DAY")[0]
        periods = self.store.query(
            "SELECT period_id, analysed_at, users, jobs, findings FROM analysis_runs"
            " WHERE user_scope = '*' ORDER BY period_start DESC LIMIT 6")
        result_dir = expand_path(self.config.analysis.result_dir)
        bundles = sorted(p.name for p in result_dir.glob("*.tar.gz")) if result_dir.is_dir() else []
        backlog, lag = self.applier.backlog()
        spool = {sample.labels["node"]: int(sample.value)
                 for metric in self.metrics.sender_spool.collect() for sample in metric.samples}
        return {
            "server": {"pid": os.getpid(), "listen": f"{self.host}:{self.port}",
                       "started_at": _iso(self.started_at), "store": self.store.path,
                       "credentials": self.credentials},
            "sessions_live": live[0], "nodes_live": live[1],
            **self._last_runs(),
            "ingest": {"lines": self.applier.lines_stored,
                       "duplicates": self.applier.duplicates_seen,
                       "lines_per_s": round(self.applier.lines_stored
                                            / max(1.0, time.time() - self.started_at), 1),
                       "rejected": dict(self.app.rejected_by_reason)},
            "journal": {"batches": backlog, "lag_s": round(lag, 1), "bytes": self.journal.backlog_bytes()},
            "sender_spool_bytes": spool,
            "tasks": self.scheduler.describe(),
            "periods": [{"period": p, "analysed_at": _iso(at), "users": u, "jobs": j, "findings": f}
                        for p, at, u, j, f in periods],
            "bundles": bundles,
            "distributor": self.distributor(),
        }

    def distributor(self) -> dict[str, Any] | None:
        """What a distributor on this host last wrote of itself (distributor.state_dir)."""
        from watcher.distributor.loop import STATE_FILE, read_state

        try:
            facts = read_state(expand_path(self.config.distributor.state_dir) / STATE_FILE)
        except (OSError, ValueError):
            return None
        for state in ("running", "pending"):
            if isinstance(facts.get(state), int):
                self.metrics.distributor_jobs.labels(state=state).set(facts[state])
        return facts


def serve(config: Config) -> None:
    """The command: run until SIGTERM or SIGINT."""
    server = Server(config)

    def stop(signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.run()


def _tls(cert: str, key: str) -> Any:
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    if not (cert and key):
        raise ServerError("TLS needs both server.tls_cert_file and server.tls_key_file")
    try:
        adapter = BuiltinSSLAdapter(str(expand_path(cert)), str(expand_path(key)))
    except (OSError, ssl.SSLError) as exc:
        raise ServerError(f"cannot load the TLS certificate or key: {exc}") from exc
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter


def _replay_progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total > 20:
        print(f"\rjournal: {done}/{total} batches stored", end="" if done < total else "\n",
              file=sys.stderr, flush=True)


def _sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how the service stands; nothing outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", state, exc)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.isoformat(timespec="seconds")
