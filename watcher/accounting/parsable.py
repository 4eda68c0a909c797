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

Values stay strings here; the importer converts them in SQL.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence

from watcher.accounting import AccountingError
from watcher.accounting.sacct import DELIMITER

# Header names by lower case, for files whose header spells them otherwise.
_ALIASES = {"alloccpus": "NCPUS", "jobidraw": "JobIDRaw", "jobid": "JobID"}

# Fields a user can put any text into.
FREE_TEXT = frozenset(
    {"JobName", "SubmitLine", "WorkDir", "Comment", "AdminComment", "SystemComment",
     "Constraints"}
)  # fmt: skip

_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|Unknown|None|"
_DURATION = r"(\d+-)?(\d+:){1,2}\d+(\.\d+)?|"
_SIZE = r"\d+(\.\d+)?[KMGTPE]?[nc]?|"
_COUNT = r"\d+|"
_TRES = r"([\w/:.-]+=[^,=]+(,[\w/:.-]+=[^,=]+)*)?"
# What the typed fields look like; used only to place the extra `|` of a record.
_SHAPES = {
    name: re.compile(shape)
    for names, shape in (
        (("JobID",), r"\d+(_(\d+|\[[^\]]*\]))?(\+\d+)?(\.\w+)?"),
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


def _record_start(delimiter: str) -> re.Pattern[str]:
    """A line that begins a record: JobID (12, 12_3, 12_[3-9%2], 12+1, with .step)."""
    return re.compile(
        r"\d+(?:_(?:\d+|\[[^\]]*\]))?(?:\+\d+)?(?:\.[A-Za-z0-9_]+)?" + re.escape(delimiter)
    )


def _lines(source: str | Iterable[str]) -> Iterator[str]:
    if isinstance(source, str):
        # Not splitlines(): it also splits on \x1c-\x1e and \x85, which may be in free text.
        parts = source.split("\n")
        if parts and parts[-1] == "":
            parts.pop()
        for part in parts:
            yield part[:-1] if part.endswith("\r") else part
    else:
        for line in source:
            line = line[:-1] if line.endswith("\n") else line
            yield line[:-1] if line.endswith("\r") else line


class SacctReader:
    """Iterate over the records of sacct output: lists of strings, one per field.

    Without ``fields`` the first line is the header that names them. ``delimiter``
    defaults to ours when the first line holds it, else ``|``. ``line`` is the line number
    where the last record returned began.
    """

    def __init__(
        self,
        source: str | Iterable[str],
        fields: Sequence[str] | None = None,
        delimiter: str | None = None,
    ) -> None:
        self._lines = _lines(source)
        first = next(self._lines, None)
        self._pushback: list[str] = []
        self._lineno = 1 if fields is None else 0
        if delimiter is None:
            delimiter = DELIMITER if first is not None and DELIMITER in first else "|"
        self.delimiter = delimiter
        if fields is None:
            if first is None or not first.strip():
                raise SacctFormatError(1, "no header line (run sacct without --noheader)")
            header = first
        else:
            header = delimiter.join(fields)
            if first is not None and first.rstrip(delimiter) != header:
                self._pushback.append(first)
        # --parsable (-p) ends every line with the delimiter.
        self.trailing = header.endswith(delimiter)
        names = header[: -len(delimiter)] if header.endswith(delimiter) else header
        self.fields = [_ALIASES.get(n.lower(), n) for n in names.split(delimiter)]
        if "JobIDRaw" not in self.fields or "JobID" not in self.fields:
            raise SacctFormatError(
                1, f"the fields must include JobID and JobIDRaw, not only {', '.join(self.fields)}"
            )
        self.line = 0

    def __iter__(self) -> Iterator[list[str]]:
        delim = self.delimiter
        nsep = len(self.fields) - 1 + (1 if self.trailing else 0)
        if self.fields[0] == "JobID":
            match = _record_start(delim).match

            def starts_record(line: str) -> bool:
                return match(line) is not None
        else:

            def starts_record(line: str) -> bool:
                return line.count(delim) >= nsep

        buf: str | None = None
        first = 0
        lineno = self._lineno
        for line in itertools.chain(self._pushback, self._lines):
            lineno += 1
            if buf is None:
                buf, first = line, lineno
            elif starts_record(line):
                self.line = first
                yield self._split(buf, first)
                buf, first = line, lineno
            else:
                buf += "\n" + line  # a newline inside a free-text field
        if buf is not None:
            self.line = first
            yield self._split(buf, first)

    def _split(self, text: str, lineno: int) -> list[str]:
        if self.trailing and text.endswith(self.delimiter):
            text = text[: -len(self.delimiter)]
        parts = text.split(self.delimiter)
        if len(parts) == len(self.fields):
            return parts
        if len(parts) < len(self.fields) or self.delimiter == DELIMITER:
            raise SacctFormatError(
                lineno, f"{len(parts)} fields where {len(self.fields)} were asked for"
            )
        return self._place_extra(parts, lineno)

    def _place_extra(self, parts: list[str], lineno: int) -> list[str]:
        """Join the pieces of free-text fields that held the delimiter (see module doc)."""
        fields = self.fields
        extra = len(parts) - len(fields)
        free = [i for i, name in enumerate(fields) if name in FREE_TEXT]
        found: dict[tuple[str, ...], None] = {}
        for counts in _compositions(extra, len(free)):
            grow = dict(zip(free, counts, strict=True))
            record, at = [], 0
            for i in range(len(fields)):
                take = 1 + grow.get(i, 0)
                record.append(self.delimiter.join(parts[at : at + take]))
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
            lineno,
            f"{extra} '{self.delimiter}' too many, and {why} way to place them in the free-text "
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
    """The records of sacct output as {field: text}.

    Give ``fields`` for output made with ``--noheader``; without them the first line is
    taken as the header.
    """
    reader = SacctReader(source, fields, delimiter)
    names = reader.fields
    for record in reader:
        yield dict(zip(names, record, strict=True))
