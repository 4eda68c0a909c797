"""Splitting ``sacct --parsable2`` output back into records.

The field names come from the header line sacct prints, or from the caller for output made
with ``--noheader``; so a file an admin made with another field list, with ``-p`` or with
the default ``|`` delimiter, reads as well as our own sacct calls.

Free text (JobName, SubmitLine, Comment, WorkDir …) breaks the one-line-one-record rule:

* A newline inside a field. A physical line continues the record before it unless it
  starts like a record: a job id followed by the delimiter (or, when JobID is not the
  first field, a line with all the delimiters of a record).
* The delimiter inside a field. With our unit-separator delimiter this does not happen.
  With ``|`` a record has too many fields; the extra separators are handed to the free-text
  fields in the one way that leaves every other field readable (UID a number, times times,
  and so on). When no way, or several ways that put different text in the fields,
  qualify, the line is reported (see docs/accounting.md).

Records are put back on one line each by one regular-expression pass over the text and
handed to DuckDB whole; DuckDB splits the fields (importer.py). No per-field Python work
for our own output is what makes a 300k-record import fast.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import numpy as np

from watcher.accounting import AccountingError
from watcher.slurm.sacct import DELIMITER

# Header names by lower case, for files whose header spells them otherwise.
_ALIASES = {"alloccpus": "NCPUS", "jobidraw": "JobIDRaw", "jobid": "JobID"}

# Fields a user can put any text into.
FREE_TEXT = frozenset(
    {"JobName", "SubmitLine", "WorkDir", "Comment", "AdminComment", "SystemComment",
     "Constraints"}
)  # fmt: skip

# Stands in for a newline inside a field while records are one a line (ASCII RS).
NEWLINE = "\x1e"

# The start of a record: its JobID (12, 12_3, 12_[3-9%2], 12+1, with .step).
_JOB_ID = r"[0-9]+(?:_(?:[0-9]+|\[[^\]]*\]))?(?:\+[0-9]+)?(?:\.[A-Za-z0-9_]+)?"

_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|Unknown|None|"
_DURATION = r"(\d+-)?(\d+:){1,2}\d+(\.\d+)?|"
_SIZE = r"\d+(\.\d+)?[KMGTPE]?[nc]?|"
_COUNT = r"\d+|"
_TRES = r"([\w/:.-]+=[^,=]+(,[\w/:.-]+=[^,=]+)*)?"
# What the typed fields look like; used only to place the extra `|` of a record.
_SHAPES = {
    name: re.compile(shape)
    for names, shape in (
        (("JobID",), _JOB_ID),
        (("JobIDRaw",), r"\d+(\.\w+)?"),
        (("UID", "GID", "ElapsedRaw", "NNodes", "NCPUS", "ReqCPUS", "NTasks", "AllocNodes",
          "CPUTimeRAW", "MaxRSSTask", "Priority", "QOSRAW", "AssocID"), _COUNT),
        (("State",), r"[A-Z_]+( by \d+)?|"),
        (("ExitCode", "DerivedExitCode"), r"\d+:\d+|"),
        (("Submit", "Eligible", "Start", "End"), _TIME),
        (("Elapsed", "TotalCPU", "UserCPU", "SystemCPU", "AveCPU", "MinCPU", "CPUTime"),
         _DURATION),
        (("Timelimit",), _DURATION + r"|UNLIMITED|Partition_Limit|INVALID"),
        (("TimelimitRaw",), r"\d+|UNLIMITED|Partition_Limit|INVALID|"),
        (("ReqMem", "MaxRSS", "AveRSS", "MaxVMSize", "AveVMSize", "MaxDiskRead",
          "MaxDiskWrite", "AveDiskRead", "AveDiskWrite"), _SIZE),
        (("AllocTRES", "ReqTRES", "TRESUsageInMax", "TRESUsageInTot", "TRESUsageInAve",
          "TRESUsageOutMax", "TRESUsageOutTot"), _TRES),
        (("Flags",), r"[A-Za-z_,]*"),
        (("User", "Group", "Account", "Partition", "QOS", "Cluster"), r"[^\s|]*"),
        (("WorkDir",), r"(/.*)?"),
    )
    for name in names
}  # fmt: skip
_MAX_LAYOUTS = 20000


class SacctFormatError(AccountingError):
    """sacct output that cannot be split into records; names the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"sacct output line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Layout:
    """How one sacct output is laid out."""

    fields: tuple[str, ...]
    delimiter: str
    trailing: bool          # --parsable (-p): every line ends with the delimiter
    first_line: int         # the first line holding a record (after the header, if any)


def read_layout(
    first: str, fields: Sequence[str] | None = None, delimiter: str | None = None
) -> Layout:
    """The layout of output whose first line is ``first``.

    Without ``fields`` that line is the header. ``delimiter`` defaults to ours when the
    first line holds it, else ``|``.
    """
    first = first.rstrip("\r")
    if delimiter is None:
        delimiter = DELIMITER if DELIMITER in first else "|"
    if fields is None:
        if not first.strip():
            raise SacctFormatError(1, "no header line (run sacct without --noheader)")
        header, first_line = first, 2
    else:
        header = delimiter.join(fields)
        first_line = 2 if first.removesuffix(delimiter) == header else 1
    trailing = header.endswith(delimiter)
    names = header.removesuffix(delimiter).split(delimiter)
    found = tuple(_ALIASES.get(n.lower(), n) for n in names)
    if "JobIDRaw" not in found or "JobID" not in found:
        raise SacctFormatError(
            1, f"the fields must include JobID and JobIDRaw, not only {', '.join(found)}"
        )
    return Layout(found, delimiter, trailing, first_line)


