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
    Layout,
    Outputs,
    SacctFormatError,
    field_count_error,
    registered_records,
)
from watcher.config import Config
from watcher.slurm.commands import SlurmCommands
from watcher.slurm.sacct import DELIMITER, FIELDS, sacct_arguments
from watcher.store import Store, sql_text

_PACKAGE = "watcher.accounting"

# Fields read where an output has them although our own sacct call does not ask for them:
# Elapsed ([D-]HH:MM:SS) stands in for ElapsedRaw in older or hand-made outputs.
ALSO_READ: tuple[str, ...] = ("Elapsed",)


@dataclass(frozen=True)
class WindowResult:
    """One imported window: its bounds and what it held."""

    cluster: str
    start: datetime
    end: datetime
    records: int        # sacct lines (jobs and steps), before duplicates are dropped
    jobs: int           # job rows stored
    steps: int          # step rows stored
    seconds: float
    never_started: int = 0          # jobs with no Start that ended (cancelled while pending)
    pending: int = 0                # jobs with no Start and no End: still waiting
    orphan_steps: int = 0           # steps stored without their job: no job line, none stored
    orphan_jobs: tuple[int, ...] = ()   # the raw ids of those steps' jobs


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

    @property
    def never_started(self) -> int:
        return sum(w.never_started for w in self.windows)

    @property
    def pending(self) -> int:
        """Jobs still pending when their last window was imported."""
        return sum(w.pending for w in self.windows)

    @property
    def orphan_steps(self) -> int:
        return sum(w.orphan_steps for w in self.windows)

    @property
    def orphan_jobs(self) -> tuple[int, ...]:
        return tuple(sorted({j for w in self.windows for j in w.orphan_jobs}))


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
            as_user=user, source="sacct", one_output=True,
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
    one_output: bool = False,
) -> WindowResult | None:
    """Store one sacct output as one window, all or nothing; the window is recorded in
    ``accounting_imports``.

    ``fields`` names the fields of output made with ``--noheader``; without them the
    first line is the header. A text may hold several outputs, each with its header
    (files put together), unless ``one_output`` says it is one (our own sacct call: a later
    line that looks like a header is a user's free text). ``cluster=None`` takes the
    cluster from the records' Cluster field. Without ``since``/``until`` the window is the
    span of the records' times (the import's time where they have none); output without
    records and without a window changes nothing and returns None.

    Steps whose job line the output lacks (``sacct --state``, ``-j N.batch``) replace the
    same steps, and are counted (``WindowResult.orphan_steps``) where the store does not
    hold their job yet. docs/accounting.md says when a job's set of steps is replaced and
    when merged.

    Raises SacctFormatError naming the line of a record that cannot be read or of a header
    that lacks a field the import needs, AccountingError when ``since`` is not before
    ``until`` or the store refuses the records.
    """
    began = time.perf_counter()
    if since is not None and until is not None and since >= until:
        raise AccountingError(f"since {since} is not before until {until}: nothing to import")
    with store.transaction() as conn:
        try:
            records = _stage(conn, text, fields, timezone, one_output)  # or SacctFormatError
            counts = _Counts()
            if records:
                cluster = cluster or _cluster_of_records(conn)
                conn.execute("SET VARIABLE sacct_cluster = ?", [cluster])
                conn.execute(sql_text(_PACKAGE, "upsert.sql"))
                counts = _counts(conn)
                imported = datetime.now(UTC)
                since = since or counts.first or imported
                until = until or counts.last or imported
            if since is None or until is None:
                return None
            if since > until:  # a file's records end before the since given, or so
                raise AccountingError(f"since {since} is not before until {until}: nothing to import")
            if cluster is None:
                raise AccountingError("no cluster name: set slurm.cluster")
            conn.execute(
                "INSERT INTO accounting_imports"
                " (cluster, window_start, window_end, jobs, steps, as_user, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [cluster, since, until, counts.jobs, counts.steps, as_user, source],
            )
        except duckdb.Error as exc:
            raise AccountingError(f"storing the sacct records failed: {exc}") from exc
    return WindowResult(
        cluster, since, until, records, counts.jobs, counts.steps, time.perf_counter() - began,
        never_started=counts.never_started, pending=counts.pending,
        orphan_steps=counts.orphan_steps, orphan_jobs=counts.orphan_jobs,
    )  # fmt: skip


@dataclass(frozen=True)
class _Counts:
    """What upsert.sql stored of a window, and the span of its records' times."""

    jobs: int = 0
    steps: int = 0
    first: datetime | None = None
    last: datetime | None = None
    never_started: int = 0
    pending: int = 0
    orphan_steps: int = 0
    orphan_jobs: tuple[int, ...] = ()


