"""The letter as the templates see it: every word and number decided here, in plain Python.

Templates only lay out what this module computes, which keeps them readable and lets the
tests check the letter's content without parsing HTML. Which rows a table shows and in which
order is tables.py's part; the TL;DR's changes are digest.py's; waste and rank waste.py's.
"""

from __future__ import annotations

import hashlib
import re
import shlex
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
from watcher.jobstate import EndState
from watcher.letters import plaintext, tables
from watcher.letters.digest import Advice, fallback_rule, headline, pick_advice, problem_anchor
from watcher.letters.waste import Standing, user_waste
from watcher.units import by_name, duration, number, plural

if TYPE_CHECKING:  # charts.py shows its labels with shown() below: no import at run time
    from watcher.letters.charts import Chart

SEVERITY_LABELS = {"serious": "Serious", "medium": "Medium", "info": "Info"}
# Columns whose cells hold a list of rule ids, drawn as badges.
PROBLEM_COLUMNS = tables.PROBLEM_COLUMNS
# Columns whose value is a job id, linked to the web site's job page when site.job_url is set.
JOB_COLUMNS = ("job_id", "job", "last_job_id")
# For a table no entry of tables.SHOWN describes: the columns a letter shows when it has them.
LETTER_COLUMNS = frozenset(c for shown in tables.SHOWN.values() for c in shown)
TABLE_KINDS = (
    ("latest_concerning", "Jobs of this period to change",
     "Your jobs of this period in which a check found something to change, the most waste first."),
    ("history", "Habits across your history",
     "Your jobs grouped by name and command over everything measured so far, so that a habit "
     "shows even when each single job looks small; the most waste first."),
)
# In a letter the problems column shows badges, so its help says what to do with them.
PROBLEMS_HELP = "The problems found on this row; each badge links to its explanation and fix."
SOLUTION_KINDS = {
    "code_or_request": "Usually fixed in the job script: the resources it requests, or how the "
                       "program uses them.",
    "profiling": "Profiling the program shows where the time goes; the support team can help.",
    "consultation": "Worth a conversation with the support team, who can look at it with you.",
}
PERIOD_WORDS = {1: "day", 7: "week"}


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
    bad: bool = False           # a job that did not end well: shown in red


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
    more_href: str | None = None      # where the hidden rows are: the web site
    more_command: str | None = None   # or the command that lists them

    @property
    def text(self) -> str:
        """The table for the plain-text letter: fixed-width columns within 78 characters,
        each row's problems on an indented line of their own."""
        columns = [c for c in self.columns if not c.badges]
        shown = [i for i, c in enumerate(self.columns) if not c.badges]
        body = [[row[i].text for i in shown] for row in self.rows]
        notes = [", ".join(b.title for cell in row for b in cell.badges) or None
                 for row in self.rows]
        keep = [c.numeric or c.id in (*JOB_COLUMNS, "end") for c in columns]
        return plaintext.table([c.heading for c in columns], body,
                               [c.numeric for c in columns], notes, keep)


@dataclass
class ProblemView:
    rule: RuleInfo
    anchor: str
    jobs: int
    fix_kind: str | None
    sentence: str | None = None       # the advice for the job it costs most on
    request: str | None = None        # the sbatch options that would have fitted


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
    jobs: int = 0
    waste: list[str] = field(default_factory=list)   # idle core-/GPU-hours, as nodes
    rank: str | None = None                          # "the 3rd most … of 500 users"
    ended: TableView | None = None                   # the jobs that did not end well
    ended_summary: str | None = None                 # "2 OUT_OF_MEMORY, 1 TIMEOUT"
    glossary: list[Column] = field(default_factory=list)
    command: str = ""                                # to list every job of the period
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


def period_word(period: Period) -> str:
    """'week', 'day', 'month' or 'period': what "for the whole …" says."""
    days = round((period.end - period.start).total_seconds() / 86400)
    return PERIOD_WORDS.get(days) or ("month" if 28 <= days <= 31 else "period")


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