def split_records(
    source: str | Iterable[str],
    fields: Sequence[str] | None = None,
    delimiter: str | None = None,
) -> tuple[Layout, np.ndarray, list[str]]:
    """sacct output as (layout, line numbers, records): one string per record, its fields
    joined by our DELIMITER, NEWLINE standing for the newlines inside them, and the line
    where it began. Field counts are checked by the caller (DuckDB, for speed)."""
    text = source if isinstance(source, str) else "".join(source)
    body = text.removesuffix("\n")
    header, _, rest = body.partition("\n")
    layout = read_layout(header, fields, delimiter)
    if layout.first_line == 1:
        rest = body
    if NEWLINE in rest:
        line = body[: body.index(NEWLINE)].count("\n") + 1
        raise SacctFormatError(line, "holds the byte 0x1E, which the importer reserves")
    delim, nfields = layout.delimiter, len(layout.fields)
    if layout.fields[0] == "JobID":
        start = _JOB_ID + re.escape(delim)
    else:  # a record's first line holds all its delimiters, a continuation hardly ever
        start = f"(?:[^{re.escape(delim)}\n]*{re.escape(delim)}){{{nfields - 1}}}"
    # One record a line: the newlines that do not begin a record are inside free text.
    joined, inside = re.subn(r"\n(?!" + start + ")", NEWLINE, rest)
    records = joined.split("\n") if rest else []
    lines = layout.first_line + np.arange(len(records), dtype=np.int64)
    if inside:
        inner = np.fromiter((r.count(NEWLINE) for r in records), np.int64, len(records))
        lines += np.cumsum(inner) - inner
    if delim != DELIMITER or layout.trailing:
        records = [_normalized(r, layout, int(n)) for r, n in zip(records, lines, strict=True)]
    return layout, lines, records


@contextmanager
def registered_records(
    conn: duckdb.DuckDBPyConnection,
    source: str | Iterable[str],
    fields: Sequence[str] | None = None,
    delimiter: str | None = None,
) -> Iterator[Layout]:
    """While open, ``sacct_records (line, text)`` on ``conn`` holds the records of
    :func:`split_records`, read by DuckDB straight from Python's memory."""
    layout, lines, records = split_records(source, fields, delimiter)
    conn.register("sacct_records", {"line": lines, "text": np.array(records, dtype=object)})
    try:
        yield layout
    finally:
        conn.unregister("sacct_records")


def _normalized(record: str, layout: Layout, line: int) -> str:
    """A record of a '|' (or -p) file, re-joined with our delimiter."""
    parts = record.split(layout.delimiter)
    if layout.trailing and len(parts) > 1 and parts[-1] == "":
        parts.pop()
    wanted = len(layout.fields)
    if len(parts) < wanted:
        raise SacctFormatError(line, f"{len(parts)} fields where {wanted} were asked for")
    if len(parts) > wanted:
        parts = place_extra(layout.fields, parts, layout.delimiter, line)
    return DELIMITER.join(parts)


def place_extra(fields: Sequence[str], parts: list[str], delimiter: str, line: int) -> list[str]:
    """Join the pieces of free-text fields that held the delimiter (see module doc)."""
    extra = len(parts) - len(fields)
    free = [i for i, name in enumerate(fields) if name in FREE_TEXT]
    found: dict[tuple[str, ...], None] = {}
    for counts in _compositions(extra, len(free)):
        grow = dict(zip(free, counts, strict=True))
        record, at = [], 0
        for i in range(len(fields)):
            take = 1 + grow.get(i, 0)
            record.append(delimiter.join(parts[at : at + take]))
            at += take
        if all(
            shape.fullmatch(value) is not None
            for name, value in zip(fields, record, strict=True)
            if (shape := _SHAPES.get(name)) is not None
        ):
            found[tuple(record)] = None
        if len(found) > 1:
            break
    if len(found) == 1:
        return list(next(iter(found)))
    why = "no" if not found else "more than one"
    raise SacctFormatError(
        line,
        f"{extra} '{delimiter}' too many, and {why} way to place them in the free-text "
        "fields; use sacct --delimiter (see docs/accounting.md)",
    )


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way to split ``total`` into ``parts`` non-negative counts (bounded)."""
    if parts == 0:
        return
    for n, bars in enumerate(itertools.combinations(range(total + parts - 1), parts - 1)):
        if n >= _MAX_LAYOUTS:
            return
        edges = (-1, *bars, total + parts - 1)
        yield tuple(edges[k + 1] - edges[k] - 1 for k in range(parts))


def parse_sacct_parsable(
    source: str | Iterable[str],
    fields: Sequence[str] | None = None,
    *,
    delimiter: str | None = None,
) -> Iterator[dict[str, str]]:
    """The records of sacct output as {field: text}, in output order.

    Give ``fields`` for output made with ``--noheader``; without them the first line is
    taken as the header.
    """
    layout, lines, records = split_records(source, fields, delimiter)
    for line, record in zip(lines, records, strict=True):
        parts = record.replace(NEWLINE, "\n").split(DELIMITER)
        if len(parts) != len(layout.fields):
            raise SacctFormatError(
                int(line), f"{len(parts)} fields where {len(layout.fields)} were asked for"
            )
        yield dict(zip(layout.fields, parts, strict=True))
