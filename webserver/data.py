"""What the web site reads: the generation the server published last, and nothing else.

The server publishes generations under ``server.publish_dir`` (watcher/store/publish.py):
``current`` names the newest, each holds a read-only ``snapshot.duckdb`` and the period
bundles. :class:`PublishedSite` resolves ``current`` on every request (one ``readlink``) and,
when it names a new generation, opens that one (in a thread, the site answering from the
one before meanwhile); requests already running keep the
:class:`Generation` they started with, and the one before it is closed only once a newer one
replaced it too, so a swap never pulls a snapshot from under a reader. No restart is needed.

A :class:`Generation` opens its snapshot read-only (:class:`watcher.store.Store`), and keeps
a small pool of cursors, each holding the per-job and per-period TEMP tables the pages read
(queries.sql ``prepare_*``) and caches what is costly to rebuild (a job's samples,
its charts, a letter) per key, bounded. Everything a generation says is one consistent view.

Authorization lives here, not in the pages: every method that returns a user's data takes
``user`` (the viewer's name, or None for an admin who sees everyone) and filters by it, and a
job, letter or period the viewer may not see is reported exactly like one that does not exist.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from queue import Empty, LifoQueue
from typing import Any, TypeVar

import duckdb

from watcher.errors import TuringwatchError
from watcher.letters import RenderedLetter
from watcher.letters.bundle import BundleError, check_period_id, open_bundle
from watcher.store import Cursor, Store, StoreError, named_statements
from watcher.store.published import CURRENT, current_generation

log = logging.getLogger(__name__)
T = TypeVar("T")

SORTS = {  # the job list's orders: key -> ORDER BY
    "recent": "sort_time DESC NULLS LAST, cluster, job_id DESC",
    "idle_core_hours": "idle_core_hours DESC NULLS LAST, sort_time DESC NULLS LAST, job_id DESC",
    "idle_gpu_hours": "idle_gpu_hours DESC NULLS LAST, sort_time DESC NULLS LAST, job_id DESC",
}
# The layout of a generation (watcher/store/publish.py writes it; the web floor may not import
# the writer, see webserver/ruff.toml): tests/test_web_data.py checks the two agree.
SNAPSHOT = "snapshot.duckdb"
BUNDLES = "bundles"
CACHE_ENTRIES = 512  # per generation: job details, charts, page bodies (tens of kB each)
POOL = 3  # prepared cursors per generation at most


class DataError(TuringwatchError):
    """Nothing published to read yet, or a publication that cannot be read."""


@dataclass(frozen=True)
class JobQuery:
    """The job list's filters, order and page, as the page and the API take them."""

    period: str | None = None
    state: str | None = None
    rule: str | None = None
    name: str | None = None
    sort: str = "recent"
    page: int = 1
    page_size: int = 50


@dataclass
class JobPage:
    rows: list[dict[str, Any]]
    total: int
    query: JobQuery

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.page_size))


@dataclass
class JobDetail:
    """Everything a job's page shows beyond its accounting row."""

    sessions: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    processes: list[dict[str, Any]]
    # (node, step) -> [(seconds since the job's first sample, value)] per measure
    cores: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    memory: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    io: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    # "node GPU i" -> points
    gpu_util: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    gpu_memory: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    gpu_power: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    mem_requested_bytes: float | None = None   # per node, as the sessions say
    gpu_memory_total: float | None = None

    @property
    def sampled(self) -> bool:
        return bool(self.sessions)


def _statements() -> dict[str, str]:
    return named_statements("webserver", "queries.sql")


