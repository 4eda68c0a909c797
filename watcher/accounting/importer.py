"""Import sacct records into the store's ``jobs`` and ``job_steps``, one window at a time.

Each window is one sacct call (or one file) and one transaction: its records are split in
Python (parsable.py), loaded as text into a staging table, converted and checked in SQL
(convert.sql, stage.sql, check.sql) and only then written (upsert.sql), together with the
window's row in ``accounting_imports``. A bad record or a crash leaves the store as it was
before that window; windows already finished stay, and the next run carries on after them.
"""

from __future__ import annotations

import time
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import duckdb
import numpy as np

from watcher.accounting import AccountingError
from watcher.accounting.parsable import SacctFormatError, SacctReader
from watcher.accounting.sacct import (
    FIELDS,
    run_sacct,
    sacct_command,
    slurm_cluster_name,
)
from watcher.config import Config
from watcher.store import Store, sql_text

_PACKAGE = "watcher.accounting"


@dataclass(frozen=True)
class WindowResult:
    """One imported window: its bounds and what it held."""

    cluster: str
    start: datetime
    end: datetime
    records: int        # sacct lines (jobs and steps), before duplicates are dropped
    jobs: int
    steps: int
    seconds: float


@dataclass
class ImportResult:
    cluster: str
    as_user: str | None           # None: every user's jobs
    windows: list[WindowResult] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return sum(w.jobs for w in self.windows)

    @property
    def steps(self) -> int:
        return sum(w.steps for w in self.windows)

    @property
    def records(self) -> int:
        return sum(w.records for w in self.windows)


Progress = Callable[[WindowResult], None]


