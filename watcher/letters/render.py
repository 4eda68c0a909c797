"""Render one user's letter: charts, HTML and plain text.

The HTML carries its styles as classes and one ``<style>`` block in its head, which Gmail,
Outlook.com, Apple Mail and Thunderbird honour; only what must survive a client that drops it
(a bad ending in red, the badges' colours) is also said inline, in the templates. Inlining the
whole stylesheet into every element made letters of 140–290 KB, and Gmail clips a message's
HTML at about 102 KB, cutting off the footer with the contact address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import jinja2

from watcher.analysis.model import RuleInfo, UserReport
from watcher.config import Config, expand_path
from watcher.letters.charts import letter_charts
from watcher.letters.view import LetterError, LetterView, build_view
from watcher.letters.waste import Standing
from watcher.templating import environment

HTML_TEMPLATE, TEXT_TEMPLATE = "letter.html.j2", "letter.txt.j2"


@dataclass(frozen=True)
class RenderedLetter:
    """A letter ready to be bundled or mailed."""

    user: str
    period: str
    subject: str
    html: str                    # styles in <style>; charts referenced as cid:<content id>
    text: str
    images: dict[str, bytes]     # content id (without angle brackets) -> PNG
    problems: int                # kinds of problem found; 0 for an "all good" letter

    @property
    def analysis_id(self) -> str:
        return f"{self.period}:{self.user}"


def content_id(name: str, period: str, user: str) -> str:
    """A Content-ID unique to this image of this letter (RFC 2392 wants an addr-spec shape)."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{name}.{period}.{user}")
    return f"{safe}@turingwatch"


def render_view(view: LetterView, config: Config) -> RenderedLetter:
    override = config.letters.templates_dir
    env = environment(expand_path(override) if override else None)
    cids = {c.name: content_id(c.name, view.period_id, view.user) for c in view.charts}
    try:
        html = env.get_template(HTML_TEMPLATE).render(v=view, cids=cids)
        text = env.get_template(TEXT_TEMPLATE).render(v=view)
    except jinja2.TemplateError as exc:
        where = f" ({exc.filename}:{exc.lineno})" if isinstance(
            exc, jinja2.TemplateSyntaxError) else ""
        raise LetterError(f"letter template error{where}: {exc}") from exc
    images = {cids[c.name]: c.png for c in view.charts}
    return RenderedLetter(view.user, view.period_id, view.subject, html, text.strip() + "\n",
                          images, view.problem_count)


def render_letter(
    report: UserReport, rules: Mapping[str, RuleInfo], config: Config,
    standing: Standing | None = None,
) -> RenderedLetter:
    """One user's letter for one period, from the analysis report and the rules' texts;
    ``standing`` (from :func:`watcher.letters.waste.standings` over the period's reports)
    adds the user's rank when ``letters.show_rank`` is on."""
    problems = bool(report.findings)
    charts = letter_charts(report.jobs) if config.letters.charts and problems else []
    return render_view(build_view(report, rules, config, charts, standing), config)
