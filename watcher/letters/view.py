"""The letter as the templates see it: every word and number decided here, in plain Python.

Templates only lay out what this module computes, which keeps them readable and lets the
tests check the letter's content without parsing HTML.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from watcher.analysis.model import (
    SEVERITY_ORDER,
    Period,
    RuleInfo,
    SectionReport,
    Table,
    UserReport,
)
from watcher.config import Config
from watcher.errors import TuringwatchError
from watcher.letters.digest import Advice, fallback_rule, headline, pick_advice, problem_anchor
from watcher.units import by_name, plural

if TYPE_CHECKING:  # charts.py shows its labels with shown() below: no import at run time
    from watcher.letters.charts import Chart

SEVERITY_LABELS = {"serious": "Serious", "medium": "Medium", "info": "Info"}
# Columns whose cells hold a list of rule ids, drawn as badges.
PROBLEM_COLUMNS = ("problems", "findings", "rules")
# Columns whose value is a job id, linked to the web site's job page when site.job_url is set.
JOB_COLUMNS = ("job_id", "job", "last_job_id")
# The columns a letter shows when a table has them: enough to see each problem, few enough to
# fit the page. The bundle and the web site keep every column.
LETTER_COLUMNS = frozenset((
    "job_id", "step", "job_name", "elapsed_s", "time_limit_fraction", "cores",
    "cpu_efficiency", "peak_memory_bytes", "requested_mem_bytes",
    "jobs", "core_hours", "max_memory_fraction", "avg_time_limit_fraction",
    "gpu_index", "gpu_name", "avg_util_pct", "idle_fraction", "longest_idle_fraction",
    "gpu_hours", "gpu_avg_util_pct", "gpu_idle_fraction",
    "sys_samples", "sys_score", "system_share", *PROBLEM_COLUMNS,
))
TABLE_KINDS = (
    ("latest_concerning", "Jobs of this period with problems",
     "Your jobs of this period in which a check found something to improve, worst first."),
    ("all_latest", "All jobs of this period",
     "Every job of yours in this period, with or without problems."),
    ("history", "Across your history",
     "Your jobs grouped by name and command over everything measured so far, so that a habit "
     "shows even when each single job looks small."),
)
# In a letter the problems column shows badges, so its help says what to do with them.
PROBLEMS_HELP = "The problems found on this row; each badge links to its explanation and fix."
SOLUTION_KINDS = {
    "code_or_request": "Usually fixed in the job script: the resources it requests, or how the "
                       "program uses them.",
    "profiling": "Profiling the program shows where the time goes; the support team can help.",
    "consultation": "Worth a conversation with the support team, who can look at it with you.",
}


class LetterError(TuringwatchError, ValueError):
    """A letter cannot be rendered (a bad template, a bad subject in the configuration)."""


# -- text from outside: job names, command lines, user names -------------------------------

# How long a name may be where it is shown: in a table cell, a chart label, a subject.
CELL_MAX, USER_MAX, SUBJECT_MAX = 60, 40, 200
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Format characters that join letters into words are kept; the others (bidi embeddings,
# overrides, isolates and marks, zero-width spaces, BOM) would reorder or hide the text
# around the name, in the letter as in the subject.
_JOINERS = frozenset("\u200c\u200d")
_PLAIN_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]*")
_ID_MAX = 100


def shown(value: object, limit: int = CELL_MAX) -> str:
    """Outside text (a job name, a command line, a user name) as one short printable line.

    Slurm keeps whatever a user typed: newlines, tabs, escape sequences, bidi overrides,
    10 kB names, bytes that were not UTF-8. Line and paragraph breaks and tabs become
    spaces, runs of spaces one, other control characters U+FFFD (as do lone surrogates
    from bytes decoded with ``surrogateescape``), format characters other than the joiners
    go, and the result is cut to ``limit`` characters with an ellipsis. Escaping for HTML
    is the templates' part; this makes the text safe for charts, plain text and headers.
    """
    text = str(value)
    cut = len(text) > 4 * limit + 16   # bound the work on 10 kB names; they are cut anyway
    if cut:
        text = text[: 4 * limit + 16]
    chars = []
    for ch in _SURROGATE.sub("\ufffd", text):
        if ch.isspace():
            chars.append(" ")
            continue
        category = unicodedata.category(ch)
        if category == "Cc":
            chars.append("\ufffd")
        elif category != "Cf" or ch in _JOINERS:
            chars.append(ch)
    text = " ".join("".join(chars).split())
    if cut or len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def user_id(user: str) -> str:
    """The user as one safe path segment: bundle folders, outbox files, URLs, headers.

    An ordinary login (letters, digits, ``_ . @ -``, not starting with ``.`` or ``-``) is
    its own id. Any other name is ``~`` and its UTF-8 bytes percent-encoded, dots and
    tildes included, so that no id is ``..``, holds a ``/`` or starts with ``-``, and two
    users never share one (an ordinary login never starts with ``~``). Very long ids keep
    their start and a hash of the whole name.
    """
    if _PLAIN_USER.fullmatch(user) and len(user) <= _ID_MAX:
        return user
    if _PLAIN_USER.fullmatch(user):
        encoded = user
    else:
        encoded = "~" + quote(user, safe="", errors="surrogatepass").replace(
            ".", "%2E").replace("~", "%7E")
    if len(encoded) > _ID_MAX:
        digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        start = re.sub(r"%[0-9A-F]?$", "", encoded[: _ID_MAX - 24])  # no half escape
        encoded = f"{start}~{digest}"
    return encoded


@dataclass(frozen=True)
class Badge:
    rule_id: str
    title: str
    severity: str
    anchor: str


@dataclass(frozen=True)
class Cell:
    text: str
    href: str | None = None
    badges: tuple[Badge, ...] = ()
    numeric: bool = False
    mono: bool = False


@dataclass(frozen=True)
class Column:
    id: str
    heading: str
    help: str
    anchor: str | None          # where its explanation is; None when it has none
    numeric: bool
    badges: bool = False        # its cells are problem badges


@dataclass
class TableView:
    kind: str
    title: str
    intro: str
    anchor: str
    columns: list[Column]
    rows: list[list[Cell]]
    row_severity: list[str | None]
    hidden_rows: int            # rows left out because of letters.max_rows


@dataclass
class ProblemView:
    rule: RuleInfo
    anchor: str
    jobs: int
    fix_kind: str | None


@dataclass
class SectionView:
    id: str
    title: str
    measures: str
    anchor: str
    tables: list[TableView]
    columns: list[Column]       # every explained column, once
    problems: list[ProblemView]
    severity_counts: dict[str, int]


@dataclass
class LetterView:
    site: str
    user: str                   # the login as the report has it: for the ledger and addresses
    name: str                   # the same as shown in the letter (see shown())
    period_id: str
    period_label: str
    analysis_id: str            # <period>:<user_id>: quotable, and the same in every header
    subject: str
    preheader: str
    headline: list[str]
    advice: list[Advice]
    charts: list[Chart]
    news: list[str]
    sections: list[SectionView]
    other_problems: list[ProblemView]     # fired rules whose section is not in the report
    problem_count: int
    feedback_url: str | None
    letter_url: str | None
    contact: str
    contact_href: str | None
    severity_labels: dict[str, str] = field(default_factory=lambda: dict(SEVERITY_LABELS))

    @property
    def all_good(self) -> bool:
        return self.problem_count == 0


def anchor_id(*parts: str) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)


def period_label(period: Period) -> str:
    """'2026-W47, 16–22 Nov 2026': the id people can quote, then the dates it covers."""
    first, last = period.start, period.end - timedelta(seconds=1)
    if first.date() == last.date():
        return f"{period.id}, {first:%-d %b %Y}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{period.id}, {first:%-d}–{last:%-d %b %Y}"
    if first.year == last.year:
        return f"{period.id}, {first:%-d %b} – {last:%-d %b %Y}"
    return f"{period.id}, {first:%-d %b %Y} – {last:%-d %b %Y}"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def fill(template: str, key: str, **values: Any) -> str:
    """``str.format`` for a configured template, with an error that names the setting."""
    fields = ", ".join("{" + name + "}" for name in values)
    try:
        unknown = [name for _, name, _, _ in string.Formatter().parse(template)
                   if name is not None and name not in values]
        if unknown:
            raise LetterError(f"{key}: unknown placeholder {{{unknown[0]}}} in {template!r}; "
                              f"use {fields}")
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        if isinstance(exc, LetterError):
            raise
        raise LetterError(f"{key}: cannot fill {template!r} ({exc}); use {fields}") from None


def contact_address(contact: str) -> str | None:
    """The e-mail address in a contact line such as 'HPC support <hpc@example.org>'."""
    found = re.search(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", contact)
    return found.group(0) if found else None


def letter_columns(table: Table, rows: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """The table's columns a letter shows: the LETTER_COLUMNS it has, less those that would be
    empty in every shown row (``rows``, by default all); all its columns when it has none of
    them (a table this module does not know yet)."""
    shown = table.rows if rows is None else rows

    def says_something(column: str) -> bool:
        return any(row.get(column) not in (None, "", [], ()) for row in shown)

    known = [c for c in table.columns if c in LETTER_COLUMNS]
    return [c for c in (known or table.columns) if says_something(c)]


def heading(table: Table, column: str) -> str:
    """The column's heading, less a unit the cells now show themselves ("Elapsed (s)")."""
    text = table.headings.get(column) or column.replace("_", " ").capitalize()
    text = re.sub(r"\s*\((s|Wh|kWh|W|MHz)\)$", "", text)
    return text.replace(" %)", ")")


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    values = [row.get(column) for row in rows if row.get(column) is not None]
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