def import_accounting(
    store: Store,
    config: Config,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    user: str | None = None,
    source_file: str | Path | TextIO | None = None,
    timezone: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Import jobs and steps that were pending or running between ``since`` and ``until``.

    From sacct (the default): ``until`` defaults to now and ``since`` to where the last
    import of this cluster and user ended, less ``slurm.import_overlap_minutes`` (on a
    first run, ``slurm.import_first_days`` back). The span is cut into windows of
    ``slurm.import_chunk_days``, each committed on its own. ``user=None`` imports every
    user's jobs, a name only that user's.

    From ``source_file`` (a path, ``"-"`` for stdin, or an open text file) holding sacct
    output with its header: one window, ``[since, until]`` when given, else the span of
    the records' times; the times are read in ``timezone`` (default: this machine's).
    """
    settings = config.slurm
    if source_file is not None:
        tz = _checked_zone(timezone or _local_zone(store))
        cluster = settings.cluster or None
        name, text = _read_source(source_file)
        window = load_sacct_output(
            store, text, cluster=cluster, timezone=tz, since=since, until=until,
            as_user=user, source=name,
        )  # fmt: skip
        result = ImportResult(window.cluster if window else cluster or "", user)
        if window is not None:
            result.windows.append(window)
            if progress:
                progress(window)
        return result

    cluster = settings.cluster or slurm_cluster_name(settings.scontrol)
    now = datetime.now(UTC)
    until = (until or now).astimezone(UTC)
    if since is None:
        last = last_imported(store, cluster, user)
        since = (
            last - timedelta(minutes=settings.import_overlap_minutes)
            if last is not None
            else now - timedelta(days=settings.import_first_days)
        )
    since = since.astimezone(UTC)
    if since >= until:
        raise AccountingError(f"nothing to import: since {since} is not before until {until}")
    result = ImportResult(cluster, user)
    for start, end in windows(since, until, timedelta(days=settings.import_chunk_days)):
        text = run_sacct(sacct_command(settings.sacct, start, end, user=user))
        window = load_sacct_output(
            store, text, cluster=cluster, timezone="UTC", since=start, until=end,
            as_user=user, source="sacct",
        )  # fmt: skip
        assert window is not None  # since/until given: always recorded
        result.windows.append(window)
        if progress:
            progress(window)
    return result


def windows(
    since: datetime, until: datetime, length: timedelta
) -> Iterable[tuple[datetime, datetime]]:
    """[since, until) cut into consecutive windows of at most ``length``."""
    start = since
    while start < until:
        end = min(start + length, until)
        yield start, end
        start = end


def last_imported(store: Store, cluster: str, user: str | None) -> datetime | None:
    """Where the last finished import for this cluster ended; an all-users import also
    counts for each single user."""
    row = store.execute(
        "SELECT max(window_end) FROM accounting_imports"
        " WHERE cluster = ? AND (as_user IS NULL OR as_user = ?)"
        if user is not None
        else "SELECT max(window_end) FROM accounting_imports"
        " WHERE cluster = ? AND as_user IS NULL",
        [cluster, user] if user is not None else [cluster],
    ).fetchone()
    return row[0] if row else None


def load_sacct_output(
    store: Store,
    text: str | Iterable[str],
    *,
    fields: Sequence[str] | None = None,
    cluster: str | None = None,
    timezone: str = "UTC",
    since: datetime | None = None,
    until: datetime | None = None,
    as_user: str | None = None,
    source: str = "sacct",
) -> WindowResult | None:
    """Store one sacct output as one window, all or nothing.

    ``fields`` names the fields of output made with ``--noheader``; without them the
    first line is the header.
    ``cluster=None`` takes the cluster from the records' Cluster field. Without
    ``since``/``until`` the window is the span of the records' times; output with no
    records and no window given records nothing and returns None.
    """
    began = time.perf_counter()
    reader = SacctReader(text, fields)
    records: list[list[str]] = []
    lines: list[int] = []
    for record in reader:  # raises SacctFormatError naming the line
        records.append(record)
        lines.append(reader.line)

    conn = store.conn
    with store.transaction():
        try:
            jobs = steps = 0
            if records:
                conn.register("sacct_raw", _raw_columns(reader.fields, records, lines))
                try:
                    conn.execute("SET VARIABLE sacct_tz = ?", [timezone])
                    conn.execute(sql_text(_PACKAGE, "convert.sql"))
                    conn.execute(sql_text(_PACKAGE, "stage.sql"))
                finally:
                    conn.unregister("sacct_raw")
                _check(conn)
                cluster = cluster or _cluster_of_records(conn)
                conn.execute("SET VARIABLE sacct_cluster = ?", [cluster])
                conn.execute(sql_text(_PACKAGE, "upsert.sql"))
                jobs, steps = conn.execute(
                    "SELECT count(*) FILTER (step IS NULL), count(*) FILTER (step IS NOT NULL)"
                    " FROM sacct_latest"
                ).fetchone()
                if since is None or until is None:
                    first, last = conn.execute(
                        "SELECT min(least(submit_time, start_time, end_time)),"
                        " max(greatest(submit_time, start_time, end_time)) FROM sacct_stage"
                    ).fetchone()
                    since, until = since or first, until or last
            if since is None or until is None:
                return None
            if cluster is None:
                raise AccountingError("no cluster name: set slurm.cluster")
            conn.execute(
                "INSERT INTO accounting_imports"
                " (cluster, window_start, window_end, jobs, steps, as_user, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [cluster, since, until, jobs, steps, as_user, source],
            )
        except duckdb.Error as exc:
            raise AccountingError(f"storing the sacct records failed: {exc}") from exc
    return WindowResult(
        cluster, since, until, len(records), jobs, steps, time.perf_counter() - began
    )


def _raw_columns(
    fields: list[str], records: list[list[str]], lines: list[int]
) -> dict[str, np.ndarray]:
    """One object array per sacct field we use (None where the output lacks the field)."""
    by_name = dict(zip(fields, zip(*records, strict=True), strict=True))
    empty = np.full(len(records), None, dtype=object)
    raw = {
        name.lower(): np.array(by_name[name], dtype=object) if name in by_name else empty
        for name in FIELDS
    }
    raw["line"] = np.array(lines, dtype=np.int64)
    return raw


def _check(conn: duckdb.DuckDBPyConnection) -> None:
    bad = conn.execute(sql_text(_PACKAGE, "check.sql")).fetchone()
    if bad is not None:
        line, name, text = bad
        raise SacctFormatError(line, f"cannot read {name} {text!r}")


def _cluster_of_records(conn: duckdb.DuckDBPyConnection) -> str:
    names = [r[0] for r in conn.execute(
        "SELECT DISTINCT cluster FROM sacct_stage WHERE cluster IS NOT NULL ORDER BY 1"
    ).fetchall()]  # fmt: skip
    if len(names) != 1:
        found = ", ".join(names) if names else "none"
        raise AccountingError(
            f"the records name {len(names)} clusters ({found}): set slurm.cluster, "
            "or import one cluster's records at a time"
        )
    return names[0]


def _read_source(source: str | Path | TextIO) -> tuple[str, str]:
    """(name, text) of a file, '-' for stdin, or an open text file."""
    if isinstance(source, str | Path):
        if str(source) == "-":
            import sys

            return "stdin", sys.stdin.read()
        try:
            with open(source, encoding="utf-8", errors="replace", newline="") as f:
                return str(source), f.read()
        except OSError as exc:
            raise AccountingError(f"cannot read {source}: {exc.strerror}") from None
    return getattr(source, "name", "file"), source.read()


def _local_zone(store: Store) -> str:
    """This machine's time zone, as DuckDB found it."""
    return store.execute("SELECT current_setting('TimeZone')").fetchone()[0]


def _checked_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise AccountingError(f"unknown time zone {name!r}") from None
    return name