def letter_columns(table: Table, rows: Sequence[Mapping[str, Any]] | None = None,
                   wanted: Sequence[str] | None = None) -> list[str]:
    """The columns a letter shows: ``wanted`` (tables.SHOWN's for a known table), else the
    LETTER_COLUMNS the table has, else all its columns (a table this module does not know),
    less those that would be empty in every shown row (``rows``, by default all)."""
    shown = table.rows if rows is None else rows

    def says_something(column: str) -> bool:
        return any(row.get(column) not in (None, "", [], ()) for row in shown)

    if wanted is None:
        wanted = [c for c in table.columns if c in LETTER_COLUMNS] or table.columns
    return [c for c in wanted if says_something(c)]


def heading(table: Table, column: str) -> str:
    """The column's heading in the letter's words, less a unit the cells show themselves."""
    if column in tables.HEADINGS:
        return tables.HEADINGS[column][0]
    text = table.headings.get(column) or column.replace("_", " ").capitalize()
    text = re.sub(r"\s*\((s|Wh|kWh|W|MHz|mean %)\)$", "", text)
    return text.replace(" %)", ")")


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    values = [row.get(column) for row in rows if row.get(column) is not None]
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def hours(value: float) -> str:
    """Hours of waste: '1,891', '86.9', '0.42': rounded as the findings' sentences round them
    (watcher.units.number), so the TL;DR and a finding never disagree."""
    return number(float(value))


