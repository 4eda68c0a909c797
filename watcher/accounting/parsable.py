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

A record's first line holds at least the delimiters before its first free-text field, and a
continuation line at most the delimiters after it: where the first number is larger, a line
with fewer delimiters is never taken for a record (a job name "x\n12" is one job's name).

A file may hold several sacct outputs, one after another (``cat a.txt b.txt``), each with its
own header and perhaps its own fields and delimiter: :func:`split_outputs` cuts it at every
line that is a header and reads each part with its own. Our own sacct call prints one output,
so there a line that looks like a header is what it is inside: a user's free text.

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

# Stands in for a newline inside a field while records are one a line (ASCII RS). Where the
# input holds that byte itself (a user can put it in a job name), another character that the
# input does not hold stands in instead (split_outputs).
NEWLINE = "\x1e"
_STAND_INS = (NEWLINE, "\x1d", "\x1c", *map(chr, range(0xE000, 0xE010)))

# Field names as sacct prints them in a header.
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")

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
    header_line: int | None = None  # the header's line; None where the fields were given


@dataclass(frozen=True)
class Part:
    """One sacct output of a text: its layout and its records (see :func:`split_records`)."""

    layout: Layout
    lines: np.ndarray       # where each record begins
    records: list[str]


@dataclass(frozen=True)
class Outputs:
    """The sacct outputs a text holds, in order, and the character that stands for a
    newline inside their records."""

    parts: list[Part]
    newline: str

    @property
    def records(self) -> int:
        return sum(len(p.records) for p in self.parts)


def read_layout(
    first: str,
    fields: Sequence[str] | None = None,
    delimiter: str | None = None,
    line: int = 1,
) -> Layout:
    """The layout of output whose first line is ``first``, line ``line`` of the text.

    Without ``fields`` that line is the header. ``delimiter`` defaults to ours when the
    first line holds it, else ``|``.
    """
    first = first.rstrip("\r")
    if delimiter is None:
        delimiter = DELIMITER if DELIMITER in first else "|"
    header_line: int | None = line
    if fields is None:
        if not first.strip():
            raise SacctFormatError(line, "no header line (run sacct without --noheader)")
        header, first_line = first, line + 1
    else:
        header = delimiter.join(fields)
        first_line = line + 1 if first.removesuffix(delimiter) == header else line
        header_line = line if first_line > line else None
    trailing = header.endswith(delimiter)
    names = header.removesuffix(delimiter).split(delimiter)
    found = tuple(_ALIASES.get(n.lower(), n) for n in names)
    if "JobIDRaw" not in found or "JobID" not in found:
        raise SacctFormatError(
            line, f"the fields must include JobID and JobIDRaw, not only {', '.join(found)}"
        )
    return Layout(found, delimiter, trailing, first_line, header_line)


def is_header(line: str) -> bool:
    """Whether a line is a sacct header: field names only (two or more, JobID or JobIDRaw
    among them), separated by our delimiter or ``|``."""
    line = line.rstrip("\r")
    delimiter = DELIMITER if DELIMITER in line else "|"
    names = line.removesuffix(delimiter).split(delimiter)
    return (
        len(names) > 1
        and all(_FIELD_NAME.fullmatch(n) for n in names)
        and any(_ALIASES.get(n.lower()) in ("JobID", "JobIDRaw") for n in names)
    )


def split_outputs(
    source: str | Iterable[str],
    fields: Sequence[str] | None = None,
    delimiter: str | None = None,
    *,
    one_output: bool = False,
) -> Outputs:
    """sacct output cut into its parts (one per header, see the module doc), each split into
    records as :func:`split_records` does. ``fields`` and ``delimiter`` are those of the
    first part. ``one_output``: the text is one sacct output (our own call), whose later
    lines are never headers."""
    text = source if isinstance(source, str) else "".join(source)
    newline = _stand_in(text)
    starts = [0] if one_output else [0, *_later_headers(text)]
    parts, line = [], 1
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(text)
        piece = text if len(starts) == 1 else text[start:end]
        layout, lines, records = _split(
            piece, fields if n == 0 else None, delimiter if n == 0 else None, newline, line
        )
        parts.append(Part(layout, lines, records))
        if n + 1 < len(starts):  # (counting the lines of a single part would cost 40 ms)
            line += piece.count("\n")
    return Outputs(parts, newline)


def _stand_in(text: str) -> str:
    """A character the text does not hold, to stand for the newlines inside its records."""
    for candidate in _STAND_INS:
        if candidate not in text:
            return candidate
    held = set(text)  # only for input that holds every character tried above
    return next(chr(c) for c in range(0xE010, 0x110000) if chr(c) not in held)


def _later_headers(text: str) -> list[int]:
    """Where the header lines after the first line begin. sacct prints JobID and JobIDRaw as
    spelt here, so one fast search finds every candidate (the first is on the first line)."""
    found = []
    first_end = text.find("\n")
    at = text.find("JobID", first_end) if first_end >= 0 else -1
    while at >= 0:
        begin = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        if is_header(text[begin:end]):
            found.append(begin)
        at = text.find("JobID", end)
    return found


def split_records(
    source: str | Iterable[str],
    fields: Sequence[str] | None = None,
    delimiter: str | None = None,
) -> tuple[Layout, np.ndarray, list[str]]:
    """One sacct output as (layout, line numbers, records): one string per record, its
    fields joined by our DELIMITER, NEWLINE standing for the newlines inside them, and the
    line where it began. Field counts are checked by the caller (DuckDB, for speed).
    Input that holds NEWLINE itself is refused here; :func:`split_outputs` takes it."""
    text = source if isinstance(source, str) else "".join(source)
    first_end = text.find("\n")
    if NEWLINE in text[max(first_end, 0) :]:
        line = text[: text.index(NEWLINE, max(first_end, 0))].count("\n") + 1
        raise SacctFormatError(line, "holds the byte 0x1E, which the importer reserves")
    return _split(text, fields, delimiter, NEWLINE, 1)


def _split(
    text: str,
    fields: Sequence[str] | None,
    delimiter: str | None,
    newline: str,
    line: int,
) -> tuple[Layout, np.ndarray, list[str]]:
    """:func:`split_records` of a text that begins on line ``line``, with ``newline``
    standing for the newlines inside records."""
    body = text.removesuffix("\n")
    header, _, rest = body.partition("\n")
    layout = read_layout(header, fields, delimiter, line)
    if layout.first_line == line:
        rest = body
    # One record a line: the newlines that do not begin a record are inside free text.
    joined, inside = re.subn(r"\n(?!" + _record_start(layout) + ")", newline, rest)
    records = joined.split("\n") if rest else []
    lines = layout.first_line + np.arange(len(records), dtype=np.int64)
    if inside:
        inner = np.fromiter((r.count(newline) for r in records), np.int64, len(records))
        lines += np.cumsum(inner) - inner
    if layout.delimiter != DELIMITER or layout.trailing:
        records = [_normalized(r, layout, int(n)) for r, n in zip(records, lines, strict=True)]
    return layout, lines, records


def _record_start(layout: Layout) -> str:
    """A regular expression for the start of a line that begins a record (see module doc)."""
    delim, nfields = re.escape(layout.delimiter), len(layout.fields)
    field = f"[^{delim}\n]*{delim}"
    if layout.fields[0] != "JobID":  # a record's first line holds all its delimiters
        return f"(?:{field}){{{nfields - 1}}}"
    free = [i for i, name in enumerate(layout.fields) if name in FREE_TEXT]
    if not free:
        return _JOB_ID + delim
    # At least the delimiters before the first free-text field begin a record; a
    # continuation of free text holds at most those after that field.
    needed = max(1, min(nfields - free[0], free[0]))
    return _JOB_ID + delim + (f"(?:{field}){{{needed - 1}}}" if needed > 1 else "")


@contextmanager
def registered_records(
    conn: duckdb.DuckDBPyConnection,
    source: str | Iterable[str],
    fields: Sequence[str] | None = None,
    delimiter: str | None = None,
    *,
    one_output: bool = False,
) -> Iterator[Outputs]:
    """While open, ``sacct_records (line, part, text)`` on ``conn`` holds the records of
    :func:`split_outputs` (``part``: the index of the output in ``Outputs.parts``), read by
    DuckDB straight from Python's memory."""
    outputs = split_outputs(source, fields, delimiter, one_output=one_output)
    parts = outputs.parts
    if len(parts) == 1:
        lines, records = parts[0].lines, parts[0].records
        part = np.zeros(len(records), dtype=np.int32)
    else:
        lines = np.concatenate([p.lines for p in parts])
        records = [r for p in parts for r in p.records]
        part = np.concatenate([np.full(len(p.records), n, np.int32) for n, p in enumerate(parts)])
    conn.register(
        "sacct_records",
        {"line": lines, "part": part, "text": np.array(records, dtype=object)},
    )
    try:
        yield outputs
    finally:
        conn.unregister("sacct_records")


def field_count_error(record: str, line: int, wanted: int, newline: str) -> SacctFormatError:
    """The error for a record (as split_outputs made it, begun on ``line``) that holds the
    wrong number of fields. Where a line read as its free text starts like a record itself,
    that line is the one cut short and is named; else the record, with the lines it took in."""
    _, *more = record.split(newline)
    for offset, text in enumerate(more, 1):
        if re.match(_JOB_ID + DELIMITER, text):
            count = text.count(DELIMITER) + 1
            return SacctFormatError(line + offset, f"{count} fields where {wanted} were asked for")
    count = record.count(DELIMITER) + 1
    after = (
        "" if not more
        else f" (with line {line + 1} after it, read as its free text)" if len(more) == 1
        else f" (with lines {line + 1}-{line + len(more)} after it, read as its free text)"
    )  # fmt: skip
    return SacctFormatError(line, f"{count} fields where {wanted} were asked for{after}")


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
    one_output: bool = False,
) -> Iterator[dict[str, str]]:
    """The records of sacct output as {field: text}, in output order.

    Give ``fields`` for output made with ``--noheader``; without them the first line is
    taken as the header. Several outputs one after another are read each with its own
    header, unless ``one_output`` says the text is one (see :func:`split_outputs`).
    """
    outputs = split_outputs(source, fields, delimiter, one_output=one_output)
    for part in outputs.parts:
        names = part.layout.fields
        for line, record in zip(part.lines, part.records, strict=True):
            values = record.replace(outputs.newline, "\n").split(DELIMITER)
            if len(values) != len(names):
                raise SacctFormatError(
                    int(line), f"{len(values)} fields where {len(names)} were asked for"
                )
            yield dict(zip(names, values, strict=True))
