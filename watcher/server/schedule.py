"""The server's timetable: accounting import, period analysis and bundles, mail, publishing.

One thread runs the tasks one after another, so an import and an analysis never compete for
the store's write lock with each other (ingest still does, between their transactions). Each
task's interval is a ``[server]`` setting; 0 turns it off. A task that fails is logged and
counted (``turingwatch_task_failures_total{task}``) and tried again at its next turn: nothing
it did before is lost, since each task commits all or nothing.

- ``import``: sacct since the last import (less the overlap), every ``import_interval_s``.
- ``analysis``: once a period has closed, its analysis and bundle (and, with
  ``server.mail_letters``, its letters, exactly once through the mailer's ledger); and every
  ``refresh_interval_s`` the open period's, so the site shows this week so far.
- ``publish``: the snapshot and Parquet for readers, at start and every ``publish_interval_s``
  when something changed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcher.config import Config, expand_path
from watcher.errors import TuringwatchError
from watcher.server.metrics import Metrics
from watcher.store import Store

log = logging.getLogger(__name__)


@dataclass
class TaskState:
    name: str
    interval_s: float
    run: Callable[[], str]
    last_started: float = 0.0      # monotonic
    last_ok_at: float | None = None  # epoch seconds
    last_error: str | None = None
    last_said: str = ""
    runs: int = 0
    failures: int = 0
    min_gap_s: float = 0.0           # the task's own say on how soon it may run again

    def due(self, now: float) -> bool:
        gap = max(self.interval_s, self.min_gap_s)
        return self.interval_s > 0 and (self.runs == 0 or now - self.last_started >= gap)


@dataclass
class Scheduler:
    config: Config
    store: Store
    metrics: Metrics
    tasks: dict[str, TaskState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.config.server
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publication: Any = None   # the last Publication: what it saw of the store
        self._analysed: set[str] = set()   # closed periods analysed by this server run
        self._refreshed: float | None = None   # when the open period was last analysed
        for name, interval, run in (
            ("import", s.import_interval_s, self.import_accounting),
            ("analysis", min(s.refresh_interval_s or 3600.0, 300.0), self.analyse),
            ("publish", s.publish_interval_s, self.publish),
        ):
            self.tasks[name] = TaskState(name, interval, run)

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for task in self.tasks.values():
                if self._stop.is_set():
                    return
                if task.due(now):
                    self.run_task(task)
            self._stop.wait(1.0)

    def run_task(self, task: TaskState) -> None:
        task.last_started = time.monotonic()
        task.runs += 1
        try:
            said = task.run()
        except (TuringwatchError, OSError) as exc:
            task.failures += 1
            task.last_error = str(exc)
            self.metrics.task_failures.labels(task=task.name).inc()
            log.error("%s failed (tried again in %.0f s): %s", task.name, task.interval_s, exc)
        except Exception as exc:   # a bug in one task must not stop the timetable
            task.failures += 1
            task.last_error = f"{type(exc).__name__}: {exc}"
            self.metrics.task_failures.labels(task=task.name).inc()
            log.exception("%s failed", task.name)
        else:
            task.last_ok_at, task.last_error = time.time(), None
            if said:
                task.last_said = said
                log.info("%s: %s", task.name, said)

    # -- the tasks -------------------------------------------------------------------------
    def import_accounting(self) -> str:
        from watcher.accounting.importer import import_accounting

        result = import_accounting(self.store, self.config)
        self.metrics.last_import.set(time.time())
        return f"{result.jobs} jobs, {result.steps} steps of cluster {result.cluster}"

    def analyse(self) -> str:
        """The last closed period, once; the open one every ``refresh_interval_s``."""
        from watcher.analysis.periods import parse_period

        a = self.config.analysis
        closed = parse_period("previous", a.period, a.timezone)
        said = []
        if closed.id not in self._analysed and not self._analysed_after_end(closed):
            said.append(self._analyse_period(closed, mail=self.config.server.mail_letters))
        self._analysed.add(closed.id)
        refresh = self.config.server.refresh_interval_s
        if refresh > 0 and (self._refreshed is None or time.monotonic() - self._refreshed >= refresh):
            self._refreshed = time.monotonic()
            said.append(self._analyse_period(parse_period("current", a.period, a.timezone), mail=False))
        return "; ".join(said)

    def _analysed_after_end(self, period: Any) -> bool:
        row = self.store.one("SELECT max(analysed_at) FROM analysis_runs WHERE period_id = ?"
                             " AND user_scope = '*'", [period.id])
        return bool(row and row[0] is not None and row[0] >= period.end)

    def _analyse_period(self, period: Any, *, mail: bool) -> str:
        from watcher.analysis.engine import analyze_period
        from watcher.letters.bundle import SkippedLetters, write_bundle

        reports = analyze_period(self.store, self.config, period)
        self.metrics.last_analysis.set(time.time())
        try:
            path = write_bundle(self.config, period, reports)
        except SkippedLetters as exc:   # the bundle is written without those letters
            log.error("%s", exc)
            path = expand_path(self.config.analysis.result_dir) / f"{period.id}.tar.gz"
        said = f"period {period.id}: {len(reports)} users, bundle {path.name}"
        if mail:
            said += "; " + self._mail(path, period.id)
        return said

    def _mail(self, bundle: Path, period_id: str) -> str:
        from watcher.letters.bundle import open_bundle
        from watcher.mailer.delivery import Deliverer
        from watcher.mailer.ledger import Ledger, ledger_path
        from watcher.mailer.smtp import SmtpSession

        opened = open_bundle(bundle)
        with Ledger(ledger_path(self.config)) as ledger, SmtpSession(self.config.mail) as smtp:
            report = Deliverer(self.config, ledger=ledger, smtp=smtp).deliver(opened.letters(opened.users))
        for line in report.summary():
            log.info("mail %s: %s", period_id, line)
        return f"mail: {'all sent' if report.ok else 'some letters failed (see above)'}"

    def publish(self) -> str:
        from watcher.store.publish import changed_since, publish

        if not changed_since(self.store, self._publication):
            return ""
        done = publish(self.store, expand_path(self.config.server.publish_dir),
                       bundles_dir=expand_path(self.config.analysis.result_dir))
        self._publication = done
        # A whole generation is rewritten each time: on a large store that takes minutes, and
        # publishing must not take more than a fifth of the server's time.
        self.tasks["publish"].min_gap_s = 5 * done.seconds
        self.metrics.last_publish.set(time.time())
        return f"published {done.generation.name} in {done.seconds:.1f} s"

    def describe(self) -> dict[str, Any]:
        return {name: {"interval_s": t.interval_s, "runs": t.runs, "failures": t.failures,
                       "last_ok_at": _iso(t.last_ok_at), "last_error": t.last_error,
                       "last": t.last_said}
                for name, t in self.tasks.items()}


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