class _Builder:
    """Turns one UserReport into a LetterView; holds what the pieces share."""

    def __init__(
        self, report: UserReport, rules: Mapping[str, RuleInfo], config: Config,
        charts: list[Chart], standing: Standing | None = None,
    ) -> None:
        self.report, self.rules, self.config, self.charts = report, rules, config, charts
        self.standing = standing
        self.explained: dict[str, ProblemView] = {}   # rule id -> its explanation, once
        self.glossary: dict[str, Column] = {}          # column id -> its explanation, once
        self.jobs_of_rule: dict[str, set[tuple[Any, Any]]] = {}
        for f in report.findings:
            self.jobs_of_rule.setdefault(f.rule, set()).add((f.cluster, f.job_id))
        # Table rows carry only their columns; the job's cluster comes from the job list.
        self.cluster_of = {str(j.get("job_id_display", j.get("job_id"))): j.get("cluster")
                           for j in report.jobs}
        self.jobs = tables.JobRows(report.jobs)
        self.advice_of = {a.rule.id: a for a in pick_advice(report, rules, limit=None)}
        since = f"{report.period.start:%Y-%m-%d}"
        self.command = (f"turingwatch jobs --user {shlex.quote(shown(report.user, USER_MAX))} "
                        f"--since {since} --sort waste")
        web = config.site.web_url.rstrip("/")
        self.letter_url = (fill(config.letters.url, "letters.url", period=report.period.id,
                                user=user_id(report.user), web_url=web)
                           if config.letters.url else None)

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

    def row_rank(self, row: Mapping[str, Any]) -> tuple[int, int]:
        """Worst severity first, then rows with more problems."""
        ids = tables.rule_ids(row)
        worst = min((SEVERITY_ORDER.get(self.rule(i).severity, 9) for i in ids), default=9)
        return worst, -len(ids)

    def cell(self, column: Column, row: Mapping[str, Any]) -> Cell:
        value = row.get(column.id)
        if column.id in PROBLEM_COLUMNS:
            badges = tuple(sorted(
                (self.badge(r) for r in tables.rule_ids({column.id: value})),
                key=lambda b: (SEVERITY_ORDER.get(b.severity, 9), b.title),
            ))
            return Cell("" if badges else "–", badges=badges)
        if isinstance(value, EndState):
            return Cell(value.text, bad=value.bad)
        if column.id.startswith("idle_") and column.id.endswith("_hours"):
            return Cell("–" if value is None else hours(value), numeric=True)
        text = by_name(column.id, value)
        if isinstance(value, str | list | tuple):   # names and commands: from outside
            text = shown(text, CELL_MAX)
        if column.id in JOB_COLUMNS:
            return Cell(text, href=self.job_href(row, value), numeric=False)
        mono = isinstance(value, str) and (len(value) > 40 or "/" in value or " -" in value)
        return Cell(text, numeric=column.numeric, mono=mono)

    def table(self, section_id: str, kind: str, title: str, intro: str, table: Table,
              rows: list[dict[str, Any]]) -> TableView:
        limit = self.config.letters.max_rows
        rows = tables.ordered(section_id, kind, rows, self.row_rank)
        shown_rows = rows[:limit]

        def help_for(column: str) -> str:
            if column in PROBLEM_COLUMNS:
                return PROBLEMS_HELP
            if column in tables.HEADINGS:
                return tables.HEADINGS[column][1]
            return table.help.get(column, "")

        wanted = tables.SHOWN.get((section_id, kind))
        columns = [
            Column(
                c, heading(table, c), help_for(c),
                anchor_id("col", c) if help_for(c) and c not in PROBLEM_COLUMNS else None,
                c not in JOB_COLUMNS and (_is_numeric_column(shown_rows, c)
                                          or c.startswith("idle_")),
                c in PROBLEM_COLUMNS,
            )
            for c in letter_columns(table, shown_rows, wanted)
        ]
        for c in columns:
            if c.anchor:
                self.glossary.setdefault(c.id, c)
        cells, severities = [], []
        for row in shown_rows:
            line = [self.cell(c, row) for c in columns]
            cells.append(line)
            found = [b.severity for cell in line for b in cell.badges]
            severities.append(min(found, key=lambda s: SEVERITY_ORDER.get(s, 9)) if found else None)
        hidden = max(len(rows) - limit, 0)
        return TableView(kind, title, intro, anchor_id(section_id, kind), columns, cells,
                         severities, hidden,
                         (self.letter_url or self.config.site.web_url or None) if hidden else None,
                         self.command if hidden else None)

    def problem(self, rule_id: str) -> ProblemView:
        rule = self.rule(rule_id)
        advice = self.advice_of.get(rule_id)
        return ProblemView(rule, problem_anchor(rule_id), len(self.jobs_of_rule.get(rule_id, ())),
                           SOLUTION_KINDS.get(rule.solution_type),
                           advice.sentence if advice else None,
                           advice.request if advice else None)

    def problems_in(self, section_id: str, referenced: list[str]) -> list[ProblemView]:
        """Explanations for the rules that fired in this section or that its tables name."""
        fired = [r for r in self.jobs_of_rule if self.rule(r).section == section_id]
        out = []
        for rule_id in dict.fromkeys(fired + referenced):
            if rule_id in self.explained:
                continue
            view = self.problem(rule_id)
            self.explained[rule_id] = view
            out.append(view)
        out.sort(key=lambda p: (SEVERITY_ORDER.get(p.rule.severity, 9), -p.jobs, p.rule.title))
        return out

    def section(self, section: SectionReport) -> SectionView | None:
        views = []
        for kind, title, intro in TABLE_KINDS:
            table = getattr(section, kind)
            if table is None or not table.rows:
                continue
            rows = tables.letter_rows(section.id, kind, table, section.all_latest, self.jobs)
            if rows:
                views.append(self.table(section.id, kind, title, intro, table, rows))
        if not views:
            return None
        referenced = [b.rule_id for t in views for row in t.rows for cell in row
                      for b in cell.badges]
        problems = self.problems_in(section.id, referenced)
        counts = Counter(p.rule.severity for p in problems)
        return SectionView(section.id, section.title, section.measures, anchor_id(section.id),
                           views, [], problems, dict(counts))

    def ended(self) -> tuple[TableView | None, str | None]:
        rows = tables.ended_badly(self.report.jobs)
        if not rows:
            return None, None
        table = Table(columns=list(tables.SHOWN[("ended", "ended_badly")]), headings={
            "job_id": "Job ID", "job_name": "Name", "elapsed_s": "Elapsed",
            "time_limit_fraction": "Time limit used"}, help={}, rows=rows)
        view = self.table("ended", "ended_badly", "Jobs that did not end well",
                          "Out of memory and out of time first: these jobs' results may be "
                          "missing or incomplete.", table, rows)
        counts = Counter(r["end"].state or r["end"].text for r in rows)
        return view, ", ".join(f"{n} {state}" for state, n in counts.most_common())

    def waste_sentences(self) -> list[str]:
        report, letters = self.report, self.config.letters
        idle = user_waste(report.jobs)
        out = []
        word = period_word(report.period)
        span_h = (report.period.end - report.period.start).total_seconds() / 3600
        if idle.core_hours >= 0.05:
            nodes = idle.nodes(letters.cores_per_node, span_h)
            node = f"{letters.cores_per_node}-core node"
            if nodes >= 1:
                feel = f"as much as {nodes:,.1f} idle {node}s for the whole {word}"
            else:
                feel = (f"as much as one {node} left idle for "
                        f"{duration(3600 * idle.core_hours / letters.cores_per_node)}")
            out.append(f"Your jobs left {hours(idle.core_hours)} core-hours reserved but idle: "
                       f"{feel}.")
        if idle.gpu_hours >= 0.05:
            out.append(f"Their GPUs sat idle for {hours(idle.gpu_hours)} GPU-hours.")
        return out

    def rank_sentence(self) -> str | None:
        standing = self.standing
        if not self.config.letters.show_rank or standing is None or standing.users < 2:
            return None
        if standing.idle_core_hours < 0.05:
            return None
        place = "the" if standing.rank == 1 else f"the {ordinal(standing.rank)}"
        return (f"Of the {number(standing.users)} users of this {period_word(self.report.period)}, "
                f"your jobs left {place} most core-hours idle.")

    def build(self) -> LetterView:
        report, site, letters = self.report, self.config.site, self.config.letters
        problems = len({f.rule for f in report.findings})
        sections = ([v for v in (self.section(s) for s in report.sections) if v is not None]
                    if problems else [])
        leftover = [f.rule for f in report.findings if f.rule not in self.explained]
        other = self.problems_in("", list(dict.fromkeys(leftover))) if leftover else []
        advice = list(self.advice_of.values())[:3]
        ended, ended_summary = self.ended()
        label = period_label(report.period)
        subject = shown(fill(letters.subject, "letters.subject", site=site.name,
                             period=report.period.id, user=shown(report.user, USER_MAX),
                             problems=problems), SUBJECT_MAX)
        jobs = report.totals.get("jobs")
        jobs = int(jobs) if isinstance(jobs, int | float) else len(report.jobs)
        if advice:
            top = advice[0]
            preheader = f"First change: {top.rule.title} in {plural(top.jobs, 'job')}."
            if top.request:
                preheader += f" Request {top.request}."
            elif top.evidence:
                preheader += f" {top.evidence}"
        else:
            preheader = (f"All {plural(jobs, 'job')} of yours in {report.period.id} used what "
                         "they asked for.")
        analysis_id = f"{report.period.id}:{user_id(report.user)}"
        feedback = (with_query(site.feedback_url, letter_ref=analysis_id)
                    if site.feedback_url else None)
        contact = site.contact.strip()
        address = contact_address(contact)
        contact_href = f"mailto:{address}" if address else (
            contact if contact.startswith(("http://", "https://")) else None)
        news = [" ".join(p.split()) for p in re.split(r"\n\s*\n", letters.news) if p.strip()]
        return LetterView(
            site=site.name, user=report.user, name=shown(report.user, USER_MAX),
            period_id=report.period.id, period_label=label,
            analysis_id=analysis_id, subject=subject, preheader=preheader,
            headline=headline(report), advice=advice,
            charts=self.charts if problems else [], news=news,
            sections=sections, other_problems=other, problem_count=problems,
            feedback_url=feedback, letter_url=self.letter_url,
            contact=contact, contact_href=contact_href, jobs=jobs,
            waste=self.waste_sentences(), rank=self.rank_sentence(),
            ended=ended, ended_summary=ended_summary,
            glossary=list(self.glossary.values()), command=self.command,
        )


def build_view(
    report: UserReport, rules: Mapping[str, RuleInfo], config: Config, charts: list[Chart],
    standing: Standing | None = None,
) -> LetterView:
    """Everything one letter says, ready for the templates."""
    return _Builder(report, rules, config, charts, standing).build()
