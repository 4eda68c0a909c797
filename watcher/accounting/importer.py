"""Import sacct records into the store's ``jobs`` and ``job_steps``, one window at a time.

Each window is one sacct call (or one file) and one transaction: its records are put one
a line in Python (parsable.py), handed to DuckDB whole, split into fields, converted and
checked there (convert.sql, stage.sql) and only then written (upsert.sql), together with
the window's row in ``accounting_imports``. A bad record or a crash leaves the store as it was
before that window; windows already finished stay, and the next run carries on after them.
"""

from __future__ import annotations

import sys
import time
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import duckdb

from watcher.accounting import AccountingError
from watcher.accounting.parsable import (
    FREE_TEXT,
    NEWLINE,
    Layout,
    SacctFormatError,
    registered_records,
)
from watcher.config import Config
from watcher.slurm.commands import SlurmCommands
from watcher.slurm.sacct import DELIMITER, FIELDS, sacct_arguments
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

    slurm = SlurmCommands.from_config(settings)
    cluster = settings.cluster or slurm.cluster_name()
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
        text = slurm.run_sacct(sacct_arguments(start, end, user=user))
        window = load_sacct_output(
            store, text, cluster=cluster, timezone="UTC", since=start, until=end,
            as_user=user, source="sacct",
        )  # fmt: skip
        assert window is not None  # a window given is always recorded
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
    (last,) = store.one(
        "SELECT max(window_end) FROM accounting_imports"
        " WHERE cluster = ? AND (as_user IS NULL OR as_user IS NOT DISTINCT FROM ?)",
        [cluster, user],
    )
    return last


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
    """Store one sacct output as one window, all or nothing; the window is recorded in
    ``accounting_imports``.

    ``fields`` names the fields of output made with ``--noheader``; without them the
    first line is the header. ``cluster=None`` takes the cluster from the records' Cluster
    field. Without ``since``/``until`` the window is the span of the records' times (the
    import's time where they have none); output without records and without a window
    changes nothing and returns None. Raises SacctFormatError naming the line of a record
    that cannot be read, AccountingError when the store refuses the records.
    """
    began = time.perf_counter()
    with store.transaction() as conn:
        try:
            records = _stage(conn, text, fields, timezone)  # or SacctFormatError
            jobs = steps = 0
            if records:
                cluster = cluster or _cluster_of_records(conn)
                conn.execute("SET VARIABLE sacct_cluster = ?", [cluster])
                conn.execute(sql_text(_PACKAGE, "upsert.sql"))
                jobs, steps, first, last = _one(
                    conn,
                    "SELECT count(*) FILTER (step IS NULL), count(*) FILTER (step IS NOT NULL),"
                    " min(least(submit_time, start_time, end_time)),"
                    " max(greatest(submit_time, start_time, end_time)) FROM sacct_stage",
                )
                imported = datetime.now(UTC)
                since, until = since or first or imported, until or last or imported
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
    return WindowResult(cluster, since, until, records, jobs, steps, time.perf_counter() - began)


def _stage(
    conn: duckdb.DuckDBPyConnection,
    text: str | Iterable[str],
    fields: Sequence[str] | None,
    timezone: str,
) -> int:
    """Split, convert and check the records into ``sacct_stage``; return how many."""
    with registered_records(conn, text, fields) as layout:
        (records,) = _one(conn, "SELECT count(*) FROM sacct_records")
        if records:
            conn.execute(_raw_view(layout))
            conn.execute("SET VARIABLE sacct_tz = ?", [timezone])
            conn.execute("SET VARIABLE sacct_fields = ?", [len(layout.fields)])
            conn.execute(sql_text(_PACKAGE, "convert.sql"))
            conn.execute(sql_text(_PACKAGE, "stage.sql"))
            _check(conn, layout)
    return records


def _one(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple:
    """The first row of a query, read to the end (DuckDB keeps an unread result open)."""
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0] if rows else ()


def _raw_view(layout: Layout) -> str:
    """``sacct_raw``: one text column per field of FIELDS (NULL where the output lacks it),
    split from sacct_records by DuckDB, with the newlines of free text put back."""
    index = {name: i + 1 for i, name in enumerate(layout.fields)}

    def column(name: str) -> str:
        if name not in index:
            return f'NULL::VARCHAR AS "{name.lower()}"'
        value = f"parts[{index[name]}]"
        if name in FREE_TEXT:
            value = f"replace({value}, chr({ord(NEWLINE)}), chr(10))"
        return f'{value} AS "{name.lower()}"'

    return (
        "CREATE OR REPLACE TEMP VIEW sacct_raw AS SELECT line, len(parts) AS field_count,"
        f" {', '.join(map(column, FIELDS))}"
        f" FROM (SELECT line, string_split(text, chr({ord(DELIMITER)})) AS parts"
        " FROM sacct_records)"
    )


def _check(conn: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    """Stop on the first record stage.sql could not read, naming its line and text."""
    bad = _one(
        conn,
        "SELECT line, bad, field_count FROM sacct_stage WHERE bad IS NOT NULL"
        " ORDER BY line LIMIT 1",
    )
    if not bad:
        return
    line, name, count = bad
    if name == "field count":
        raise SacctFormatError(line, f"{count} fields where {len(layout.fields)} were asked for")
    (text,) = _one(conn, f'SELECT "{name.lower()}" FROM sacct_raw WHERE line = ?', [line])
    raise SacctFormatError(line, f"cannot read {name} {text or ''!r}")


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
            return "stdin", sys.stdin.read()
        try:
            with open(source, encoding="utf-8", errors="replace", newline="") as f:
                return str(source), f.read()
        except OSError as exc:
            raise AccountingError(f"cannot read {source}: {exc.strerror}") from None
    return getattr(source, "name", "file"), source.read()


def _local_zone(store: Store) -> str:
    """This machine's time zone, as DuckDB found it."""
    return store.one("SELECT current_setting('TimeZone')")[0]


def _checked_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise AccountingError(f"unknown time zone {name!r}") from None
    return name