class Generation:
    """One published generation, opened read-only, with its per-key cache."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        try:
            self.manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the publication {path}: {exc}") from exc
        self.number = int(self.manifest.get("generation", 0))
        self.sql = _statements()
        try:
            self.store = Store(path / SNAPSHOT, read_only=True)
        except StoreError as exc:
            raise DataError(f"cannot open the published snapshot of {path}: {exc}") from exc
        self._cursors = ExitStack()  # every cursor made, closed with the generation
        self._pool: LifoQueue[Cursor] = LifoQueue()
        self._made = 0
        self._growing = 0
        self._pool_lock = threading.Lock()
        try:
            self._pool.put(self._prepared())  # the first now: a broken snapshot fails here
        except BaseException:
            self.close()
            raise
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[Any, ...], threading.Lock] = {}

    def close(self) -> None:
        with self._pool_lock:
            self._cursors.close()
        self.store.close()

    def _prepared(self) -> Cursor:
        """A new cursor with the per-job and per-period TEMP tables (a cursor's own: DuckDB
        keeps TEMP tables per connection, and allows no other table beside a read-only one)."""
        with self._pool_lock:
            cur = self._cursors.enter_context(self.store.cursor())
            self._made += 1
        try:
            for name in ("prepare_jobs", "prepare_periods"):
                cur.execute(self.sql[name])
        except duckdb.Error as exc:
            raise DataError(f"cannot read the published snapshot of {self.path}: {exc}") from exc
        return cur

    @contextmanager
    def _cursor(self) -> Iterator[Cursor]:
        """A prepared cursor of the pool, for one thread at a time; another is made while all
        are busy and fewer than POOL exist (most requests are served from the caches)."""
        try:
            cur = self._pool.get_nowait()
        except Empty:
            self._grow()
            cur = self._pool.get()  # the first one freed, or the one being made
        try:
            yield cur
        finally:
            self._pool.put(cur)

    def _grow(self) -> None:
        """Make one more cursor in a thread, if the pool may grow: preparing takes as long as
        opening the generation did, which no request should wait for when another cursor
        will be free in milliseconds."""
        with self._pool_lock:
            if self._made + self._growing >= POOL:
                return
            self._growing += 1

        def build() -> None:
            try:
                self._pool.put(self._prepared())
            except DataError:
                log.exception("cannot prepare another cursor of %s", self.path)
            finally:
                with self._pool_lock:
                    self._growing -= 1

        threading.Thread(target=build, daemon=True, name=f"cursor {self.name}").start()

    # -- plumbing -----------------------------------------------------------------------------
    def rows(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """The rows of statement ``name`` as dicts."""
        return self._rows(self.sql[name], params)

    def _rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            try:
                result = cur.execute(sql, params)
                names = [d[0] for d in result.description]
                return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
            except duckdb.Error as exc:
                raise DataError(f"cannot read {self.path}: {exc}") from exc

    def cached(self, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        """``build()`` once per key in this generation; concurrent callers of one key wait for
        the first rather than all building it (50 clients opening one new job page)."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            value = build()
            with self._lock:
                self._cache[key] = value
                self._building.pop(key, None)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
            return value

    @property
    def published_at(self) -> datetime | None:
        text = self.manifest.get("published_at")
        return datetime.fromisoformat(text) if text else None

    # -- a user's data -----------------------------------------------------------------------
    def periods(self, user: str | None) -> list[dict[str, Any]]:
        return self.cached(("periods", user), lambda: self.rows("periods", user=user))

    def period(self, period_id: str, user: str | None) -> dict[str, Any] | None:
        found = self.rows("period", period=period_id, user=user)
        return found[0] if found else None

    def job_filters(self, user: str | None) -> dict[str, list[str]]:
        def build() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {"state": [], "rule": [], "period": []}
            for row in self.rows("job_filters", user=user):
                if row["value"] is not None:
                    out[row["kind"]].append(row["value"])
            out["period"].sort(reverse=True)
            return out

        return self.cached(("filters", user), build)

    def jobs(self, user: str | None, query: JobQuery) -> JobPage:
        """One page of the viewer's jobs, filtered and sorted as ``query`` says."""
        start = end = None
        if query.period:
            bounds = self.period(query.period, user)
            if bounds is None:  # a period the viewer has no jobs in: an empty list
                return JobPage([], 0, query)
            start, end = bounds["period_start"], bounds["period_end"]
        params = {"user": user, "state": query.state or None, "rule": query.rule or None,
                  "name": query.name or None, "start": start, "end": end}
        where = self.sql["jobs_where"]
        order = SORTS.get(query.sort, SORTS["recent"])
        total = self._rows(f"SELECT count(*) AS n FROM tw_jobs {where}", params)[0]["n"]
        offset = (max(1, query.page) - 1) * query.page_size
        rows = self._rows(
            f"SELECT * FROM tw_jobs {where} ORDER BY {order}"
            f" LIMIT {int(query.page_size)} OFFSET {int(offset)}", params)
        return JobPage(rows, int(total), query)

    def latest_jobs(self, user: str | None, limit: int = 10) -> list[dict[str, Any]]:
        return self.cached(("latest", user, limit),
                           lambda: self.jobs(user, JobQuery(page_size=limit)).rows)

    def job(self, cluster: str, job_id: int, user: str | None) -> dict[str, Any] | None:
        """The job's row, or None when there is none the viewer may see."""
        def build() -> dict[str, Any] | None:
            found = self.rows("job", cluster=cluster, job_id=job_id, user=user)
            return found[0] if found else None

        return self.cached(("job", cluster, job_id, user), build)

    def job_detail(self, cluster: str, job_id: int) -> JobDetail:
        """Samples, steps, findings and processes of a job: call only after :meth:`job`
        said the viewer may see it (this one does not filter)."""
        return self.cached(("detail", cluster, job_id), lambda: self._detail(cluster, job_id))

    def _detail(self, cluster: str, job_id: int) -> JobDetail:
        key = {"cluster": cluster, "job_id": job_id}
        sessions = self.rows("job_sessions", **key)
        findings = self.rows("job_findings", **key)
        for f in findings:
            f["metrics"] = json.loads(f["metrics"]) if isinstance(f["metrics"], str) else {}
        detail = JobDetail(sessions, self.rows("job_steps", **key), findings, [])
        if not sessions:
            return detail
        ids = {f"s{i}": s["session_id"] for i, s in enumerate(sessions)}

        def of_sessions(name: str) -> list[dict[str, Any]]:
            sql = self.sql[name].replace("{sessions}", ", ".join(f"${k}" for k in ids))
            return self._rows(sql, ids)

        detail.processes = of_sessions("top_processes")
        requested = [s["mem_requested_bytes"] for s in sessions if s["mem_requested_bytes"]]
        detail.mem_requested_bytes = max(requested) if requested else None
        t0 = min(s["started_at"] for s in sessions).timestamp()
        for row in of_sessions("step_series"):
            label = f"{row['node']} {row['step']}"
            t = row["t"] - t0
            detail.cores.setdefault(label, []).append((t, row["cores"]))
            detail.memory.setdefault(label, []).append((t, row["mem_bytes"]))
            detail.io.setdefault(label, []).append((t, row["io_bytes_s"]))
        totals = []
        for row in of_sessions("gpu_series"):
            label = f"{row['node']} GPU {row['gpu_index']}"
            t = row["t"] - t0
            detail.gpu_util.setdefault(label, []).append((t, row["util_pct"]))
            detail.gpu_memory.setdefault(label, []).append((t, row["mem_used_bytes"]))
            detail.gpu_power.setdefault(label, []).append((t, row["power_w"]))
            if row["mem_total_bytes"]:
                totals.append(row["mem_total_bytes"])
        detail.gpu_memory_total = max(totals) if totals else None
        return detail

    def letter(self, period_id: str, user: str) -> RenderedLetter | None:
        """``user``'s letter of the period from its bundle, or None (no bundle, no letter)."""
        try:
            check_period_id(period_id)
        except BundleError:
            return None
        return self.cached(("letter", period_id, user), lambda: self._letter(period_id, user))

    def _letter(self, period_id: str, user: str) -> RenderedLetter | None:
        path = self.path / BUNDLES / f"{period_id}.tar.gz"
        if not path.is_file():
            return None
        try:
            bundle = open_bundle(path)
            return next(iter(bundle.letters(only=[user])), None)
        except BundleError as exc:
            log.warning("%s", exc)
            return None

    def letter_periods(self) -> set[str]:
        """The periods that have a bundle in this generation."""
        def build() -> set[str]:
            folder = self.path / BUNDLES
            if not folder.is_dir():
                return set()
            return {p.name.removesuffix(".tar.gz") for p in folder.glob("*.tar.gz")}

        return self.cached(("bundles",), build)

    # -- admins' views -----------------------------------------------------------------------
    def admin(self, name: str) -> list[dict[str, Any]]:
        """findings_per_rule, findings_per_user, top_wasters, utilization, freshness, users."""
        if name not in {"findings_per_rule", "findings_per_user", "top_wasters", "utilization",
                        "freshness", "users"}:
            raise KeyError(name)
        return self.cached(("admin", name), lambda: self.rows(name))


