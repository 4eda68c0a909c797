"""Render one user's letter: charts, HTML (styles inlined by css-inline) and plain text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import css_inline
import jinja2

from watcher.analysis.model import RuleInfo, UserReport
from watcher.config import Config, expand_path
from watcher.letters.charts import letter_charts
from watcher.letters.view import LetterError, LetterView, build_view
from watcher.templating import environment

HTML_TEMPLATE, TEXT_TEMPLATE = "letter.html.j2", "letter.txt.j2"


@dataclass(frozen=True)
class RenderedLetter:
    """A letter ready to be bundled or mailed."""

    user: str
    period: str
    subject: str
    html: str                    # styles inlined; charts referenced as cid:<content id>
    text: str
    images: dict[str, bytes]     # content id (without angle brackets) -> PNG
    problems: int                # kinds of problem found; 0 for an "all good" letter

    @property
    def analysis_id(self) -> str:
        return f"{self.period}:{self.user}"


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    # @media rules (dark mode, narrow screens) cannot be inlined: they stay in <style>.
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


_CHARSET = '<meta charset="utf-8">'


def _charset_first(html: str) -> str:
    """Put the charset back at the top of <head>: the inliner puts the kept @media rules
    first, and browsers look for the charset in the first 1024 bytes only (the web site
    serves these files as they are)."""
    if _CHARSET not in html or "<head>" not in html:
        return html
    return html.replace(_CHARSET, "", 1).replace("<head>", "<head>" + _CHARSET, 1)


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
    try:
        html = _inliner().inline(html)
    except css_inline.InlineError as exc:
        raise LetterError(f"cannot inline the letter's styles: {exc}") from exc
    html = _charset_first(html)
    images = {cids[c.name]: c.png for c in view.charts}
    return RenderedLetter(view.user, view.period_id, view.subject, html, text.strip() + "\n",
                          images, view.problem_count)


def render_letter(
    report: UserReport, rules: Mapping[str, RuleInfo], config: Config
) -> RenderedLetter:
    """One user's letter for one period, from the analysis report and the rules' texts."""
    charts = letter_charts(report.jobs) if config.letters.charts else []
    return render_view(build_view(report, rules, config, charts), config)