def _counts(conn: duckdb.DuckDBPyConnection) -> _Counts:
    jobs, steps, first, last, never_started, pending = _one(
        conn,
        "SELECT count(*) FILTER (step IS NULL), count(*) FILTER (step IS NOT NULL),"
        " min(least(submit_time, start_time, end_time)),"
        " max(greatest(submit_time, start_time, end_time)),"
        " count(*) FILTER (step IS NULL AND start_time IS NULL AND end_time IS NOT NULL),"
        " count(*) FILTER (step IS NULL AND start_time IS NULL AND end_time IS NULL)"
        " FROM sacct_stage",
    )
    orphans = conn.execute(
        "SELECT job_id, steps FROM sacct_orphans WHERE NOT known ORDER BY job_id"
    ).fetchall()
    return _Counts(
        jobs, steps, first, last, never_started, pending,
        sum(n for _, n in orphans), tuple(job_id for job_id, _ in orphans),
    )  # fmt: skip


def _stage(
    conn: duckdb.DuckDBPyConnection,
    text: str | Iterable[str],
    fields: Sequence[str] | None,
    timezone: str,
    one_output: bool,
) -> int:
    """Split, convert and check the records into ``sacct_stage``; return how many."""
    with registered_records(conn, text, fields, one_output=one_output) as outputs:
        if outputs.records:
            _check_fields(outputs)
            conn.execute(_raw_view(outputs))
            conn.execute("SET VARIABLE sacct_tz = ?", [timezone])
            conn.execute(sql_text(_PACKAGE, "convert.sql"))
            conn.execute(sql_text(_PACKAGE, "stage.sql"))
            _check(conn, outputs)
    return outputs.records


# Besides JobID and JobIDRaw (parsable.read_layout), what a job row cannot be stored without.
_REQUIRED = (("State",), ("User", "UID"))


def _check_fields(outputs: Outputs) -> None:
    """Refuse an output (with records) whose header lacks a field a job row needs."""
    for part in outputs.parts:
        layout = part.layout
        if not part.records:
            continue
        for names in _REQUIRED:
            if not any(name in layout.fields for name in names):
                missing = names[0] + "".join(f" (or {n})" for n in names[1:])
                where = "the header has" if layout.header_line else "the fields given have"
                raise SacctFormatError(
                    layout.header_line or layout.first_line,
                    f"{where} no {missing} field; the importer needs JobID, JobIDRaw,"
                    " State and User (or UID)",
                )


def _one(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple:
    """The first row of a query, read to the end (DuckDB keeps an unread result open)."""
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0] if rows else ()


def _raw_view(outputs: Outputs) -> str:
    """``sacct_raw``: one text column per field of FIELDS and ALSO_READ (NULL where an
    output lacks it), split from sacct_records by DuckDB, with the newlines of free text
    put back; ``fields_wanted`` is how many fields its output's header names."""
    selects = []
    for n, part in enumerate(outputs.parts):
        where = f" WHERE part = {n}" if len(outputs.parts) > 1 else ""
        selects.append(
            f"SELECT line, len(parts) AS field_count, {len(part.layout.fields)} AS fields_wanted,"
            f" {_columns(part.layout, outputs.newline)}"
            f" FROM (SELECT line, string_split(text, chr({ord(DELIMITER)})) AS parts"
            f" FROM sacct_records{where})"
        )
    return "CREATE OR REPLACE TEMP VIEW sacct_raw AS " + " UNION ALL ".join(selects)


def _columns(layout: Layout, newline: str) -> str:
    index = {name: i + 1 for i, name in enumerate(layout.fields)}

    def column(name: str) -> str:
        if name not in index:
            return f'NULL::VARCHAR AS "{name.lower()}"'
        value = f"parts[{index[name]}]"
        if name in FREE_TEXT:
            value = f"replace({value}, chr({ord(newline)}), chr(10))"
        return f'{value} AS "{name.lower()}"'

    return ", ".join(map(column, FIELDS + ALSO_READ))


def _check(conn: duckdb.DuckDBPyConnection, outputs: Outputs) -> None:
    """Stop on the first record stage.sql could not read, naming its line and text."""
    bad = _one(conn, "SELECT line, bad FROM sacct_stage WHERE bad IS NOT NULL ORDER BY line LIMIT 1")
    if not bad:
        return
    line, name = bad
    wanted, job_id = _one(conn, "SELECT fields_wanted, jobid FROM sacct_raw WHERE line = ?", [line])
    if name == "field count":
        (text,) = _one(conn, "SELECT text FROM sacct_records WHERE line = ?", [line])
        raise field_count_error(text, line, wanted, outputs.newline)
    (text,) = _one(conn, f'SELECT "{name.lower()}" FROM sacct_raw WHERE line = ?', [line])
    if not text:
        what = f"step {job_id}" if "." in (job_id or "") else f"job {job_id}"
        nor = " (nor UID)" if name == "User" else ""
        raise SacctFormatError(line, f"{what} has no {name}{nor}")
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