class PublishedSite:
    """The publish directory, and the generation it publishes now.

    With ``background`` (the site), a new generation is opened in a thread while requests
    keep being answered from the one before (opening prepares its tables: seconds for a
    large week); without it (tests, scripts), :meth:`current` opens it before it returns.
    """

    def __init__(self, publish_dir: Path | str, *, background: bool = False) -> None:
        self.publish_dir = Path(publish_dir)
        self.background = background
        self._lock = threading.Lock()
        self._current: Generation | None = None
        self._target: str | None = None
        self._previous: Generation | None = None
        self._opening: str | None = None  # the target being opened in the background

    def current(self) -> Generation:
        """The generation ``current`` names now (or, while it opens, the one before)."""
        try:
            target = os.readlink(self.publish_dir / CURRENT)
        except OSError:
            target = None  # a gen-NNNNNN directory given itself, or nothing published yet
        with self._lock:
            if self._current is not None and target == self._target and target is not None:
                return self._current
            try:
                path = current_generation(self.publish_dir)
            except StoreError as exc:
                raise DataError(str(exc)) from exc
            if self._current is not None and self._current.path == path:
                self._target = target
                return self._current
            if self._current is not None and self.background:
                if self._opening != target:
                    self._opening = target
                    threading.Thread(target=self._open, args=(path, target), daemon=True,
                                     name=f"open {path.name}").start()
                return self._current
        return self._open(path, target)

    def _open(self, path: Path, target: str | None) -> Generation:
        try:
            opened = Generation(path)
        except DataError:
            with self._lock:
                self._opening = None
            if self._current is None or not self.background:
                raise
            log.exception("cannot open %s; still serving %s", path, self._current.path)
            return self._current
        log.info("reading publication %s", path)
        with self._lock:
            if self._current is not None and self._current.path == path:
                opened.close()  # another request opened it meanwhile
                return self._current
            if self._previous is not None:
                # Two swaps ago: requests that started on it have long finished.
                self._previous.close()
            self._previous, self._current, self._target = self._current, opened, target
            self._opening = None
            return opened

    def close(self) -> None:
        with self._lock:
            for g in (self._previous, self._current):
                if g is not None:
                    g.close()
            self._previous = self._current = None