class _Builder:
    """Turns one UserReport into a LetterView; holds what the pieces share."""

    def __init__(
        self, report: UserReport, rules: Mapping[str, RuleInfo], config: Config,
        charts: list[Chart],
    ) -> None:
        self.report, self.rules, self.config, self.charts = report, rules, config, charts
        self.explained: dict[str, ProblemView] = {}   # rule id -> its explanation, once
        self.jobs_of_rule: dict[str, set[tuple[Any, Any]]] = {}
        for f in report.findings:
            self.jobs_of_rule.setdefault(f.rule, set()).add((f.cluster, f.job_id))
        # Table rows carry only their columns; the job's cluster comes from the job list.
        self.cluster_of = {str(j.get("job_id_display", j.get("job_id"))): j.get("cluster")
                           for j in report.jobs}

    def rule(self, rule_id: str, severity: str = "info") -> RuleInfo:
        return self.rules.get(rule_id) or fallback_rule(rule_id, severity)

    def badge(self, rule_id: str) -> Badge:
        rule = self.rule(rule_id)
        return Badge(rule_id, rule.title, rule.severity, problem_anchor(rule_id))

    def job_href(self, row: Mapping[str, Any], job_id: Any) -> str | None:
        site = self.config.site
        if not site.job_url or job_id is None:
            return None
        cluster = row.get("cluster") or self.cluster_of.get(str(job_id)) or ""
        # Each value is one path segment, whatever the accounting holds.
        return fill(site.job_url, "site.job_url", job_id=quote(str(job_id), safe=""),
                    cluster=quote(str(cluster), safe=""), user=user_id(self.report.user),
                    web_url=site.web_url.rstrip("/"))

    @staticmethod
    def same_rows(table: Table, other: Table | None) -> bool:
        return other is not None and len(other.rows) == len(table.rows) and all(
            a == b for a, b in zip(table.rows, other.rows, strict=True))

    def rule_ids(self, row: Mapping[str, Any]) -> list[str]:
        """The rule ids of a row's problems column: a list, as the engine gives it; a string
        joined with ", " (a hand-built report, an older report.json) is split."""
        for column in PROBLEM_COLUMNS:
            value = row.get(column)
            if value:
                ids = value if isinstance(value, list | tuple) else str(value).split(",")
                return [i.strip() for i in ids if i and i.strip()]
        return []

    def row_rank(self, row: Mapping[str, Any]) -> tuple[int, int]:
        """Worst severity first, then rows with more problems."""
        ids = self.rule_ids(row)
        worst = min((SEVERITY_ORDER.get(self.rule(i).severity, 9) for i in ids), default=9)
        return worst, -len(ids)

    def cell(self, column: Column, row: Mapping[str, Any]) -> Cell:
        value = row.get(column.id)
        if column.id in PROBLEM_COLUMNS:
            badges = tuple(sorted(
                (self.badge(r) for r in self.rule_ids({column.id: value})),
                key=lambda b: (SEVERITY_ORDER.get(b.severity, 9), b.title),
            ))
            return Cell("" if badges else "–", badges=badges)
        text = by_name(column.id, value)
        if isinstance(value, str | list | tuple):   # names and commands: from outside
            text = shown(text, CELL_MAX)
        if column.id in JOB_COLUMNS:
            return Cell(text, href=self.job_href(row, value), numeric=False)
        mono = isinstance(value, str) and (len(value) > 40 or "/" in value or " -" in value)
        return Cell(text, numeric=column.numeric, mono=mono)

    def table(self, section: SectionReport, kind: str, title: str, intro: str,
              table: Table) -> TableView:
        limit = self.config.letters.max_rows
        shown = table.rows
        if kind == "latest_concerning":
            # Only the first rows make it into the letter: let them be the worst ones.
            shown = sorted(shown, key=lambda row: self.row_rank(row))
        shown = shown[:limit]

        def help_for(column: str) -> str:
            return PROBLEMS_HELP if column in PROBLEM_COLUMNS else table.help.get(column, "")

        columns = [
            Column(
                c, heading(table, c), help_for(c),
                anchor_id(section.id, "col", c) if help_for(c) else None,
                c not in JOB_COLUMNS and _is_numeric_column(shown, c),
                c in PROBLEM_COLUMNS,
            )
            for c in letter_columns(table, shown)
        ]
        rows, severities = [], []
        for row in shown:
            cells = [self.cell(c, row) for c in columns]
            rows.append(cells)
            found = [b.severity for cell in cells for b in cell.badges]
            severities.append(min(found, key=lambda s: SEVERITY_ORDER.get(s, 9)) if found else None)
        return TableView(kind, title, intro, anchor_id(section.id, kind), columns, rows, severities,
                         max(len(table.rows) - limit, 0))

    def problems_in(self, section_id: str, referenced: list[str]) -> list[ProblemView]:
        """Explanations for the rules that fired in this section or that its tables name."""
        fired = [r for r in self.jobs_of_rule if self.rule(r).section == section_id]
        out = []
        for rule_id in dict.fromkeys(fired + referenced):
            if rule_id in self.explained:
                continue
            rule = self.rule(rule_id)
            view = ProblemView(rule, problem_anchor(rule_id),
                               len(self.jobs_of_rule.get(rule_id, ())),
                               SOLUTION_KINDS.get(rule.solution_type))
            self.explained[rule_id] = view
            out.append(view)
        out.sort(key=lambda p: (SEVERITY_ORDER.get(p.rule.severity, 9), -p.jobs, p.rule.title))
        return out

    def section(self, section: SectionReport) -> SectionView | None:
        tables = []
        for kind, title, intro in TABLE_KINDS:
            table = getattr(section, kind)
            if table is None or not table.rows:
                continue
            if kind == "all_latest" and self.same_rows(table, section.latest_concerning):
                continue  # every job of the period had a problem: one table says it all
            tables.append(self.table(section, kind, title, intro, table))
        if not tables:
            return None
        columns: dict[str, Column] = {}
        for t in tables:
            for c in t.columns:
                if c.anchor and c.id not in columns:
                    columns[c.id] = c
        referenced = [b.rule_id for t in tables for row in t.rows for cell in row
                      for b in cell.badges]
        problems = self.problems_in(section.id, referenced)
        counts = Counter(p.rule.severity for p in problems)
        return SectionView(section.id, section.title, section.measures, anchor_id(section.id),
                           tables, list(columns.values()), problems, dict(counts))

    def build(self) -> LetterView:
        report, site, letters = self.report, self.config.site, self.config.letters
        sections = [v for v in (self.section(s) for s in report.sections) if v is not None]
        leftover = [f.rule for f in report.findings if f.rule not in self.explained]
        other = self.problems_in("", list(dict.fromkeys(leftover))) if leftover else []
        advice = pick_advice(report, self.rules)
        problems = len({f.rule for f in report.findings})
        label = period_label(report.period)
        subject = shown(fill(letters.subject, "letters.subject", site=site.name,
                             period=report.period.id, user=shown(report.user, USER_MAX),
                             problems=problems), SUBJECT_MAX)
        if advice:
            top = advice[0]
            preheader = f"First change: {top.rule.title} in {plural(top.jobs, 'job')}."
            if top.evidence:
                preheader += f" {top.evidence}"
        else:
            preheader = f"No problem found in your jobs of {report.period.id}."
        web = site.web_url.rstrip("/")
        analysis_id = f"{report.period.id}:{user_id(report.user)}"
        feedback = (with_query(site.feedback_url, letter_ref=analysis_id)
                    if site.feedback_url else None)
        letter_url = (fill(letters.url, "letters.url", period=report.period.id,
                           user=user_id(report.user), web_url=web) if letters.url else None)
        contact = site.contact.strip()
        address = contact_address(contact)
        contact_href = f"mailto:{address}" if address else (
            contact if contact.startswith(("http://", "https://")) else None)
        news = [" ".join(p.split()) for p in re.split(r"\n\s*\n", letters.news) if p.strip()]
        return LetterView(
            site=site.name, user=report.user, name=shown(report.user, USER_MAX),
            period_id=report.period.id, period_label=label,
            analysis_id=analysis_id, subject=subject, preheader=preheader,
            headline=headline(report), advice=advice, charts=self.charts, news=news,
            sections=sections, other_problems=other, problem_count=problems,
            feedback_url=feedback, letter_url=letter_url,
            contact=contact, contact_href=contact_href,
        )


def build_view(
    report: UserReport, rules: Mapping[str, RuleInfo], config: Config, charts: list[Chart]
) -> LetterView:
    """Everything one letter says, ready for the templates."""
    return _Builder(report, rules, config, charts).build()
